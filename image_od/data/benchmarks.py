"""Image benchmark datasets read from local files (nothing is downloaded).

Every loader returns a :class:`LabelledImages` with the train and test splits kept apart (the transductive
protocol merges them later): ``images`` uint8 (N,H,W) for grey or (N,H,W,3) RGB, ``labels`` int64 (N,).
"""
from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from image_od.data.user_images import IMAGE_EXT, ImageReadError, decode_image, fit_size, match_kind
from image_od.files.safe_io import unpickle_plain

FASHION_MNIST_ROOT = Path("/usr/share/datasets/fashion-mnist")


class ImageDatasetError(ValueError):
    """Missing or malformed dataset files; the message says what is expected where."""


@dataclass
class LabelledImages:
    name: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    classes: list[str]

    @property
    def colour(self) -> bool:
        """RGB images (N,H,W,3) rather than grey ones (N,H,W): the profiles' ``colour`` settings apply."""
        return self.train_images.ndim == 4

    def merged(self) -> tuple[np.ndarray, np.ndarray]:
        """Train and test together, as the paper's protocol uses them."""
        return (np.concatenate([self.train_images, self.test_images]),
                np.concatenate([self.train_labels, self.test_labels]))


def _find(root: Path, stems: list[str], what: str) -> Path:
    for stem in stems:
        for candidate in (root / stem, root / f"{stem}.gz"):
            if candidate.is_file():
                return candidate
    raise ImageDatasetError(f"{what}: none of {stems} (optionally .gz) in {root}")


def read_idx(path: str | Path) -> np.ndarray:
    """An IDX file (MNIST format), gzipped or not."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (EOFError, zlib.error, gzip.BadGzipFile) as err:
        raise ImageDatasetError(f"{path}: truncated or corrupt file ({err})") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 8:
        raise ImageDatasetError(f"{path} is not an unsigned-byte IDX file")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise ImageDatasetError(f"{path}: header says {shape} but holds {body.size} bytes")
    return body.reshape(shape)


def load_mnist_like(root: str | Path, name: str, classes: list[str]) -> LabelledImages:
    """MNIST or Fashion-MNIST from the four standard IDX files in ``root``."""
    root = Path(root)
    if not root.is_dir():
        raise ImageDatasetError(f"{name}: folder {root} not found; put train/t10k-images-idx3-ubyte(.gz) and "
                                f"-labels-idx1-ubyte(.gz) there")
    parts = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        parts[split] = (read_idx(_find(root, [f"{prefix}-images-idx3-ubyte", f"{prefix}-images.idx3-ubyte"], name)),
                        read_idx(_find(root, [f"{prefix}-labels-idx1-ubyte", f"{prefix}-labels.idx1-ubyte"], name))
                        .astype(np.int64))
    return LabelledImages(name, *parts["train"], *parts["test"], classes)


MNIST_CLASSES = [str(i) for i in range(10)]
FASHION_CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
                   "ankle-boot"]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _unpickle(path: Path) -> dict:
    """One CIFAR python batch, read with an unpickler that builds plain data and numpy arrays only."""
    data = unpickle_plain(path)
    if not isinstance(data, dict):
        raise ImageDatasetError(f"{path}: expected a CIFAR batch (a dict), got {type(data).__name__}")
    return data


def load_cifar_pickles(root: str | Path, coarse: bool = True) -> LabelledImages:
    """CIFAR-10 (``data_batch_1..5``, ``test_batch``, ``batches.meta``) or CIFAR-100 (``train``, ``test``,
    ``meta``; with ``coarse`` the 20 superclasses, as the paper uses) from the official python pickles."""
    root = Path(root)
    if (root / "data_batch_1").is_file():
        train = [_unpickle(root / f"data_batch_{i}") for i in range(1, 6)]
        test = [_unpickle(root / "test_batch")]
        key, classes = "labels", _unpickle(root / "batches.meta")["label_names"]
        name = "cifar10"
    elif (root / "train").is_file() and (root / "test").is_file():
        train, test = [_unpickle(root / "train")], [_unpickle(root / "test")]
        meta = _unpickle(root / "meta")
        key = "coarse_labels" if coarse else "fine_labels"
        classes = meta["coarse_label_names" if coarse else "fine_label_names"]
        name = "cifar100"
    else:
        raise ImageDatasetError(f"no CIFAR python batches in {root}: expected data_batch_1..5 + test_batch "
                                f"(cifar-10-batches-py) or train + test + meta (cifar-100-python)")

    def stack(batches):
        x = np.concatenate([b["data"] for b in batches]).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        return np.ascontiguousarray(x), np.concatenate([b[key] for b in batches]).astype(np.int64)

    return LabelledImages(name, *stack(train), *stack(test), list(classes))


def load_class_folders(root: str | Path, name: str = "images", grey: bool | None = False,
                       size: int = 32) -> LabelledImages:
    """``root/{train,test}/<class>/*.png|jpg|...`` (e.g. the shared CIFAR-10 copy); classes in sorted folder order.

    Images come out at ``size`` x ``size`` (``images.fit_size``: smaller ones zero-padded, larger ones resized).
    ``grey=None`` decides from the files: grey when every file is single-channel, else RGB (grey files repeated
    over the three channels)."""
    root = Path(root)
    classes = sorted(d.name for d in (root / "train").iterdir() if d.is_dir()) if (root / "train").is_dir() else []
    if not classes:
        raise ImageDatasetError(f"{name}: expected class folders in {root / 'train'} and {root / 'test'}")
    decoded = {}
    for split in ("train", "test"):
        images, labels = [], []
        for label, cls in enumerate(classes):
            folder = root / split / cls
            if not folder.is_dir():
                raise ImageDatasetError(f"{name}: class folder {folder} is missing")
            files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXT and not p.name.startswith("."))
            try:
                images += [fit_size(decode_image(f, grey), size) for f in files]
            except ImageReadError as err:
                raise ImageDatasetError(str(err)) from None
            labels += [label] * len(files)
        if not images:
            raise ImageDatasetError(f"{name}: no image files ({sorted(IMAGE_EXT)}) in the class folders of "
                                    f"{root / split}")
        decoded[split] = images, np.array(labels, np.int64)
    if grey is None and any(img.ndim == 3 for images, _ in decoded.values() for img in images):
        decoded = {k: ([match_kind(img, grey=False) for img in images], y) for k, (images, y) in decoded.items()}
    splits = {k: (np.stack(images), y) for k, (images, y) in decoded.items()}
    return LabelledImages(name, *splits["train"], *splits["test"], classes)


def load_svhn(root: str | Path) -> LabelledImages:
    """SVHN from the official ``train_32x32.mat`` and ``test_32x32.mat`` (label 10 stands for digit 0)."""
    import scipy.io

    root = Path(root)
    parts = {}
    for split in ("train", "test"):
        path = root / f"{split}_32x32.mat"
        if not path.is_file():
            raise ImageDatasetError(f"svhn: {path} not found; put train_32x32.mat and test_32x32.mat in {root}")
        mat = scipy.io.loadmat(str(path))
        y = mat["y"].ravel().astype(np.int64)
        parts[split] = (np.ascontiguousarray(mat["X"].transpose(3, 0, 1, 2)), np.where(y == 10, 0, y))
    return LabelledImages("svhn", *parts["train"], *parts["test"], [str(i) for i in range(10)])


def load_digits() -> LabelledImages:
    """scikit-learn's 8x8 digits (bundled with scikit-learn), 0..16 scaled to 0..255; split 2/3 vs 1/3."""
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    x = np.round(d.images * (255 / 16)).astype(np.uint8)
    cut = len(x) * 2 // 3
    return LabelledImages("digits", x[:cut], d.target[:cut], x[cut:], d.target[cut:], [str(i) for i in range(10)])


DATASETS = ("mnist", "fashion-mnist", "cifar10", "cifar100", "svhn", "digits", "folders")


def load_dataset(name: str, root: str | Path | None = None) -> LabelledImages:
    """Load a benchmark by name: one of ``DATASETS``. ``folders`` is any labelled set laid out as
    ``root/{train,test}/<class>/<image files>`` (grey or colour from the files, brought to 32x32), named after
    ``root``."""
    if name == "fashion-mnist":
        return load_mnist_like(root or FASHION_MNIST_ROOT, name, FASHION_CLASSES)
    if name == "digits":
        return load_digits()
    if root is None:
        raise ImageDatasetError(f"{name}: give the folder that holds its files")
    if name == "mnist":
        return load_mnist_like(root, name, MNIST_CLASSES)
    if name in ("cifar10", "cifar100"):
        root = Path(root)
        return load_class_folders(root, name) if (root / "train").is_dir() else load_cifar_pickles(root)
    if name == "svhn":
        return load_svhn(root)
    if name == "folders":
        return load_class_folders(root, Path(root).resolve().name, grey=None)
    raise ImageDatasetError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
