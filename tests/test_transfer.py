"""ADIB / ADRA (image_od.related.transfer) and their pre-training command (tools/pretrain_classifier.py).

No ImageNet weights exist here (nothing is downloaded): the tests write their own ResNet26 weights files, with
small widths and one block per stage so that every test runs in seconds on one core.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from image_od.data.benchmarks import load_digits
from image_od.data.protocol import to_model_input
from image_od.engine.training import seed_everything, step_decay
from image_od.files.safe_io import UnsafeFileError
from image_od.related.transfer import (
    ADIB,
    ADRA,
    ResNet26,
    crop_flip,
    l2sp_penalty,
    load_pretrained,
    match_channels,
    oe_bce,
    penalty_parameters,
    pretrain_resnet26,
    sidecar_path,
)
from tests.tools import load_tool

W, B = (8, 16, 32), 1  # test network: widths and blocks per stage
FAST = {"widths": W, "blocks": B, "precision": "fp32", "device": "cpu"}


def _tool():
    return load_tool("pretrain_classifier")


def _noise(n: int, seed: int, amplitude: float = 0.1, channels: int = 1) -> np.ndarray:
    return (np.random.RandomState(seed).randn(n, channels, 32, 32) * amplitude - 0.5).astype(np.float32)


def _stripes(n: int, seed: int, channels: int = 1) -> np.ndarray:
    """High-contrast vertical stripes of random period and phase (the 'anomalous' kind)."""
    rng = np.random.RandomState(seed)
    cols = np.arange(32)
    out = np.empty((n, channels, 32, 32), np.float32)
    for i in range(n):
        period, phase = rng.randint(2, 6), rng.randint(0, 6)
        out[i] = np.where(((cols + phase) // period) % 2 == 0, 0.9, -0.9)[None, None, :]
    return out


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """A ResNet26 (widths W, B blocks) classification state_dict with a 10-way head, written by the test."""
    torch.manual_seed(1)
    net = ResNet26(10, W, B)
    for m in net.modules():  # non-trivial BN statistics, as a trained file would have
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.weight.data.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("theta0") / "theta0.pt"
    torch.save(net.state_dict(), path)
    return path


# --- the network ----------------------------------------------------------------------------------------------

def test_resnet26_has_the_official_layout_and_sizes():
    net, ada = ResNet26(1), ResNet26(1, adapters=True)
    convs = net.conv3x3_weights()
    assert len(convs) == 25 and sum(p.numel() for p in convs) == 5_826_240  # the spec's count (stem + 24)
    keys = set(ada.state_dict())
    assert {"pre_conv.weight", "pre_ra.weight", "pre_bn.running_var", "layer3.3.conv2.weight",
            "end_bn_relu.0.weight", "linears.weight", "linears.bias"} <= keys
    for i in (1, 2, 3):
        for j in range(4):
            assert {f"layer{i}.{j}.ra1.weight", f"layer{i}.{j}.ra2.weight"} <= keys
    adapters = [p for k, p in ada.named_parameters() if k.startswith("pre_ra") or ".ra" in k]
    assert sum(p.numel() for p in adapters) == 647_360  # 1/9 of the 3x3 weights
    bn = [p for m in ada.modules() if isinstance(m, torch.nn.BatchNorm2d) for p in m.parameters()]
    assert sum(p.numel() for p in bn) == 7_808
    assert not any(isinstance(m, torch.nn.Conv2d) and m.kernel_size == (1, 1) for m in net.modules())
    assert ResNet26(1, (4, 8, 16), 1).eval()(torch.zeros(2, 3, 32, 32)).shape == (2, 1)


def test_downsampling_shortcut_is_avgpool_with_zero_channels():
    torch.manual_seed(0)
    block = ResNet26(1, (4, 8, 8), 1).layer2[0].eval()
    torch.nn.init.zeros_(block.bn2.weight)
    torch.nn.init.zeros_(block.bn2.bias)  # residual branch = 0: the output is relu(shortcut)
    x = torch.randn(2, 4, 8, 8)
    expected = F.relu(torch.cat([F.avg_pool2d(x, 2), torch.zeros(2, 4, 4, 4)], 1))
    torch.testing.assert_close(block(x), expected)


def test_adapters_sum_before_bn():
    torch.manual_seed(0)
    block = ResNet26(1, (4, 4, 4), 1, adapters=True).layer1[0].eval()
    x = torch.randn(2, 4, 8, 8)
    y = F.relu(block.bn1(block.conv1(x) + block.ra1(x)))
    z = block.bn2(block.conv2(y) + block.ra2(y))
    torch.testing.assert_close(block(x), F.relu(z + x))


# --- losses, penalty, schedule, augmentation --------------------------------------------------------------------

def test_oe_bce_targets_zero_for_normal_one_for_exposure():
    logits = torch.tensor([-2.0, 0.5, 1.5, -0.3, 3.0])
    sig = torch.sigmoid(logits)
    direct = -(torch.log(1 - sig[0]) + torch.log(1 - sig[1]) + torch.log(sig[2]) + torch.log(sig[3])
               + torch.log(sig[4])) / 5
    torch.testing.assert_close(oe_bce(logits, 2), direct)
    torch.testing.assert_close(oe_bce(logits[:, None], 5), -torch.log(1 - sig).mean())  # all normal


def test_l2sp_penalty_against_direct_formula():
    g = torch.Generator().manual_seed(0)
    theta0 = [torch.randn(3, 4, generator=g), torch.randn(5, generator=g)]
    theta = [(t + torch.randn(t.shape, generator=g)).requires_grad_() for t in theta0]
    diff2 = sum(float(((a.detach() - b) ** 2).sum()) for a, b in zip(theta, theta0))
    unsquared = l2sp_penalty(theta, theta0, 1e-2)
    assert math.isclose(float(unsquared.detach()), 1e-2 * math.sqrt(diff2), rel_tol=1e-6)
    squared = float(l2sp_penalty(theta, theta0, 1e-2, squared=True).detach())
    assert math.isclose(squared, 1e-2 * diff2, rel_tol=1e-6)
    unsquared.backward()
    for a, b in zip(theta, theta0):  # d/dtheta alpha ||theta - theta0|| = alpha (theta - theta0) / ||.||
        torch.testing.assert_close(a.grad, 1e-2 * (a - b).detach() / math.sqrt(diff2))
    at_theta0 = [t.clone().requires_grad_() for t in theta0]
    value = l2sp_penalty(at_theta0, theta0, 1e-2)
    value.backward()
    assert float(value.detach()) == 0 and all(torch.equal(t.grad, torch.zeros_like(t)) for t in at_theta0)


def test_penalty_scopes():
    net = ResNet26(1, W, B, adapters=True)
    assert penalty_parameters(net, "conv3x3") == net.conv3x3_weights()
    names = {id(p): k for k, p in net.named_parameters()}
    backbone = [names[id(p)] for p in penalty_parameters(net, "backbone")]
    assert "pre_bn.weight" in backbone and "layer1.0.conv1.weight" in backbone
    assert not any(k.startswith(("linears", "pre_ra")) or ".ra" in k for k in backbone)
    with pytest.raises(ValueError, match="penalty_scope"):
        penalty_parameters(net, "all")


def test_step_decay_at_60_and_80_percent():
    assert [step_decay(t, 10) for t in range(10)] == pytest.approx([1] * 6 + [0.1] * 2 + [0.01] * 2)
    steps = 79  # the code's one-vs-rest CIFAR-10 epoch: MultiStepLR([60, 80]) stepped after each of 100 epochs
    factors = [step_decay(t, 100 * steps) for t in range(100 * steps)]
    for epoch in range(100):
        expected = 1.0 if epoch < 60 else 0.1 if epoch < 80 else 0.01
        assert factors[epoch * steps:(epoch + 1) * steps] == pytest.approx([expected] * steps)


def test_fit_follows_the_schedule_and_batches_half_and_half(weights, monkeypatch):
    from image_od.related import transfer

    seen = []
    original = transfer.oe_bce

    def spy(logits, n_normal):
        seen.append((len(logits.reshape(-1)), n_normal))
        return original(logits, n_normal)

    monkeypatch.setattr(transfer, "oe_bce", spy)
    model = ADIB(weights=str(weights), epochs=5, batch_size=16, exposure_batch_size=16, **FAST)
    model.fit(_noise(64, 0), exposure=_stripes(40, 1))
    assert model.lr_history_ == pytest.approx([0.1] * 12 + [0.01] * 4 + [0.001] * 4)  # 4 steps x 5 epochs
    assert seen == [(32, 16)] * 20 and len(model.history_) == 5
    seen.clear()
    ADIB(weights=str(weights), epochs=1, batch_size=24, exposure_batch_size=16, **FAST).fit(
        _noise(64, 0), exposure=_stripes(40, 1))
    assert seen == [(40, 24), (40, 24), (32, 16)]  # the last normal batch is smaller (the code's drop_last=False)


def test_crop_flip():
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).view(2, 1, 6, 6)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(crop_flip(x, 0, False, g), x)
    out = crop_flip(x, 2, False, torch.Generator().manual_seed(3))
    padded = F.pad(x, (2, 2, 2, 2), value=-1.0)
    for i in range(2):  # every output is one 6x6 window of the padded image
        assert any(torch.equal(out[i], padded[i, :, r:r + 6, c:c + 6]) for r in range(5) for c in range(5))
    flipped = crop_flip(x.repeat(50, 1, 1, 1), 0, True, torch.Generator().manual_seed(1))
    is_flipped = [torch.equal(f, x[i % 2].flip(2)) for i, f in enumerate(flipped)]
    assert 10 < sum(is_flipped) < 90
    assert all(f or torch.equal(flipped[i], x[i % 2]) for i, f in enumerate(is_flipped))
    again = crop_flip(x.repeat(50, 1, 1, 1), 0, True, torch.Generator().manual_seed(1))
    assert torch.equal(flipped, again)


def test_match_channels():
    grey = torch.rand(2, 1, 4, 4)
    assert torch.equal(match_channels(grey, 3), grey.expand(-1, 3, -1, -1))
    colour = torch.rand(2, 3, 4, 4)
    luma = 0.299 * colour[:, :1] + 0.587 * colour[:, 1:2] + 0.114 * colour[:, 2:]
    torch.testing.assert_close(match_channels(colour, 1), luma)


# --- weights files ----------------------------------------------------------------------------------------------

def test_load_weights_written_by_the_test(weights):
    state = torch.load(weights, weights_only=True)
    net = ResNet26(1, W, B)
    head = net.linears.weight.detach().clone()
    info = load_pretrained(net, weights)
    assert sorted(info["not_loaded"]) == ["linears.bias", "linears.weight"]
    for k, v in net.state_dict().items():
        if not k.startswith("linears"):
            assert torch.equal(v, state[k]), k
    assert torch.equal(net.linears.weight, head)  # the 10-way head of the file is dropped
    ada = ResNet26(1, W, B, adapters=True)
    missing = load_pretrained(ada, weights)["not_loaded"]
    assert {k for k in missing if not k.startswith("linears")} == {k for k in ada.state_dict()
                                                                   if k.startswith("pre_ra") or ".ra" in k}
    wrapped = weights.with_name("wrapped.pt")  # a checkpoint dict with a DataParallel prefix loads too
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, wrapped)
    load_pretrained(ResNet26(1, W, B), wrapped)


def test_weights_errors_name_the_file(weights, tmp_path):
    x, oe = _noise(8, 0), _stripes(8, 1)
    missing = tmp_path / "nowhere.pt"
    with pytest.raises(FileNotFoundError, match="nowhere.pt.*pretrain_classifier"):
        ADIB(weights=str(missing), epochs=1, **FAST).fit(x, exposure=oe)
    for content in (b"", b"not a pytorch file" * 8):
        bad = tmp_path / "garbage.pt"
        bad.write_bytes(content)
        with pytest.raises(ValueError, match="garbage.pt"):
            ADIB(weights=str(bad), epochs=1, **FAST).fit(x, exposure=oe)
    with pytest.raises(ValueError, match=r"theta0.pt.*shape mismatches.*widths=\(8, 16, 32\), blocks=1"):
        ADIB(weights=str(weights), epochs=1, widths=(16, 32, 64), blocks=1, device="cpu").fit(x, exposure=oe)
    with pytest.raises(ValueError, match=r"theta0.pt.*missing keys"):
        ADIB(weights=str(weights), epochs=1, widths=W, blocks=2, device="cpu").fit(x, exposure=oe)
    adapted = tmp_path / "adapted.pt"
    torch.save(ResNet26(1, W, B, adapters=True).state_dict(), adapted)
    with pytest.raises(ValueError, match=r"adapted.pt.*unexpected keys"):
        ADIB(weights=str(adapted), epochs=1, **FAST).fit(x, exposure=oe)
    listed = tmp_path / "list.pt"
    torch.save([1, 2], listed)
    with pytest.raises(ValueError, match="list.pt: not a ResNet26 state_dict"):
        load_pretrained(ResNet26(1, W, B), listed)


class _Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickled_code_in_weights_is_refused_and_not_run(weights, tmp_path):
    evil, marker = tmp_path / "evil.pt", tmp_path / "ran"
    torch.save({"state_dict": torch.load(weights, weights_only=True), "x": _Payload(marker)}, evil)
    with pytest.raises(UnsafeFileError, match="evil.pt"):
        load_pretrained(ResNet26(1, W, B), evil)
    assert not marker.exists()


def test_settings_errors():
    x = _noise(8, 0)
    with pytest.raises(ValueError, match="exposure=X_oe"):
        ADIB(epochs=1, **FAST).fit(x)
    with pytest.raises(ValueError, match="ADRA needs pre-trained weights"):
        ADRA(epochs=1, **FAST).fit(x, exposure=x)
    with pytest.raises(ValueError, match="alpha"):
        ADIB(alpha=-1, **FAST).fit(x, exposure=x)
    with pytest.raises(ValueError, match="input_norm"):
        ADIB(input_norm="imagenet", **FAST).fit(x, exposure=x)
    with pytest.raises(ValueError, match="expected images"):
        ADIB(epochs=1, **FAST).fit(x[:, 0], exposure=x)


# --- ADRA freezes, ADIB regularises -------------------------------------------------------------------------------

def test_adra_freezes_3x3_convs_and_trains_adapters_bn_head(weights):
    state = torch.load(weights, weights_only=True)
    model = ADRA(weights=str(weights), epochs=2, batch_size=16, exposure_batch_size=16, **FAST)
    seed_everything(model.seed)
    initial = {k: v.clone() for k, v in model._network().state_dict().items()}  # fit builds the same network
    model.fit(_noise(32, 0), exposure=_stripes(32, 1))
    net = model.net_
    after = net.state_dict()
    conv3 = {k for k, m in net.named_modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)}
    for k in conv3:
        assert torch.equal(after[f"{k}.weight"], state[f"{k}.weight"]), k  # bit-identical to theta0
        assert not net.get_submodule(k).weight.requires_grad
    trained = [k for k, p in net.named_parameters() if p.requires_grad]
    assert trained and all(k.startswith(("pre_ra", "linears")) or ".ra" in k or "bn" in k for k in trained)
    adapters = [k for k in trained if k.startswith("pre_ra") or ".ra" in k]
    assert len(adapters) == 1 + 2 * 3 * B
    for k in trained:  # every adapter, BN affine parameter and the head moved
        assert not torch.equal(after[k], initial[k]), k
    assert not torch.equal(after["pre_bn.running_mean"], state["pre_bn.running_mean"])  # statistics update
    n_bn = sum(p.numel() for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d) for p in m.parameters())
    n_ada = sum(net.get_parameter(k).numel() for k in adapters)
    assert model.n_trainable_ == n_ada + n_bn + W[2] + 1 and model.drift_ == 0.0


def test_adib_trains_everything_and_the_penalty_pulls_toward_theta0(weights):
    x, oe = _noise(32, 0), _stripes(32, 1)
    kw = dict(weights=str(weights), epochs=3, batch_size=16, exposure_batch_size=16, **FAST)
    free = ADIB(alpha=0.0, **kw).fit(x, exposure=oe)
    assert free.n_trainable_ == sum(p.numel() for p in free.net_.parameters()) and free.drift_ > 0
    assert ADIB(alpha=1.0, **kw).fit(x, exposure=oe).drift_ < 0.5 * free.drift_
    assert ADIB(alpha=1.0, squared=True, **kw).fit(x, exposure=oe).drift_ < free.drift_
    scratch = ADIB(weights=None, **{k: v for k, v in kw.items() if k != "weights"}).fit(x, exposure=oe)
    assert scratch.pretraining_ is None and np.isfinite(scratch.decision_scores_).all()


# --- fit / score ---------------------------------------------------------------------------------------------------

def test_fit_score_direction_and_determinism(weights):
    x, oe = _noise(64, 0), _stripes(64, 1)
    test = np.concatenate([_noise(20, 2), _stripes(6, 3)])
    truth = np.r_[np.zeros(20), np.ones(6)]
    make = lambda seed: ADIB(weights=str(weights), epochs=3, batch_size=32, exposure_batch_size=32, seed=seed,
                             **FAST)
    model = make(0).fit(x, exposure=oe)
    scores = model.decision_function(test)
    assert scores.shape == (26,) and scores.dtype == np.float64 and ((scores >= 0) & (scores <= 1)).all()
    assert roc_auc_score(truth, scores) > 0.9
    np.testing.assert_array_equal(model.decision_scores_, model.decision_function(x))
    np.testing.assert_array_equal(make(0).fit(x, exposure=oe).decision_function(test), scores)
    assert not np.array_equal(make(1).fit(x, exposure=oe).decision_function(test), scores)
    logit = ADIB(weights=str(weights), epochs=3, batch_size=32, exposure_batch_size=32, score="logit", **FAST)
    np.testing.assert_allclose(1 / (1 + np.exp(-logit.fit(x, exposure=oe).decision_function(test))), scores)
    assert set(model.get_params()) >= {"weights", "alpha", "squared", "epochs", "seed", "device", "progress"}


def test_colour_exposure_for_grey_data(weights):
    model = ADIB(weights=str(weights), epochs=1, **FAST).fit(_noise(16, 0), exposure=_stripes(16, 1, channels=3))
    assert model.decision_function(_noise(4, 5, channels=3)).shape == (4,)


# --- pre-training command -----------------------------------------------------------------------------------------

def test_pretraining_tool_writes_a_loadable_file(tmp_path):
    tool = _tool()
    out = tmp_path / "sub" / "theta0.pt"
    info = tool.main(["--dataset", "digits", "--classes", "5,6,7", "--exclude-class", "7", "--epochs", "1",
                      "--widths", "8,16,32", "--blocks", "1", "--precision", "fp32", "--device", "cpu",
                      "--out", str(out)])
    assert out.is_file() and not out.with_name("theta0.pt.tmp").exists()
    side = json.loads(sidecar_path(out).read_text())
    assert side == json.loads(json.dumps(info))
    assert side["classes"] == ["5", "6"] and side["excluded_classes"] == ["7"] and side["split"] == "train"
    assert side["architecture"]["n_classes"] == 2 and side["n_images"] == sum(side["images_per_class"].values())
    state = torch.load(out, weights_only=True)
    assert state["linears.weight"].shape == (2, 32)
    model = ADIB(weights=str(out), epochs=1, **FAST).fit(_noise(16, 0), exposure=_stripes(16, 1))
    assert model.pretraining_["classes"] == ["5", "6"]
    with pytest.raises(SystemExit, match="at least 2 classes"):
        tool.main(["--dataset", "digits", "--classes", "5,6", "--exclude-class", "6", "--out", str(out)])
    with pytest.raises(SystemExit, match="unknown class 'eleven'"):
        tool.main(["--dataset", "digits", "--exclude-class", "eleven", "--out", str(out)])


def test_rotation_task_labels_each_image_by_its_rotation():
    images = np.arange(2 * 2 * 2, dtype=np.float32).reshape(2, 1, 2, 2)  # two 2x2 grey images
    rotated, labels = _tool().rotation_task(images)
    assert rotated.shape == (8, 1, 2, 2) and labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    np.testing.assert_array_equal(rotated[:2], images)
    np.testing.assert_array_equal(rotated[2, 0], [[1, 3], [0, 2]])  # [[0, 1], [2, 3]] by 90 degrees anticlockwise
    np.testing.assert_array_equal(rotated[4, 0], [[3, 2], [1, 0]])
    colour = np.random.RandomState(0).rand(3, 3, 4, 4).astype(np.float32)
    np.testing.assert_array_equal(_tool().rotation_task(colour)[0][3:6, 1], np.rot90(colour[:, 1], 1, (1, 2)))


def test_pretraining_tool_rotation_task_needs_no_labels(tmp_path):
    out = tmp_path / "rot.pt"
    info = _tool().main(["--dataset", "digits", "--task", "rotation", "--classes", "3", "--max-per-class", "20",
                         "--epochs", "1", "--widths", "8,16,32", "--blocks", "1", "--precision", "fp32",
                         "--device", "cpu", "--out", str(out)])
    assert info["task"] == "rotation" and info["architecture"]["n_classes"] == 4
    assert info["n_images"] == 20 and info["n_examples"] == 80 and info["classes"] == ["3"]
    assert torch.load(out, weights_only=True)["linears.weight"].shape == (4, 32)


def test_pretrain_resnet26_learns(tmp_path):
    d = load_digits()
    keep = np.isin(d.train_labels, [0, 1])
    net, stats = pretrain_resnet26(to_model_input(d.train_images[keep]), d.train_labels[keep], epochs=10,
                                   widths=W, blocks=B, precision="fp32", device="cpu")
    assert stats["train_accuracy"] > 0.9 and len(stats["history"]) == 10 and net.linears.out_features == 2


# --- a small real run ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def digits_theta0(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """theta0 = classification of digits 5-9 (train split, 602 images, 8 epochs; train accuracy 0.74); the same
    images are the OE corpus."""
    d = load_digits()
    source = np.isin(d.train_labels, [5, 6, 7, 8, 9])
    x = to_model_input(d.train_images[source])
    net, _ = pretrain_resnet26(x, d.train_labels[source] - 5, epochs=8, batch_size=32, widths=W, blocks=B,
                               precision="fp32", device="cpu")
    path = tmp_path_factory.mktemp("digits") / "theta0.pt"
    torch.save(net.state_dict(), path)
    return path, x


def _digits_auroc(detector, path: Path, oe: np.ndarray, normal: int = 2) -> float:
    """One-class protocol on digits, honest by construction: theta0 and the OE corpus come from digits 5-9 (train
    split); normal = one digit of 0-4 (train split); test = the test split's digits 0-4, whose anomalies are in
    neither theta0's classes nor the OE."""
    d = load_digits()
    x = to_model_input(d.train_images[d.train_labels == normal])
    test = d.test_labels < 5
    model = detector(weights=str(path), epochs=20, **FAST).fit(x, exposure=oe)
    return roc_auc_score(d.test_labels[test] != normal, model.decision_function(to_model_input(d.test_images[test])))


@pytest.mark.slow
def test_real_digits_run_adib(digits_theta0):
    auc = _digits_auroc(ADIB, *digits_theta0)
    print(f"ADIB digits AUROC {auc:.4f}")
    assert auc > 0.93, auc  # measured 0.9996 (fp32, one core)


@pytest.mark.slow
def test_real_digits_run_adra(digits_theta0):
    auc = _digits_auroc(ADRA, *digits_theta0)
    print(f"ADRA digits AUROC {auc:.4f}")
    assert auc > 0.85, auc  # measured 0.9214 (fp32, one core)
