"""Two-stage baselines: pre-trained ResNet50 features + LOF or Isolation Forest (E3Outlier supplement Sec. 5,
competing method (9): "the outputs of penultimate layer of pre-trained ResNet50 model are extracted as features,
and they are used to train a LoF or IF").

Stage 1: torchvision's ResNet50 with weights from a LOCAL file the user gives (nothing is ever downloaded); the
2048-d globally average-pooled penultimate activations, in eval mode and without gradients. Stage 2: scikit-learn's
``LocalOutlierFactor`` (``detector="lof"``) or ``IsolationForest`` (``detector="if"``) on those features.

Choices the paper does not state (ours):
- input: X in [-1, 1] -> [0, 1]; grey images are replicated to 3 channels; bilinear resize from 32x32 to
  ``image_size`` (224, ImageNet's size); ImageNet mean/std normalisation; features are not standardised;
- LOF and IF use scikit-learn's defaults (``n_neighbors=20``, ``n_estimators=100``, ``contamination="auto"``;
  the contamination only shifts sklearn's offset, never the order of the scores, so AUROC does not depend on it);
- the weights file may hold a plain state_dict or a dict with a "state_dict"/"model" entry; a "module." prefix
  (DataParallel) is dropped; the classifier head ``fc.*`` is ignored (unused, so a ResNet50 fine-tuned for any
  number of classes loads); missing BN ``num_batches_tracked`` counters are tolerated (unused in eval mode).

Transductive protocol and signs. scikit-learn's LOF scores are "larger = more normal"; ours are the negation
(higher = more anomalous), so scores are the LOF values themselves. The fitted set is scored with
``negative_outlier_factor_``, which excludes each sample from its own neighbours; scoring the fitted samples as
new data (``novelty=True``'s ``score_samples``) would count each one as its own nearest neighbour at distance 0,
which is wrong in the transductive protocol. One estimator serves both: scikit-learn computes
``negative_outlier_factor_`` in ``fit`` whatever ``novelty`` is, so the model is fitted once with
``novelty=True`` (the fitted-set scores equal those of a ``novelty=False`` fit exactly; the tests check it) and
``decision_function`` on new data uses its ``score_samples``. ``decision_function(X)`` on the very array that was
fitted (same shape and bytes) returns ``decision_scores_``, so ``fit(X).decision_function(X)`` follows the
transductive protocol too. IF: score = ``-decision_function`` (the same for the fitted set and new data).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from image_od.data.samples import ArrayData, Batch
from image_od.detector import OutlierDetector, image_array
from image_od.engine.training import predict, resolve_device, seed_everything
from image_od.files.safe_io import load_tensors, state_dict_in, state_dict_mismatch

__all__ = ["DETECTORS", "IMAGENET_MEAN", "IMAGENET_STD", "PretrainedFeatureOD", "load_resnet50", "to_imagenet_input"]

DETECTORS = ("lof", "if")
ARCHS = ("resnet50",)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FEATURE_DIM = 2048


def load_resnet50(path: str | Path) -> nn.Module:
    """torchvision's ResNet50 with the weights of the local file ``path`` and ``fc`` replaced by the identity, so
    that it returns the 2048-d pooled penultimate features. The file is read with ``weights_only=True``."""
    import torchvision

    if path is None:
        raise ValueError("no pre-trained weights: give a local ResNet50 weights file (e.g. torchvision's "
                         "resnet50-*.pth) with --set pretrained.weights=PATH; nothing is downloaded")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pre-trained weights file {path} not found (give a local ResNet50 state_dict "
                                f"with --set pretrained.weights=PATH)")
    given = {k: v for k, v in state_dict_in(load_tensors(path, map_location="cpu"), path, "ResNet50").items()
             if not k.startswith("fc.")}
    model = torchvision.models.resnet50(weights=None)
    model.fc = nn.Identity()
    mismatch = state_dict_mismatch(given, model.state_dict())
    if mismatch:
        raise ValueError(f"{path}: not a torchvision ResNet50 state_dict ({mismatch})")
    model.load_state_dict(given, strict=False)
    return model.eval()


def to_imagenet_input(x: torch.Tensor, image_size: int) -> torch.Tensor:
    """(N,C,H,W) in [-1, 1], C = 1 or 3 -> (N,3,image_size,image_size), ImageNet-normalised."""
    x = (x.float() + 1) / 2
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    if x.shape[-2:] != (image_size, image_size):
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def _images(X: Any) -> np.ndarray | torch.Tensor:
    """The image array of ``X`` (``detector.image_array``), grey or colour: C = 1 or 3, values in [-1, 1]."""
    return image_array(X, channels=(1, 3))


class PretrainedFeatureOD(OutlierDetector):
    """Pre-trained ResNet50 penultimate features + LOF (``detector="lof"``) or Isolation Forest (``"if"``).

    ``weights``: a local torchvision ResNet50 state_dict file (required; never downloaded). ``X``: float array
    (N,C,32,32) in [-1, 1] (``protocol.to_model_input``) or an ArrayData holding it as "image". There is no
    training of the network, hence no ``epochs`` setting. After ``fit(X)``: ``decision_scores_`` (X's own scores,
    higher = more anomalous), ``detector_`` (the scikit-learn estimator), ``backbone_``.
    """

    needs = ("pre-trained ResNet50 weights",)

    def __init__(self, *, weights: str | None = None, detector: str = "lof", arch: str = "resnet50",
                 image_size: int = 224, batch_size: int = 64, n_neighbors: int = 20, n_estimators: int = 100,
                 contamination: float | str = "auto", seed: int = 0, device: str = "auto", progress: bool = False):
        self.weights = weights
        self.detector = detector
        self.arch = arch
        self.image_size = image_size
        self.batch_size = batch_size
        self.n_neighbors = n_neighbors
        self.n_estimators = n_estimators
        self.contamination = contamination
        self.seed = seed
        self.device = device
        self.progress = progress


    def _check_settings(self) -> None:
        if self.weights is None:
            raise ValueError("PretrainedFeatureOD needs pre-trained ResNet50 weights: give a local weights file "
                             "with --set pretrained.weights=PATH (weights=PATH); nothing is downloaded")
        if self.detector not in DETECTORS:
            raise ValueError(f"unknown detector {self.detector!r}; expected one of {DETECTORS}")
        if self.arch not in ARCHS:
            raise ValueError(f"unknown arch {self.arch!r}; expected one of {ARCHS}")
        if self.image_size < 32 or self.batch_size < 1 or self.n_neighbors < 1 or self.n_estimators < 1:
            raise ValueError(f"image_size must be >= 32 and batch_size, n_neighbors, n_estimators positive; got "
                             f"{self.image_size}, {self.batch_size}, {self.n_neighbors}, {self.n_estimators}")

    def features(self, X: Any) -> np.ndarray:
        """The (N, 2048) penultimate features of the images of ``X`` (needs ``fit`` first, for the backbone)."""
        self._check_fitted("backbone_")
        images = _images(X)
        size = self.image_size

        def fn(batch: Batch) -> torch.Tensor:
            return self.backbone_(to_imagenet_input(batch["image"], size))

        with torch.no_grad():
            feats = predict(fn, ArrayData({"image": images}), batch_size=self.batch_size, device=self.device_,
                            progress=self.progress, desc="features")
        return feats.astype(np.float64)

    def fit(self, X: Any) -> "PretrainedFeatureOD":
        from sklearn.ensemble import IsolationForest
        from sklearn.neighbors import LocalOutlierFactor

        self._check_settings()
        images = _images(X)
        seed_everything(self.seed)
        self.device_ = resolve_device(self.device)
        self.backbone_ = load_resnet50(self.weights).to(self.device_)
        feats = self.features(images)
        if self.detector == "lof":
            lof = LocalOutlierFactor(n_neighbors=self.n_neighbors, contamination=self.contamination, novelty=True)
            self.detector_ = lof.fit(feats)
            self.decision_scores_ = -lof.negative_outlier_factor_  # self-matches excluded; sklearn: larger = normal
        else:
            forest = IsolationForest(n_estimators=self.n_estimators, contamination=self.contamination,
                                     random_state=self.seed)
            self.detector_ = forest.fit(feats)
            self.decision_scores_ = -forest.decision_function(feats)
        return self

    def decision_function(self, X: Any) -> np.ndarray:
        """Scores of ``X`` as new data, higher = more anomalous (LOF: novelty scores, where the fitted set's own
        ``decision_scores_`` leave each sample's self-match out)."""
        self._check_fitted("detector_")
        feats = self.features(_images(X))
        if self.detector == "lof":
            return -self.detector_.score_samples(feats)  # novelty LOF of new data; sklearn: larger = normal
        return -self.detector_.decision_function(feats)

