"""Image benchmark groundwork: dataset loaders, the transductive protocol, the paper's metrics."""
import gzip
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io
from sklearn.metrics import auc

from image_od.data.benchmarks import ImageDatasetError, load_dataset, read_idx
from image_od.data.protocol import contaminated_set, to_model_input
from image_od.metrics import mean_std_by_seed, od_metrics, summarise

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def _write_idx(path: Path, array: np.ndarray, gz: bool) -> None:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)


def test_idx_files_plain_and_gzipped(tmp_path):
    x = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    for gz in (False, True):
        for prefix in ("train", "t10k"):
            _write_idx(tmp_path / (f"{prefix}-images-idx3-ubyte" + (".gz" if gz else "")), x, gz)
            _write_idx(tmp_path / (f"{prefix}-labels-idx1-ubyte" + (".gz" if gz else "")), np.array([3, 1]), gz)
        d = load_dataset("mnist", tmp_path)
        np.testing.assert_array_equal(d.train_images, x)
        assert d.test_labels.tolist() == [3, 1]
        for f in tmp_path.iterdir():
            f.unlink()
    with pytest.raises(ImageDatasetError, match="train-images-idx3-ubyte"):
        load_dataset("mnist", tmp_path)


def test_real_fashion_mnist():
    d = load_dataset("fashion-mnist")
    x, y = d.merged()
    assert x.shape == (70000, 28, 28) and np.bincount(y).tolist() == [7000] * 10
    assert read_idx(Path("/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz")).shape == (10000,)


def test_cifar_pickles_and_class_folders(tmp_path):
    rng = np.random.default_rng(0)
    batch = lambda n: {"data": rng.integers(0, 255, (n, 3072), dtype=np.uint8), "labels": list(range(n))}
    for i in range(1, 6):
        (tmp_path / f"data_batch_{i}").write_bytes(pickle.dumps(batch(2)))
    (tmp_path / "test_batch").write_bytes(pickle.dumps(batch(3)))
    (tmp_path / "batches.meta").write_bytes(pickle.dumps({"label_names": ["a", "b", "c"]}))
    d = load_dataset("cifar10", tmp_path)
    assert d.train_images.shape == (10, 32, 32, 3) and d.test_labels.tolist() == [0, 1, 2]
    first = np.frombuffer(pickle.loads((tmp_path / "data_batch_1").read_bytes())["data"][0].tobytes(), np.uint8)
    np.testing.assert_array_equal(d.train_images[0, :, :, 0].ravel(), first[:1024])  # red plane first
    folders = tmp_path / "folders"
    for split in ("train", "test"):
        for cls in ("cat", "dog"):
            (folders / split / cls).mkdir(parents=True)
            cv2.imwrite(str(folders / split / cls / "0.png"), np.full((32, 32, 3), 7, np.uint8))
    f = load_dataset("cifar10", folders)
    assert f.classes == ["cat", "dog"] and f.train_images.shape == (2, 32, 32, 3)


def test_cifar100_uses_superclasses(tmp_path):
    data = {"data": np.zeros((4, 3072), np.uint8), "coarse_labels": [0, 19, 5, 5], "fine_labels": [0, 99, 3, 4]}
    for split in ("train", "test"):
        (tmp_path / split).write_bytes(pickle.dumps(data))
    (tmp_path / "meta").write_bytes(pickle.dumps({"coarse_label_names": [str(i) for i in range(20)],
                                                  "fine_label_names": [str(i) for i in range(100)]}))
    d = load_dataset("cifar100", tmp_path)
    assert d.train_labels.tolist() == [0, 19, 5, 5] and len(d.classes) == 20


def test_svhn_mat_and_digits(tmp_path):
    x = np.zeros((32, 32, 3, 3), np.uint8)
    for split in ("train", "test"):
        scipy.io.savemat(str(tmp_path / f"{split}_32x32.mat"), {"X": x, "y": np.array([[10], [1], [9]])})
    d = load_dataset("svhn", tmp_path)
    assert d.train_images.shape == (3, 32, 32, 3) and d.train_labels.tolist() == [0, 1, 9]
    g = load_dataset("digits")
    assert g.merged()[0].shape == (1797, 8, 8) and g.merged()[0].max() == 255


def _write_class_folders(root: Path, images: dict[tuple[str, str], list[np.ndarray]], ext: str = ".png") -> None:
    for (split, cls), arrays in images.items():
        (root / split / cls).mkdir(parents=True)
        for i, a in enumerate(arrays):
            cv2.imwrite(str(root / split / cls / f"{i}{ext}"), a)


def test_any_labelled_folder_set_is_brought_to_32x32_and_keeps_grey_or_colour(tmp_path):
    rng = np.random.default_rng(0)
    grey = lambda h, w: rng.integers(0, 255, (h, w), dtype=np.uint8)
    _write_class_folders(tmp_path / "shapes", {("train", "a"): [grey(28, 28), grey(64, 48)],
                                               ("train", "b"): [grey(32, 32)], ("test", "a"): [grey(20, 20)],
                                               ("test", "b"): [grey(40, 40)]})
    d = load_dataset("folders", tmp_path / "shapes")
    assert d.name == "shapes" and d.classes == ["a", "b"] and not d.colour
    assert d.train_images.shape == (3, 32, 32) and d.test_images.shape == (2, 32, 32)
    assert d.train_labels.tolist() == [0, 0, 1] and d.test_labels.tolist() == [0, 1]
    small = cv2.imread(str(tmp_path / "shapes" / "train" / "a" / "0.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(d.train_images[0, 2:30, 2:30], small)  # 28x28: zero-padded around the centre
    assert d.train_images[0, :2].max() == 0
    # one colour file makes the set colour, grey files repeated over the channels
    cv2.imwrite(str(tmp_path / "shapes" / "test" / "b" / "1.jpg"), rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
    c = load_dataset("folders", tmp_path / "shapes")
    assert c.colour and c.train_images.shape == (3, 32, 32, 3) and c.test_images.shape == (3, 32, 32, 3)
    np.testing.assert_array_equal(c.train_images[2, ..., 0], c.train_images[2, ..., 2])


@pytest.mark.parametrize("damage", ["missing test class", "truncated", "no images"])
def test_folder_set_errors_name_the_folder_or_file(tmp_path, damage):
    root = tmp_path / "set"
    img = np.zeros((8, 8, 3), np.uint8)
    _write_class_folders(root, {("train", "a"): [img], ("train", "b"): [img], ("test", "a"): [img],
                                ("test", "b"): [img]}, ext=".jpg")
    if damage == "missing test class":
        (root / "test" / "b" / "0.jpg").unlink()
        (root / "test" / "b").rmdir()
        expected = "class folder .*test/b is missing"
    elif damage == "truncated":
        bad = root / "train" / "b" / "0.jpg"
        bad.write_bytes(bad.read_bytes()[:-40])
        expected = "truncated JPEG.*train/b/0.jpg"
    else:
        for f in (root / "test").rglob("*.jpg"):
            f.unlink()
        expected = "no image files .* of .*test"
    with pytest.raises(ImageDatasetError, match=expected):
        load_dataset("folders", root)


@pytest.mark.needs("data/cifar10")
def test_real_cifar10_folder_class():
    root = SHARED / "cifar10" / "test" / "airplane"
    assert len(list(root.glob("*.jpg"))) == 1000


def test_protocol_counts_and_seed():
    labels = np.repeat(np.arange(10), 100)
    images = np.arange(1000, dtype=np.uint8)[:, None, None].repeat(2, 1).repeat(2, 2)
    s = contaminated_set(images, labels, inlier_class=3, ratio=0.2, seed=0)
    assert len(s.is_outlier) == 100 + int(100 * 0.2 / 0.8) and s.is_outlier.sum() == 25
    again = contaminated_set(images, labels, inlier_class=3, ratio=0.2, seed=0)
    np.testing.assert_array_equal(s.images, again.images)
    assert not np.array_equal(s.images, contaminated_set(images, labels, 3, 0.2, seed=1).images)
    capped = contaminated_set(images, labels, inlier_class=3, ratio=0.5, seed=0, max_size=120)
    assert len(capped.is_outlier) == 120
    with pytest.raises(ValueError):
        contaminated_set(images, labels, 3, 1.0, 0)


def test_model_input_pads_then_scales():
    x = to_model_input(np.full((1, 28, 28), 255, np.uint8))
    assert x.shape == (1, 1, 32, 32) and x[0, 0, 0, 0] == -1.0 and x[0, 0, 2, 2] == 1.0
    assert to_model_input(np.zeros((2, 32, 32, 3), np.uint8)).shape == (2, 3, 32, 32)


def test_metrics_by_hand():
    y = np.array([0, 0, 1, 1])
    s = np.array([0.1, 0.6, 0.4, 0.9])
    m = od_metrics(y, s)
    assert m["auroc"] == pytest.approx(0.75)
    # outliers positive, ranked 0.9 (out), 0.6 (in), 0.4 (out), 0.1 (in): PR points as sklearn builds them
    assert m["aupr_out"] == pytest.approx(auc([0, 0.5, 0.5, 1.0, 1.0], [1, 1, 0.5, 2 / 3, 0.5]))
    assert m["ap_out"] == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert 0 < m["aupr_in"] <= 1


def test_summary_is_mean_over_classes_std_over_seeds():
    assert summarise(np.array([[0.8, 1.0], [0.6, 0.8]])) == pytest.approx((0.8, 0.1))
    rows = [{"seed": s, "class": c, "auroc": v} for (s, c), v in
            {(0, 0): 0.8, (0, 1): 1.0, (1, 0): 0.6, (1, 1): 0.8}.items()]
    assert mean_std_by_seed(rows, "auroc") == pytest.approx((0.8, 0.1))
    with pytest.raises(ValueError, match="missing"):
        mean_std_by_seed(rows[:3], "auroc")
