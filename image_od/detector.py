"""The one detector API shared by every method, image and video alike.

Conventions (scikit-learn / PyOD style):
- every setting is an ``__init__`` argument, stored unchanged under its own name (``get_params``/``set_params``
  here, once, so that ``sklearn.base.clone`` works);
- ``fit(X)`` learns from unlabeled data, sets ``decision_scores_`` (the scores of the fitted set: the transductive
  scores, with any leave-self-out rule applied there) and returns ``self``;
- ``decision_function(X)`` scores ``X`` as new data, one score per sample, **higher = more anomalous**; there is no
  public score of the other direction.

Methods are transductive in the paper's protocol: the data that is fitted is also the data that is scored,
so ``fit_score(X)`` (``fit(X).decision_scores_``) is offered as the usual entry point.
"""
from __future__ import annotations

import functools
import inspect
import random
from abc import ABC, abstractmethod
from typing import Any, Callable

import numpy as np
import torch

from image_od.data.samples import ArrayData


def image_array(X: Any, what: str = "X", channels: tuple[int, ...] | None = None) -> np.ndarray | torch.Tensor:
    """The one input check of every image detector: the (N, C, H, W) images of ``X`` (an array, a tensor, or an
    ``ArrayData`` with an ``"image"`` array or a single array), non-empty, with C in ``channels`` when given.
    Returns them as given (array or tensor, no copy); each detector converts to what it computes with."""
    if isinstance(X, ArrayData):
        arrays = X.arrays
        if "image" not in arrays and len(arrays) != 1:
            raise ValueError(f"{what}: ArrayData needs an 'image' array, has {sorted(arrays)}")
        X = arrays["image"] if "image" in arrays else next(iter(arrays.values()))
    if not isinstance(X, (np.ndarray, torch.Tensor)):
        X = np.asarray(X, dtype=np.float32)
    if X.ndim != 4 or (channels is not None and X.shape[1] not in channels):
        rule = "" if channels is None else f" with C in {set(channels)}"
        raise ValueError(f"{what}: expected images (N, C, H, W){rule}, got shape {tuple(X.shape)}")
    if len(X) == 0:
        raise ValueError(f"{what}: no images")
    return X


def keeps_global_rngs(fit: Callable) -> Callable:
    """``fit`` run with Python's, NumPy's and torch's global random states saved and restored around it: a detector
    seeds what it draws from its own ``seed`` (``seed_everything``, network initialisation), and the caller's random
    streams come back as they were (no hidden global state)."""
    @functools.wraps(fit)
    def wrapper(self, *args, **kwargs):
        py_state, np_state = random.getstate(), np.random.get_state()
        devices = [torch.cuda.current_device()] if torch.cuda.is_available() and torch.cuda.is_initialized() else []
        with torch.random.fork_rng(devices=devices):
            try:
                return fit(self, *args, **kwargs)
            finally:
                random.setstate(py_state)
                np.random.set_state(np_state)
    wrapper.keeps_global_rngs = True
    return wrapper


MIN_FIT_SAMPLES = 2  # a transductive fit learns what is normal from the samples it scores; batch statistics need 2


def needs_samples(fit: Callable) -> Callable:
    """``fit`` refusing fewer than :data:`MIN_FIT_SAMPLES` samples, with a message that says why."""
    @functools.wraps(fit)
    def wrapper(self, X, *args, **kwargs):
        if len(X) < MIN_FIT_SAMPLES:
            raise ValueError(f"{type(self).__name__}.fit needs at least {MIN_FIT_SAMPLES} samples to learn what is "
                             f"normal, got {len(X)}")
        return fit(self, X, *args, **kwargs)
    return wrapper


class OutlierDetector(ABC):
    """Base class of all detectors; subclasses implement ``fit`` and ``decision_function``. Every subclass's ``fit``
    refuses fewer than two samples (:func:`needs_samples`) and leaves the global random states as it found them
    (:func:`keeps_global_rngs`)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        fit = cls.__dict__.get("fit")
        if fit is not None and not getattr(fit, "keeps_global_rngs", False):
            cls.fit = keeps_global_rngs(needs_samples(fit))

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
        """Fit on ``X`` and return its own scores, ``decision_scores_`` (the transductive protocol)."""
        return np.asarray(self.fit(X).decision_scores_)

    @classmethod
    def _param_names(cls) -> list[str]:
        """The ``__init__`` arguments, each stored unchanged under its own name."""
        kinds = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        return [p.name for p in inspect.signature(cls.__init__).parameters.values()
                if p.name != "self" and p.kind not in kinds]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The ``__init__`` settings as given (scikit-learn's contract, so that ``sklearn.base.clone`` works)."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any) -> "OutlierDetector":
        """Change ``__init__`` settings (scikit-learn's contract); unknown names are an error."""
        unknown = sorted(set(params) - set(self._param_names()))
        if unknown:
            raise ValueError(f"{type(self).__name__} has no setting {', '.join(unknown)}")
        for name, value in params.items():
            setattr(self, name, value)
        return self

    def _check_fitted(self, attribute: str) -> None:
        if not hasattr(self, attribute):
            raise RuntimeError(f"{type(self).__name__} is not fitted yet: call fit(X) first")
