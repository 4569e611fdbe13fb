"""Pseudo-label self-training: turn any first outlier score into a discriminative detector.

The samples the first score is most sure about become pseudo labels: the lowest-scored ``normal_fraction`` are
labelled normal (0) and the highest-scored ``abnormal_fraction`` abnormal (1); the rest are left out. A classifier
is trained on them (cross-entropy, the two classes weighted to count alike), and its logit margin
log p(abnormal) - log p(normal) on every sample is the new score. ``rounds`` > 1 repeats this with the new score
choosing the pseudo labels (a fresh network each round), as in self-trained ordinal regression for video anomaly
detection (Pang et al., CVPR 2020). Higher = more anomalous, as everywhere.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from image_od.data.samples import ArrayData, Batch
from image_od.detector import OutlierDetector
from image_od.engine.training import TrainSettings, predict, resolve_device, seed_everything, train
from image_od.networks.backbones import make_backbone


def pseudo_labels(scores: np.ndarray, normal_fraction: float, abnormal_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(indices, labels) of the confident samples: the lowest ``normal_fraction`` -> 0, the highest
    ``abnormal_fraction`` -> 1 (at least one of each; ties broken by position, so the choice is deterministic)."""
    if not 0 < normal_fraction < 1 or not 0 < abnormal_fraction < 1 or normal_fraction + abnormal_fraction > 1:
        raise ValueError(f"fractions must be in (0, 1) and sum to at most 1, got normal {normal_fraction}, "
                         f"abnormal {abnormal_fraction}")
    n = len(scores)
    order = np.argsort(scores, kind="stable")
    n_normal, n_abnormal = max(1, int(n * normal_fraction)), max(1, int(n * abnormal_fraction))
    index = np.concatenate([order[:n_normal], order[n - n_abnormal:]])
    labels = np.concatenate([np.zeros(n_normal, np.int64), np.ones(n_abnormal, np.int64)])
    return index, labels


class PseudoLabelSelfTraining(OutlierDetector):
    """``X``: float array (N,C,H,W); ``fit(X, initial_scores)`` needs the first score (higher = more anomalous)."""

    def __init__(self, *, rounds: int = 1, normal_fraction: float = 0.5, abnormal_fraction: float = 0.02,
                 backbone: str = "wrn-10-1", epochs: int = 2, batch_size: int = 128, lr: float = 1e-3,
                 device: str = "auto", seed: int = 0, progress: bool = True, data_parallel: bool = True):
        self.rounds, self.normal_fraction, self.abnormal_fraction = rounds, normal_fraction, abnormal_fraction
        self.backbone, self.epochs, self.batch_size, self.lr = backbone, epochs, batch_size, lr
        self.device, self.seed, self.progress = device, seed, progress
        self.data_parallel = data_parallel

    def fit(self, X: np.ndarray, initial_scores: np.ndarray) -> "PseudoLabelSelfTraining":
        if self.rounds < 1:
            raise ValueError(f"rounds must be at least 1, got {self.rounds}")
        if len(initial_scores) != len(X):
            raise ValueError(f"{len(initial_scores)} initial scores for {len(X)} samples")
        self.device_ = resolve_device(self.device)
        x = torch.as_tensor(X, dtype=torch.float32)
        scores = np.asarray(initial_scores, np.float64)
        self.history_ = []
        for r in range(self.rounds):
            index, labels = pseudo_labels(scores, self.normal_fraction, self.abnormal_fraction)
            self.net_ = self._train(x[index], torch.from_numpy(labels), self.seed + r)
            scores = self.decision_function(x)
            self.history_.append(scores)
        self.decision_scores_ = scores
        return self

    def _train(self, x: torch.Tensor, labels: torch.Tensor, seed: int) -> torch.nn.Module:
        generator = seed_everything(seed)
        net = make_backbone(self.backbone, x.shape[1], 2)
        counts = torch.bincount(labels, minlength=2).float()
        class_weight = (counts.sum() / (2 * counts)).to(self.device_)

        def loss(model, batch: Batch) -> torch.Tensor:
            return F.cross_entropy(model(batch["x"])[0], batch["y"], weight=class_weight)

        settings = TrainSettings(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, progress=self.progress,
                                 data_parallel=self.data_parallel)
        train(net, loss, ArrayData({"x": x, "y": labels}), settings, device=self.device_, generator=generator,
              desc=f"self-training classifier (seed {seed})")
        return net

    def decision_function(self, X: np.ndarray | torch.Tensor) -> np.ndarray:
        """log p(abnormal) - log p(normal) of the last round's classifier."""
        self._check_fitted("net_")
        self.net_.eval()

        def margin(batch: Batch) -> torch.Tensor:
            logits = self.net_(batch["x"])[0].float()
            return logits[:, 1] - logits[:, 0]

        data = ArrayData({"x": torch.as_tensor(X, dtype=torch.float32)})
        return predict(margin, data, device=self.device_).astype(np.float64)
