"""Pre-trained ResNet50 features + LOF / Isolation Forest (image_od.baselines.pretrained).

No pre-trained weights exist on the test machine (and nothing is downloaded), so the tests write a seeded random
ResNet50 state_dict themselves; they check the loading rules, the preprocessing, the agreement with
scikit-learn, the score sign, determinism and a small digits run (with random weights: see its comment).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from sklearn.ensemble import IsolationForest
from sklearn.metrics import roc_auc_score
from sklearn.neighbors import LocalOutlierFactor

from image_od.baselines.pretrained import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PretrainedFeatureOD,
    load_resnet50,
    to_imagenet_input,
)
from image_od.data.samples import ArrayData
from image_od.files.safe_io import UnsafeFileError
from tests.image_sets import digits_set

SIZE = 64  # image_size in the tests (224 by default), to keep them fast


@pytest.fixture(scope="module")
def state_dict() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return torchvision.models.resnet50(weights=None).state_dict()


@pytest.fixture(scope="module")
def weights(tmp_path_factory, state_dict) -> str:
    path = tmp_path_factory.mktemp("weights") / "w.pt"
    torch.save(state_dict, path)
    return str(path)


def _images(n: int = 32, seed: int = 0, channels: int = 1) -> np.ndarray:
    return np.random.RandomState(seed).uniform(-1, 1, (n, channels, 32, 32)).astype(np.float32)


def _od(weights: str, **kw) -> PretrainedFeatureOD:
    return PretrainedFeatureOD(weights=weights, image_size=SIZE, **kw)


# --- weights files ---------------------------------------------------------------------------------------------

def test_weights_none_asks_for_a_local_file():
    with pytest.raises(ValueError, match=r"pretrained\.weights=PATH"):
        PretrainedFeatureOD().fit(_images(4))


def test_missing_file_is_named(tmp_path):
    path = tmp_path / "nowhere.pt"
    with pytest.raises(FileNotFoundError, match="nowhere.pt"):
        PretrainedFeatureOD(weights=str(path)).fit(_images(4))


@pytest.mark.parametrize("content", [b"", b"not a pytorch file at all" * 10])
def test_garbage_file_is_named(tmp_path, content):
    path = tmp_path / "garbage.pt"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="garbage.pt"):
        load_resnet50(path)


class _Payload:
    """Unpickling this would create ``marker`` (code run while reading a file)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickled_code_is_refused_and_not_run(tmp_path, state_dict):
    path, marker = tmp_path / "evil.pt", tmp_path / "ran"
    torch.save({"state_dict": state_dict, "extra": _Payload(marker)}, path)
    with pytest.raises(UnsafeFileError, match="evil.pt"):
        load_resnet50(path)
    assert not marker.exists()


def test_not_a_state_dict(tmp_path):
    path = tmp_path / "plain.pt"
    torch.save({"epoch": 3, "lr": 0.1}, path)
    with pytest.raises(ValueError, match="plain.pt: not a ResNet50 state_dict"):
        load_resnet50(path)


def test_wrong_shapes_and_keys_are_named(tmp_path, state_dict):
    path = tmp_path / "shape.pt"
    torch.save({**state_dict, "conv1.weight": torch.zeros(64, 1, 7, 7)}, path)
    with pytest.raises(ValueError, match=r"shape.pt.*conv1\.weight \(64, 1, 7, 7\) \(expected \(64, 3, 7, 7\)\)"):
        load_resnet50(path)
    path = tmp_path / "resnet18.pt"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    with pytest.raises(ValueError, match="resnet18.pt.*missing keys"):
        load_resnet50(path)


def test_checkpoint_layouts_load_the_same_weights(tmp_path, state_dict, weights):
    reference = load_resnet50(weights).state_dict()
    no_counters = {k: v for k, v in state_dict.items() if not k.endswith("num_batches_tracked")}
    layouts = {
        "wrapped": {"state_dict": state_dict, "epoch": 90},
        "ddp": {"model": {f"module.{k}": v for k, v in state_dict.items()}},
        "head10": {**state_dict, "fc.weight": torch.zeros(10, 2048), "fc.bias": torch.zeros(10)},
        "no_counters": no_counters,
    }
    for name, obj in layouts.items():
        torch.save(obj, tmp_path / f"{name}.pt")
        loaded = load_resnet50(tmp_path / f"{name}.pt").state_dict()
        assert not any(k.startswith("fc.") for k in loaded)
        for k, v in reference.items():
            if not k.endswith("num_batches_tracked"):
                assert torch.equal(loaded[k], v), (name, k)


# --- features --------------------------------------------------------------------------------------------------

def test_imagenet_input_hand_made():
    x = torch.tensor([-1.0, 1.0]).view(2, 1, 1, 1).expand(2, 1, 2, 2)
    y = to_imagenet_input(x, 4)
    assert y.shape == (2, 3, 4, 4)
    mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
    torch.testing.assert_close(y[0, :, 0, 0], (0 - mean) / std)
    torch.testing.assert_close(y[1, :, 3, 3], (1 - mean) / std)


def test_features_shape_and_grey_replication(weights):
    grey = _images(6)
    od = _od(weights, n_neighbors=3).fit(grey)
    f_grey = od.features(grey)
    assert f_grey.shape == (6, 2048) and np.isfinite(f_grey).all() and (f_grey >= 0).all()  # after a ReLU
    np.testing.assert_allclose(od.features(np.repeat(grey, 3, 1)), f_grey, rtol=1e-5, atol=1e-6)
    assert od.features(ArrayData({"image": grey})).shape == (6, 2048)


def test_bad_settings_and_inputs(weights):
    with pytest.raises(ValueError, match="unknown detector"):
        _od(weights, detector="ocsvm").fit(_images(4))
    with pytest.raises(ValueError, match=r"expected images \(N, C, H, W\) with C in"):
        _od(weights).fit(np.zeros((4, 32, 32), np.float32))
    with pytest.raises(RuntimeError, match="not fitted"):
        _od(weights).decision_function(_images(4))


# --- scores ----------------------------------------------------------------------------------------------------

def test_lof_matches_sklearn_transductive_and_novelty(weights):
    x, new = _images(40), _images(8, seed=1)
    od = _od(weights, detector="lof", n_neighbors=5).fit(x)
    feats = od.features(x)
    expected = -LocalOutlierFactor(n_neighbors=5, novelty=False).fit(feats).negative_outlier_factor_
    np.testing.assert_array_equal(od.decision_scores_, expected)
    np.testing.assert_array_equal(od.fit_score(x), expected)  # the fitted set: transductive scores
    # decision_function always scores new data: on the fitted samples each is its own neighbour (distance 0), so
    # the values differ from the transductive ones
    novelty_on_fitted = -LocalOutlierFactor(n_neighbors=5, novelty=True).fit(feats).score_samples(feats)
    np.testing.assert_allclose(od.decision_function(x), novelty_on_fitted, rtol=1e-12)
    assert not np.allclose(novelty_on_fitted, expected)
    novelty = -LocalOutlierFactor(n_neighbors=5, novelty=True).fit(feats).score_samples(od.features(new))
    np.testing.assert_allclose(od.decision_function(new), novelty, rtol=1e-12)


def test_iforest_matches_sklearn(weights):
    x, new = _images(40), _images(8, seed=1)
    od = _od(weights, detector="if", n_estimators=20, seed=3).fit(x)
    forest = IsolationForest(n_estimators=20, random_state=3).fit(od.features(x))
    np.testing.assert_array_equal(od.decision_scores_, -forest.decision_function(od.features(x)))
    np.testing.assert_allclose(od.decision_function(new), -forest.decision_function(od.features(new)))


@pytest.mark.parametrize("detector", ["lof", "if"])
def test_obvious_outliers_score_higher(weights, detector):
    rng = np.random.RandomState(0)
    yy, xx = np.mgrid[:32, :32] / 31.0
    pattern = np.sin(6 * xx) * np.cos(4 * yy) * 0.5
    inliers = pattern + rng.normal(0, 0.03, (60, 1, 32, 32))
    outliers = rng.uniform(-1, 1, (4, 1, 32, 32))
    x = np.clip(np.concatenate([inliers, outliers]), -1, 1).astype(np.float32)
    scores = _od(weights, detector=detector, n_neighbors=10, n_estimators=50).fit_score(x)
    assert scores[60:].min() > scores[:60].max()


@pytest.mark.parametrize("detector", ["lof", "if"])
def test_determinism(weights, detector):
    x = _images(32)
    a = _od(weights, detector=detector, n_estimators=20, seed=1).fit_score(x)
    b = _od(weights, detector=detector, n_estimators=20, seed=1).fit_score(x)
    np.testing.assert_array_equal(a, b)
    if detector == "if":
        assert not np.array_equal(a, _od(weights, detector=detector, n_estimators=20, seed=2).fit_score(x))


@pytest.mark.parametrize("detector,floor", [
    ("lof", 0.88),  # measured 0.955 (image_size 64; 0.924 at 32)
    ("if", 0.78),  # measured 0.873 (image_size 64; 0.810 at 32)
])
def test_digits_random_resnet50_features(weights, detector, floor):
    # With SEEDED RANDOM (untrained) weights: not the paper's baseline, whose ImageNet weights are unavailable
    # here. Random convolutional features still keep enough of the image for LOF/IF to beat chance on digits;
    # inlier class 1 (class 0 is saturated: 0.999 LOF, 0.993 IF).
    x, is_outlier = digits_set(1)
    scores = _od(weights, detector=detector).fit_score(x)
    assert roc_auc_score(is_outlier, scores) > floor
