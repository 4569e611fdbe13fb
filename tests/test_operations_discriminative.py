"""The discriminative operation set against reference computations with numpy/scipy on HWC images."""
import itertools

import numpy as np
import pytest
import scipy.ndimage
import torch

from image_od.e3outlier.discriminative import DiscriminativeE3Outlier, mc_dropout_normality
from image_od.operations.discriminative import apply_operations, operation_set


def _hwc_reference(img: np.ndarray, op) -> np.ndarray:
    """What the reference code does to one HWC float image."""
    if op.flip:
        img = img[:, ::-1]
    if op.family == "RA":
        img = scipy.ndimage.shift(img, (-op.tx, -op.ty, 0), order=1, mode="reflect")
        return np.rot90(img, op.k)
    if op.family == "IA":
        big = scipy.ndimage.rotate(img, op.angle, reshape=True, order=3, mode="constant", cval=0.0)
        top, left = (big.shape[0] - img.shape[0]) // 2, (big.shape[1] - img.shape[1]) // 2
        return big[top:top + img.shape[0], left:left + img.shape[1]]
    q = [img[r * 16:(r + 1) * 16, c * 16:(c + 1) * 16] for r in range(2) for c in range(2)]
    p = [q[i] for i in op.perm]
    return np.concatenate([np.concatenate(p[:2], 1), np.concatenate(p[2:], 1)], 0)


def test_counts_and_label_order():
    ops = operation_set()
    assert len(ops) == 111 and len(operation_set("RA")) == 72 and len(operation_set("RA+IA")) == 88
    assert [o.family for o in ops] == ["RA"] * 72 + ["IA"] * 16 + ["PR"] * 23
    assert ops[0].family == "RA" and not ops[0].flip and (ops[0].tx, ops[0].ty, ops[0].k) == (0, 0, 0)
    flip, tx, ty, k = True, 2, 1, 3  # label = flip*36 + tx_idx*12 + ty_idx*4 + k
    assert ops[36 * flip + tx * 12 + ty * 4 + k] == operation_set("RA")[36 + 2 * 12 + 1 * 4 + 3]
    assert (ops[36 + 2 * 12 + 4 + 3].tx, ops[36 + 2 * 12 + 4 + 3].ty) == (8, -8)
    assert sorted({o.angle for o in ops[72:88]}) == [30, 60, 120, 150, 210, 240, 300, 330]
    assert ops[88].perm == (0, 1, 3, 2) and (0, 1, 2, 3) not in {o.perm for o in ops[88:]}


def test_every_operation_matches_the_reference_on_a_batch():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (111, 3, 32, 32)).astype(np.float32)
    ops = operation_set()
    out = apply_operations(torch.from_numpy(x), torch.arange(111), ops).numpy()
    for i, op in enumerate(ops):
        ref = _hwc_reference(x[i].transpose(1, 2, 0), op).transpose(2, 0, 1)
        tol = 1e-5 if op.family != "IA" else 1e-4
        assert np.allclose(out[i], ref, atol=tol), (i, op)


def test_exact_pixels_of_a_shift_and_the_mid_grey_corners():
    img = np.arange(32 * 32, dtype=np.float32).reshape(1, 1, 32, 32)
    ops = operation_set()
    down = [i for i, o in enumerate(ops) if o.family == "RA" and (o.tx, o.ty, o.k, o.flip) == (8, 0, 0, False)][0]
    out = apply_operations(torch.from_numpy(img), torch.tensor([down]), ops)[0, 0].numpy()
    assert np.array_equal(out[:24], img[0, 0, 8:])  # content moves up 8 rows
    assert np.array_equal(out[24:], img[0, 0, ::-1][:8])  # the border repeats the edge symmetrically
    ia = [i for i, o in enumerate(ops) if o.family == "IA" and o.angle == 30 and not o.flip][0]
    ones = torch.ones(1, 1, 32, 32)
    rotated = apply_operations(ones, torch.tensor([ia]), ops)[0, 0]
    assert abs(float(rotated[0, 0])) < 0.05 and abs(float(rotated[16, 16]) - 1) < 1e-3  # corner is 0 (mid-grey)


def test_invertible_operations_invert():
    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.uniform(-1, 1, (1, 1, 32, 32)).astype(np.float32))
    ops = operation_set()
    for i, op in enumerate(ops):
        y = apply_operations(x, torch.tensor([i]), ops)
        if op.family == "RA" and op.tx == op.ty == 0:  # flip + rot90 are invertible
            back = torch.rot90(y, -op.k, dims=(2, 3))
            back = torch.flip(back, dims=[3]) if op.flip else back
            assert torch.equal(back, x)
        if op.family == "PR":  # a permutation of quadrants is undone by its inverse
            inverse = tuple(int(j) for j in np.argsort(op.perm))
            j = [k for k, o in enumerate(ops) if o.family == "PR" and o.perm == inverse]
            if j:
                assert torch.equal(apply_operations(y, torch.tensor(j), ops), x)
    assert len(list(itertools.permutations(range(4)))) - 1 == 23


def test_multi_labels_identify_every_operation():
    from image_od.operations.discriminative import MULTI_LABEL_HEADS, multi_labels

    ops = operation_set()
    labels, sizes = multi_labels(ops)
    assert labels.shape == (111, len(MULTI_LABEL_HEADS)) and sizes == (4, 9, 9, 2, 24)
    assert labels[0].tolist() == [0, 0, 0, 0, 0]  # identity: nothing applied
    assert (labels < torch.tensor(sizes)).all() and (labels >= 0).all()
    assert len({tuple(r) for r in labels.tolist()}) == 111  # the 5 labels together name the operation
    ra, ia, pr = labels[:72], labels[72:88], labels[88:]
    assert (ra[:, 2] == 0).all() and (ra[:, 4] == 0).all() and (ia[:, 2] > 0).all() and (pr[:, 4] > 0).all()
    assert ia[:, 3].tolist() == [0] * 8 + [1] * 8 and (pr[:, [0, 1, 3]] == 0).all()
    assert ra[36 + 2 * 12 + 1 * 4 + 3].tolist() == [3, 2 * 3 + 1, 0, 1, 0]


def test_mixed_batch_gather_matches_per_operation_application():
    """The vectorised gather (RA, PR) and the grouped IA path give what each operation gives alone."""
    from image_od.operations.discriminative import APPLY

    ops = operation_set()
    x = torch.randn(300, 3, 32, 32)
    labels = torch.randint(0, 111, (300,), generator=torch.Generator().manual_seed(0))
    out = apply_operations(x, labels, ops)
    for i in range(0, 300, 7):
        assert torch.allclose(out[i], APPLY[ops[labels[i]].family](x[i:i + 1], ops[labels[i]])[0], atol=1e-6)


def test_wrn_shapes_and_depth_rule():
    import pytest

    from image_od.networks.backbones import WideResNet

    logits, features = WideResNet(3, 111, depth=10, width=4)(torch.zeros(2, 3, 32, 32))
    assert logits.shape == (2, 111) and features.shape == (2, 256)
    with pytest.raises(ValueError):
        WideResNet(1, 4, depth=12)


# AUROC floors of the short run below, measured 2026-11-24 in fp32 (AVX512 and AVX2 kernels alike): GTP 0.971,
# MP 0.961, NE 0.942, MCD 0.960, SSD+IF 0.943-0.959; with seeds 1 and 2 every score stayed above 0.919.
FLOORS = {"gtp": 0.85, "mp": 0.85, "ne": 0.85, "mcd": 0.85, "ssd_if": 0.85}


def test_discriminative_e3outlier_short_run_on_fashion_mnist():
    """A short fp32 run on 113 real images (trousers + 10 % other classes; the 72 regular affine operations, each
    image 8 times per epoch, 2 epochs, batch 32; 8 scored operations): every score, negated by
    ``decision_function``, ranks the outliers higher (each score's direction). bf16: tests/test_precision.py."""
    from sklearn.metrics import roc_auc_score

    from image_od.data.protocol import contaminated_set, to_model_input
    from image_od.e3outlier.discriminative import SCORES, DiscriminativeE3Outlier
    from tests.test_image_od import _idx

    images = _idx("t10k-images-idx3-ubyte.gz").reshape(-1, 28, 28)
    labels = _idx("t10k-labels-idx1-ubyte.gz").astype(int)
    pick = np.random.default_rng(0).choice(len(images), 1000, replace=False)
    s = contaminated_set(images[pick], labels[pick], inlier_class=1, ratio=0.1, seed=0)
    x = to_model_input(s.images)
    model = DiscriminativeE3Outlier(operations="RA", backbone="wrn-10-1", epochs=2, ops_per_image=8, score_ops=8,
                                    batch_size=32, optimizer="adam", precision="fp32", dropout=0.05, mc_passes=2,
                                    progress=False)
    assert model.fit(x) is model
    scores = model.scores(x, model.available_scores)  # higher = more anomalous, every rule
    assert set(scores) == set(SCORES) and np.all(scores["ne"] >= 0)  # minus a negative entropy
    assert np.all(-scores["mcd"] <= -scores["mp"] + 0.2)  # a mean minus a spread, on the max probability
    model.score = "mcd"  # decision_function computes only the chosen rule
    assert np.allclose(model.decision_function(x), scores["mcd"])
    assert np.array_equal(model.scores(x, ["ne"])["ne"], scores["ne"])
    for score in SCORES:
        assert roc_auc_score(s.is_outlier, scores[score]) > FLOORS[score], score
    import pytest

    with pytest.raises(ValueError, match="dropout"):
        DiscriminativeE3Outlier(score="mcd").fit(x[:4])


def test_mc_dropout_normality_is_eq10_mean_minus_variance():
    passes = torch.tensor([[0.9, 0.5], [0.7, 0.5], [0.8, 0.2]])  # 3 passes, 2 samples
    mean = np.array([0.8, 0.4])
    var = np.array([0.01, 0.03])  # unbiased: sum of squared deviations / (3 - 1)
    np.testing.assert_allclose(mc_dropout_normality(passes).numpy(), mean - var, rtol=1e-5)
    np.testing.assert_allclose(mc_dropout_normality(passes, "std").numpy(), mean - np.sqrt(var), rtol=1e-5)
    with pytest.raises(ValueError, match="mc_spread"):
        DiscriminativeE3Outlier(score="mcd", dropout=0.05, mc_spread="iqr").fit(np.zeros((2, 1, 32, 32), np.float32))
