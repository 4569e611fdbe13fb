"""The paper's transductive outlier-detection protocol (E3Outlier Sec. 4.1, reference code facts A.6).

One class is the inliers; ``int(n_in * rho / (1 - rho))`` outliers are drawn uniformly from all other classes;
train and test splits are merged beforehand; sets larger than ``max_size`` are subsampled; one seed fixes every
draw. The same unlabeled set is fitted and scored; labels only serve the evaluation.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class ContaminatedSet:
    images: np.ndarray  # uint8, as loaded
    is_outlier: np.ndarray  # (N,) 0/1, for evaluation only
    inlier_class: int
    ratio: float
    seed: int


def contaminated_set(images: np.ndarray, labels: np.ndarray, inlier_class: int, ratio: float, seed: int,
                     max_size: int = 12000) -> ContaminatedSet:
    """All images of ``inlier_class`` plus the outlier draw, shuffled; capped at ``max_size`` by subsampling."""
    if not 0 <= ratio < 1:
        raise ValueError(f"outlier ratio must be in [0, 1), got {ratio}")
    rng = np.random.RandomState(seed)
    inliers = np.flatnonzero(labels == inlier_class)
    if len(inliers) == 0:
        raise ValueError(f"no image of class {inlier_class}")
    others = np.flatnonzero(labels != inlier_class)
    n_out = int(len(inliers) * ratio / (1 - ratio))
    if n_out > len(others):
        raise ValueError(f"ratio {ratio} needs {n_out} outliers but only {len(others)} images of other classes exist")
    outliers = rng.choice(others, n_out, replace=False)
    index = np.concatenate([inliers, outliers])
    flags = np.concatenate([np.zeros(len(inliers), np.int64), np.ones(n_out, np.int64)])
    if len(index) > max_size:
        keep = rng.choice(len(index), max_size, replace=False)
        index, flags = index[keep], flags[keep]
    order = rng.permutation(len(index))
    return ContaminatedSet(images[index[order]], flags[order], inlier_class, ratio, seed)


def zero_pad(images: np.ndarray, size: int) -> np.ndarray:
    """Centre images (N,H,W[,C]) no larger than size x size on a zero canvas of that size."""
    h, w = images.shape[1:3]
    if h > size or w > size:
        raise ValueError(f"images of {h}x{w} are larger than {size}x{size}")
    top, left = (size - h) // 2, (size - w) // 2
    return np.pad(images, ((0, 0), (top, size - h - top), (left, size - w - left)) + ((0, 0),) * (images.ndim - 3))


def to_model_input(images: np.ndarray, size: int = 32) -> np.ndarray:
    """uint8 images -> float32 (N,C,size,size) in [-1, 1]; smaller images (28x28) are zero-padded first, so the
    padding becomes -1, as in the reference code."""
    x = zero_pad(images, size).astype(np.float32) / 255.0 * 2 - 1
    return x[:, None] if x.ndim == 3 else np.ascontiguousarray(x.transpose(0, 3, 1, 2))


# ------------------------------------------------------------------------------------------------------------------
# Inductive protocols (issue 10): the one-class protocol (CSI, UniCon-HA, ADIB/ADRA) and ELITE's polluted protocol.
# Both keep the dataset's train and test splits apart (``LabelledImages.train_images``/``train_labels`` and
# ``test_images``/``test_labels``): a method is fitted on (part of) the training split and scores the test split.

ELITE_POOL = 5000  # ELITE's unlabelled pool (data_loader.py: n_items)
ELITE_VAL_PER_SIDE = {"grey": 10, "colour": 50}  # labelled normals (= anomalies): 20 on MNIST/FMNIST, 100 on CIFAR-10


@dataclass
class OneClassSet:
    """One-class protocol: train on inliers only, score the whole test split."""

    train_images: np.ndarray  # uint8: the inliers of the training split (seeded order)
    test_images: np.ndarray  # uint8: the test split, in its order (or a seeded subsample of it)
    test_is_outlier: np.ndarray  # (N_test,) int64 0/1, 1 = not the inlier class; for evaluation only
    inlier_class: int
    seed: int


@dataclass
class PollutedSet:
    """ELITE's protocol: a polluted unlabelled pool, a small balanced labelled validation set, the whole test split."""

    train_images: np.ndarray  # uint8: the unlabelled pool, shuffled
    train_is_outlier: np.ndarray  # (n_train,) int64 0/1: hidden, for evaluation only (the pool's own AUROC)
    val_images: np.ndarray  # uint8: the labelled validation set, shuffled
    val_is_outlier: np.ndarray  # (2 * n_val_per_side,) int64 0/1: the only labels a method may use
    test_images: np.ndarray  # uint8: the test split, in its order (or a seeded subsample of it)
    test_is_outlier: np.ndarray  # (N_test,) int64 0/1, for evaluation only
    inlier_class: int
    pollution: float
    seed: int


def _check_split(images: np.ndarray, labels: np.ndarray, what: str) -> None:
    if len(images) != len(labels):
        raise ValueError(f"{what}: {len(images)} images but {len(labels)} labels")


def _test_part(test_images: np.ndarray, test_labels: np.ndarray, inlier_class: int, rng: np.random.RandomState,
               max_test: int | None) -> tuple[np.ndarray, np.ndarray]:
    """The test split with 0/1 outlier flags; with ``max_test``, a seeded subsample of that size (in split order)."""
    index = np.arange(len(test_images))
    if max_test is not None and len(index) > max_test:
        index = np.sort(rng.choice(len(index), max_test, replace=False))
    return test_images[index], (test_labels[index] != inlier_class).astype(np.int64)


def one_class_split(train_images: np.ndarray, train_labels: np.ndarray, test_images: np.ndarray,
                    test_labels: np.ndarray, inlier_class: int, seed: int, *, max_train: int | None = None,
                    max_test: int | None = None) -> OneClassSet:
    """One-class protocol: the training set is the ``inlier_class`` images of the training split only (seeded
    order; ``max_train`` keeps that many); the test set is the whole test split with labels 1 = another class
    (``max_test``: a seeded uniform subsample, for small budgets). Use with a ``LabelledImages`` ``d`` as
    ``one_class_split(d.train_images, d.train_labels, d.test_images, d.test_labels, k, seed)``."""
    _check_split(train_images, train_labels, "training split")
    _check_split(test_images, test_labels, "test split")
    rng = np.random.RandomState(seed)
    inliers = rng.permutation(np.flatnonzero(train_labels == inlier_class))
    if len(inliers) == 0:
        raise ValueError(f"no training image of class {inlier_class}")
    if max_train is not None:
        inliers = inliers[:max_train]
    test_x, test_y = _test_part(test_images, test_labels, inlier_class, rng, max_test)
    return OneClassSet(train_images[inliers], test_x, test_y, inlier_class, seed)


def polluted_split(train_images: np.ndarray, train_labels: np.ndarray, test_images: np.ndarray,
                   test_labels: np.ndarray, inlier_class: int, pollution: float, n_train: int, n_val_per_side: int,
                   seed: int, *, max_test: int | None = None) -> PollutedSet:
    """ELITE's protocol (Zhang et al., KDD 2021, Sec. 5.1; its ``data_loader.py``), from the training split:

    - an unlabelled pool of exactly ``n_train`` images, ``round(n_train * pollution)`` of them anomalies drawn
      uniformly from all other classes, the rest inliers (ELITE: n_train 5,000, pollution r_p 0.1 .. 0.5);
    - a labelled validation set of ``n_val_per_side`` inliers and as many anomalies (other classes), disjoint from
      the pool (ELITE: 10 + 10 on MNIST/FMNIST, 50 + 50 on CIFAR-10; ``ELITE_VAL_PER_SIDE``);
    - the whole test split to score, 1 = anomaly (``max_test``: a seeded uniform subsample).

    Differences from ELITE's code: its 20 labelled images are carved out of the 5,000 (an unlabelled pool of 4,980
    whose anomaly share is slightly below r_p) and its pool anomalies are the first ones in dataset order; here the
    pool has exactly n_train images and the exact share, all draws are seeded and uniform.
    """
    _check_split(train_images, train_labels, "training split")
    _check_split(test_images, test_labels, "test split")
    if not 0 <= pollution < 1:
        raise ValueError(f"pollution must be in [0, 1), got {pollution}")
    if n_train < 1 or n_val_per_side < 0:
        raise ValueError(f"n_train must be positive and n_val_per_side not negative, got {n_train}, {n_val_per_side}")
    rng = np.random.RandomState(seed)
    n_anom = int(round(n_train * pollution))
    n_norm = n_train - n_anom
    inliers = np.flatnonzero(train_labels == inlier_class)
    others = np.flatnonzero(train_labels != inlier_class)
    if n_norm + n_val_per_side > len(inliers):
        raise ValueError(f"{n_norm} pool + {n_val_per_side} validation inliers needed, but class {inlier_class} has "
                         f"{len(inliers)} training images")
    if n_anom + n_val_per_side > len(others):
        raise ValueError(f"{n_anom} pool + {n_val_per_side} validation anomalies needed, but the other classes have "
                         f"{len(others)} training images")
    inliers = rng.choice(inliers, n_norm + n_val_per_side, replace=False)
    others = rng.choice(others, n_anom + n_val_per_side, replace=False)
    pool = np.concatenate([inliers[:n_norm], others[:n_anom]])
    pool_flags = np.concatenate([np.zeros(n_norm, np.int64), np.ones(n_anom, np.int64)])
    val = np.concatenate([inliers[n_norm:], others[n_anom:]])
    val_flags = np.concatenate([np.zeros(n_val_per_side, np.int64), np.ones(n_val_per_side, np.int64)])
    order, val_order = rng.permutation(len(pool)), rng.permutation(len(val))
    test_x, test_y = _test_part(test_images, test_labels, inlier_class, rng, max_test)
    return PollutedSet(train_images[pool[order]], pool_flags[order], train_images[val[val_order]],
                       val_flags[val_order], test_x, test_y, inlier_class, pollution, seed)
