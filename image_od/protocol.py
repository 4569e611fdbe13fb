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
