"""Shallow detectors on raw pixels: the simplest honest baselines every deep method must beat."""
from __future__ import annotations

import numpy as np

from image_od.detector import OutlierDetector


class PixelIsolationForest(OutlierDetector):
    """scikit-learn's Isolation Forest on the flattened pixels; score = -decision_function (higher = anomalous)."""

    def __init__(self, *, n_estimators: int = 100, contamination: float | str = "auto", seed: int = 0,
                 device: str = "auto", progress: bool = False):
        self.n_estimators, self.contamination = n_estimators, contamination
        self.seed, self.device, self.progress = seed, device, progress  # device, progress: the shared API; unused

    def fit(self, X: np.ndarray) -> "PixelIsolationForest":
        from sklearn.ensemble import IsolationForest

        self.forest_ = IsolationForest(n_estimators=self.n_estimators, contamination=self.contamination,
                                       random_state=self.seed).fit(np.asarray(X).reshape(len(X), -1))
        self.decision_scores_ = self.decision_function(X)
        return self

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        self._check_fitted("forest_")
        return -self.forest_.decision_function(np.asarray(X).reshape(len(X), -1))
