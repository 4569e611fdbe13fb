"""Image side of the core: the paper's generative operations and the image-od command on real Fashion-MNIST."""
import csv
import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from image_od.operations.generative import flip_grey_rotate, grey, image_tasks
from pipelines.images.cli import main

FMNIST = Path("/usr/share/datasets/fashion-mnist")


def test_operations_exact_on_small_arrays():
    x = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).view(2, 3, 2, 2)
    g = grey(x)
    assert g.shape == x.shape and torch.allclose(g[:, 0], g[:, 2])
    assert torch.allclose(g[0, 0], 0.299 * x[0, 0] + 0.587 * x[0, 1] + 0.114 * x[0, 2])
    one = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    assert flip_grey_rotate(0)({"image": one}).tolist() == [[[[2.0, 1.0], [4.0, 3.0]]]]
    assert flip_grey_rotate(1)({"image": one}).tolist() == [[[[1.0, 3.0], [2.0, 4.0]]]]
    assert [t.name for t in image_tasks()] == ["rot0", "rot90", "rot180", "rot270"]


def _idx(name: str) -> np.ndarray:
    with gzip.open(FMNIST / name) as f:
        data = f.read()
    return np.frombuffer(data, np.uint8, offset=16 if "images" in name else 8)


def _trousers_npy(path) -> np.ndarray:
    """270 Fashion-MNIST trousers and 30 other test images, saved to ``path``; returns the outlier flags."""
    if not FMNIST.is_dir():
        pytest.fail(f"{FMNIST} missing: install the Debian package dataset-fashion-mnist (tools/dev.sh does)")
    images = _idx("t10k-images-idx3-ubyte.gz").reshape(-1, 28, 28)
    labels = _idx("t10k-labels-idx1-ubyte.gz")
    rng = np.random.default_rng(0)
    inliers = rng.choice(np.flatnonzero(labels == 1), 270, replace=False)  # trousers
    outliers = rng.choice(np.flatnonzero(labels != 1), 30, replace=False)
    np.save(path, images[np.r_[inliers, outliers]])
    return np.r_[np.zeros(270), np.ones(30)]


def _scores(run) -> np.ndarray:
    with (run / "scores.csv").open() as f:
        return np.array([float(r["score"]) for r in csv.DictReader(f)])


def test_image_od_scores_fashion_mnist_outliers_higher(tmp_path):
    y = _trousers_npy(tmp_path / "x.npy")
    assert main(["score", "--images", str(tmp_path / "x.npy"), "--out", str(tmp_path / "run"), "--grey",
                 "--epochs", "10", "--batch-size", "32", "--set", "generative.widths=[16,32,64]", "--quiet"]) == 0
    assert roc_auc_score(y, _scores(tmp_path / "run")) > 0.85


@pytest.mark.parametrize("method, settings, floor", [
    ("iforest", [], 0.9),  # measured 0.978
    ("e3outlier", ["discriminative.operations=RA", "discriminative.epochs=2", "discriminative.score_ops=4",
                   "discriminative.precision=fp32"], 0.8),  # measured 0.897
])
def test_image_od_scores_with_any_method_of_its_profile(tmp_path, method, settings, floor):
    y = _trousers_npy(tmp_path / "x.npy")
    sets = [a for s in settings for a in ("--set", s)]
    assert main(["score", "--images", str(tmp_path / "x.npy"), "--out", str(tmp_path / "run"), "--grey", "--method",
                 method, *sets, "--quiet"]) == 0
    assert roc_auc_score(y, _scores(tmp_path / "run")) > floor
    section = {"iforest": "iforest", "e3outlier": "discriminative"}[method]
    recorded = json.loads((tmp_path / "run" / "settings.json").read_text())
    assert recorded["method"] == method and section in recorded


def test_image_od_bad_input(tmp_path, capsys):
    assert main(["score", "--images", str(tmp_path / "none"), "--out", str(tmp_path / "o")]) == 2
    assert "not found" in capsys.readouterr().err


def test_small_images_are_zero_padded_large_ones_resized(tmp_path):
    from image_od.data.user_images import load_images

    np.save(tmp_path / "s.npy", np.full((2, 28, 28), 255, np.uint8))
    small, names = load_images(tmp_path / "s.npy", 32, grey=True)
    assert small.shape == (2, 32, 32) and names == ["s.npy[0]", "s.npy[1]"]
    assert small[0, 0, 0] == 0 and small[0, 2, 2] == 255 and small[0, 29, 29] == 255 and small[0, 30, 30] == 0
    np.save(tmp_path / "l.npy", np.full((1, 64, 48, 3), 9, np.uint8))
    assert load_images(tmp_path / "l.npy", 32)[0].shape == (1, 32, 32, 3)
