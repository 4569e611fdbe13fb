"""PyOD's models as detectors of the shared API, for the independent cross-checks of ``image-od bench``
(``pyod-*`` methods). PyOD is a benchmark extra, not a dependency: ``pip install pyod``."""
from __future__ import annotations

import importlib
import inspect
from typing import Any

import numpy as np

from image_od.detector import OutlierDetector

MODELS = {"iforest": ("pyod.models.iforest", "IForest"), "lof": ("pyod.models.lof", "LOF"),
          "auto-encoder": ("pyod.models.auto_encoder", "AutoEncoder"),
          "deep-svdd": ("pyod.models.deep_svdd", "DeepSVDD"), "mo-gaal": ("pyod.models.mo_gaal", "MO_GAAL")}


class PyODDetector(OutlierDetector):
    """PyOD model ``model`` on the flattened pixels, with PyOD keyword ``settings``; ``random_state`` is the seed
    where the model takes one. Scores: PyOD's ``decision_scores_`` (higher = more anomalous), except MO_GAAL's, which
    are the discriminator's D(x) = P(real): we report 1 - D(x), the GAAL paper's outlier score (PyOD issue #119)."""

    needs = ("the PyOD package (a benchmark extra)",)

    def __init__(self, *, model: str = "iforest", settings: dict[str, Any] | None = None, seed: int = 0,
                 device: str = "auto", progress: bool = False):
        self.model, self.settings, self.seed, self.device, self.progress = model, settings, seed, device, progress

    def _make(self, n_features: int) -> Any:
        if self.model not in MODELS:
            raise ValueError(f"unknown PyOD model {self.model!r}; expected one of {sorted(MODELS)}")
        module, name = MODELS[self.model]
        try:
            cls = getattr(importlib.import_module(module), name)
        except ImportError:
            raise ImportError("the pyod-* methods need PyOD, a benchmark extra: pip install pyod") from None
        accepted = inspect.signature(cls).parameters
        run = {"random_state": self.seed, "n_features": n_features, "verbose": 0}
        return cls(**{**{k: v for k, v in run.items() if k in accepted}, **(self.settings or {})})

    def fit(self, X: np.ndarray) -> "PyODDetector":
        flat = np.asarray(X, np.float64).reshape(len(X), -1)
        np.random.seed(self.seed)  # MO_GAAL takes no seed
        self.model_ = self._make(flat.shape[1]).fit(flat)
        self.decision_scores_ = self._oriented(self.model_.decision_scores_)
        return self

    def _oriented(self, scores: np.ndarray) -> np.ndarray:
        return 1.0 - scores if self.model == "mo-gaal" else np.asarray(scores, float)

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """PyOD's ``decision_function`` of ``X`` as new data (the fitted set's own scores, where LOF excludes the
        self-match, are ``decision_scores_``)."""
        self._check_fitted("model_")
        return self._oriented(self.model_.decision_function(np.asarray(X, np.float64).reshape(len(X), -1)))
