"""Small real image sets for the detectors' tests: scikit-learn digits in the transductive protocol."""
from __future__ import annotations

import numpy as np

from image_od.data.benchmarks import load_digits
from image_od.data.protocol import contaminated_set, to_model_input


def digits_set(inlier: int = 0, ratio: float = 0.1, max_size: int | None = 400,
               seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """One digit class plus a share ``ratio`` of the others (about 180 inliers and 20 outliers at the default
    size), as 32x32 model input in [-1, 1], and the outlier flags."""
    images, labels = load_digits().merged()
    data = contaminated_set(images, labels, inlier_class=inlier, ratio=ratio, seed=seed, max_size=max_size)
    return to_model_input(data.images, size=32), data.is_outlier
