"""The one detector API shared by every method, image and video alike.

Conventions (scikit-learn / PyOD style):
- every setting is an ``__init__`` argument, stored unchanged;
- ``fit(X)`` learns from unlabeled data and returns ``self``;
- ``decision_function(X)`` gives one score per sample, **higher = more anomalous**.

Methods are transductive in the paper's protocol: the data that is fitted is also the data that is scored,
so ``fit_score(X)`` is offered as the usual entry point.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np


class OutlierDetector(ABC):
    """Base class of all detectors; subclasses implement ``fit`` and ``decision_function``."""

    # what ``fit`` needs besides the images (weights, a corpus, labels, a package), in words for the user; a
    # detector whose needs depend on its settings makes this a property
    needs: tuple[str, ...] = ()

    @abstractmethod
    def fit(self, X: Any) -> "OutlierDetector":
        """Learn from unlabeled samples ``X``; return ``self``."""

    @abstractmethod
    def decision_function(self, X: Any) -> np.ndarray:
        """One outlier score per sample of ``X``: higher = more anomalous."""

    def fit_score(self, X: Any) -> np.ndarray:
        """Fit on ``X`` and score the same samples (the transductive protocol)."""
        return self.fit(X).decision_function(X)

    def _check_fitted(self, attribute: str) -> None:
        if not hasattr(self, attribute):
            raise RuntimeError(f"{type(self).__name__} is not fitted yet: call fit(X) first")
