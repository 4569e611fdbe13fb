"""Score refinement (supplement Algorithms 1-3) and the multi-label variant of discriminative E3Outlier, on a
small real set (scikit-learn digits, inliers '0'), with tiny networks."""
import numpy as np
import pytest
import torch

from image_od.data.benchmarks import load_digits
from image_od.data.protocol import contaminated_set, to_model_input
from image_od.e3outlier.discriminative import DiscriminativeE3Outlier
from image_od.e3outlier.refinement import weights_from_scores
from image_od.metrics import od_metrics

SETTINGS = dict(operations="RA", backbone="wrn-10-1", epochs=1, ops_per_image=2, score_ops=12, batch_size=64,
                optimizer="adam", precision="fp32", progress=False)


@pytest.fixture(scope="module")
def digits():
    images, labels = load_digits().merged()
    s = contaminated_set(images, labels, inlier_class=0, ratio=0.1, seed=0)
    return to_model_input(s.images), s.is_outlier


def test_weights_from_scores_are_min_max_normalised():
    w = weights_from_scores(np.array([-3.0, -1.0, -2.0]))
    assert np.allclose(w, [0.0, 1.0, 0.5]) and w.dtype == np.float32
    assert np.allclose(weights_from_scores(np.full(4, -2.0)), 1.0)  # no spread: equal weights


@pytest.mark.parametrize("rule", ["random", pytest.param("confident", marks=pytest.mark.slow)])
def test_ensemble_equals_merged_members_and_averages_softmax(digits, rule):
    x = digits[0][:64]  # an identity of the code, not a quality check: a few images suffice
    settings = {**SETTINGS, "score_ops_rule": rule, "score_ops_images": 16}
    ensemble = DiscriminativeE3Outlier(ensemble=2, seed=3, **settings).fit(x)
    members = [DiscriminativeE3Outlier(seed=s, **settings).fit(x) for s in (3, 4)]
    merged = DiscriminativeE3Outlier.merged(members, x)
    assert len(ensemble.nets_) == len(merged.nets_) == 2
    assert torch.equal(ensemble.score_labels_, merged.score_labels_)
    a, b = ({k: -v for k, v in m.scores(x, ["gtp", "mp", "ne"]).items()} for m in (ensemble, merged))  # normality
    assert np.allclose(a["ne"], b["ne"], atol=1e-5) and np.allclose(a["gtp"], b["gtp"], atol=1e-5)
    # the ensemble's max probability is that of the averaged softmax, never above the members' mean max-prob
    single = [-m.scores(x, ["mp"])["mp"] for m in members]
    assert np.all(a["mp"] <= (single[0] + single[1]) / 2 + 1e-5)


def test_reboot_reweighting_retrains_from_the_same_start_with_the_first_scores(digits):
    x = digits[0][:64]
    rrw = DiscriminativeE3Outlier(reweight="reboot", seed=1, **SETTINGS).fit(x)
    base = DiscriminativeE3Outlier(seed=1, **SETTINGS).fit(x)
    base_ne = -base.scores(x, ["ne"])["ne"]
    w = weights_from_scores(base_ne)
    assert np.allclose(rrw.sample_weight_, w)
    again = DiscriminativeE3Outlier(seed=1, **SETTINGS).fit(x, sample_weight=w)
    rrw_ne = -rrw.scores(x, ["ne"])["ne"]
    assert np.allclose(rrw_ne, -again.scores(x, ["ne"])["ne"], atol=1e-5)
    assert not np.allclose(rrw_ne, base_ne)


def test_online_reweighting_updates_weights_every_epoch(digits):
    x, y = digits
    model = DiscriminativeE3Outlier(reweight="online", **{**SETTINGS, "epochs": 2})
    calls = []
    original = model.scores
    model.scores = lambda X, names: calls.append(len(X)) or original(X, names)
    model.fit(x)
    assert calls == [len(x), len(x), len(x)] and len(model.nets_) == 1  # each epoch's weights, then decision_scores_
    assert od_metrics(y, model.decision_function(x))["auroc"] > 0.6
    with pytest.raises(ValueError, match="online"):
        DiscriminativeE3Outlier(reweight="online", ensemble=2).fit(x[:4])


@pytest.mark.slow  # a variant (e3outlier-ml): 3 epochs of a 48-output network
def test_multi_label_variant_has_five_heads_and_finds_outliers(digits):
    x, y = digits
    model = DiscriminativeE3Outlier(multi_label=True, **{**SETTINGS, "epochs": 3, "ops_per_image": 4})
    model.fit(x)
    assert model.heads_ == (4, 9, 9, 2, 24)
    assert model.nets_[0].fc.out_features == 48
    scores = model.scores(x, ["ne"])
    assert np.all(scores["ne"] >= 0)
    # measured 0.87 (seeds 1, 2: 0.92, 0.84); an untrained net ranks at random
    assert od_metrics(y, scores["ne"])["auroc"] > 0.75


def test_score_subset_is_fixed_by_the_seed(digits):
    x, _ = digits
    a = DiscriminativeE3Outlier(seed=0, **SETTINGS).fit(x[:64])
    assert len(a.score_labels_) == 12 and a.score_labels_.unique().numel() == 12
    b = DiscriminativeE3Outlier(**{**SETTINGS, "score_ops": None}).fit(x[:64])
    assert torch.equal(b.score_labels_, torch.arange(72))


def test_confident_rule_scores_with_the_best_recognised_operations(digits):
    x, _ = digits
    model = DiscriminativeE3Outlier(**{**SETTINGS, "score_ops": 6, "score_ops_rule": "confident"}).fit(x[:64])
    chosen = model.score_labels_.clone()
    per_op = []
    for op in range(72):  # the probability of the applied operation, one operation at a time
        model.score_labels_ = torch.tensor([op])
        per_op.append(-model.scores(x[:64], ["gtp"])["gtp"])
    confidence = [gtp.mean() for gtp in per_op]
    assert torch.equal(chosen, torch.tensor(confidence).topk(6).indices.sort().values)
    assert not torch.equal(chosen, DiscriminativeE3Outlier(**{**SETTINGS, "score_ops": 6}).fit(x[:64]).score_labels_)
    # measured on fewer images: those the seed draws
    model.score_ops_images = 16
    rows = torch.randperm(64, generator=torch.Generator().manual_seed(0))[:16].sort().values.numpy()
    fewer = [gtp[rows].mean() for gtp in per_op]
    assert torch.equal(model.score_subset(x[:64]), torch.tensor(fewer).topk(6).indices.sort().values)
    with pytest.raises(ValueError, match="score_ops_rule"):
        DiscriminativeE3Outlier(score_ops_rule="best").fit(x[:4])
    with pytest.raises(ValueError, match="score_ops_images"):
        DiscriminativeE3Outlier(score_ops_images=1).fit(x[:4])
    with pytest.raises(RuntimeError, match="not fitted"):
        DiscriminativeE3Outlier().operation_confidence(x[:4])
