"""Discriminative E3Outlier (paper Sec. 3.2-3.4): self-supervised operation classification, then network
uncertainty on the operated copies of each image as its outlier score.

Training runs over the shuffled grid of all (image, operation) pairs, as the reference code does, but the
operated images are made per batch (``operations_discriminative.apply_operations``), never for the whole set.
Scores (all averaged over the K operations, computed from log-softmax; returned negated so that
higher = more anomalous):
- ``gtp``: probability of the operation actually applied (the pseudo label);
- ``mp``: maximum probability;
- ``ne``: negative entropy, sum_c p log2 p (the paper's default).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .data import ArrayData, Batch
from .detector import OutlierDetector
from .nets import WideResNet
from .operations_discriminative import apply_operations, operation_set
from .training import TrainSettings, resolve_device, seed_everything, train

SCORES = ("gtp", "mp", "ne")


class DiscriminativeE3Outlier(OutlierDetector):
    """``X``: float array (N,C,32,32) in [-1, 1] (see ``protocol.to_model_input``)."""

    def __init__(self, *, operations: str = "RA+IA+PR", score: str = "ne", depth: int = 10, width: int = 4,
                 epochs: int | None = None, batch_size: int = 128, optimizer: str = "sgd", lr: float = 1e-3,
                 weight_decay: float = 5e-4, device: str = "auto", seed: int = 0, progress: bool = True):
        self.operations = operations
        self.score = score
        self.depth, self.width = depth, width
        self.epochs = epochs  # None: ceil(250 / K), the paper's budget of about 250 passes over the data
        self.batch_size, self.optimizer, self.lr, self.weight_decay = batch_size, optimizer, lr, weight_decay
        self.device, self.seed, self.progress = device, seed, progress

    def fit(self, X: np.ndarray) -> "DiscriminativeE3Outlier":
        if self.score not in SCORES:
            raise ValueError(f"unknown score {self.score!r}; expected one of {SCORES}")
        generator = seed_everything(self.seed)
        device = resolve_device(self.device)
        self.ops_ = operation_set(self.operations)
        k = len(self.ops_)
        images = torch.as_tensor(X, dtype=torch.float32).to(device)
        self.net_ = WideResNet(images.shape[1], k, self.depth, self.width)
        pairs = ArrayData({"sample": torch.arange(len(images)).repeat_interleave(k),
                           "op": torch.arange(k).repeat(len(images))})

        def loss(net, batch: Batch) -> torch.Tensor:
            x = apply_operations(images[batch["sample"]], batch["op"], self.ops_)
            return F.cross_entropy(net(x)[0], batch["op"])

        settings = TrainSettings(epochs=self.epochs or math.ceil(250 / k), batch_size=self.batch_size,
                                 optimizer=self.optimizer, lr=self.lr, weight_decay=self.weight_decay,
                                 eps=1e-7, progress=self.progress)
        self.history_ = train(self.net_, loss, pairs, settings, device=device, generator=generator,
                              desc=f"train WRN-{self.depth}-{self.width} on {k} operations")
        return self

    @torch.no_grad()
    def normality_scores(self, X: np.ndarray) -> dict[str, np.ndarray]:
        """Every score (higher = more normal) averaged over the operations, as the paper defines them."""
        self._check_fitted("net_")
        self.net_.eval()
        device = next(self.net_.parameters()).device
        images = torch.as_tensor(X, dtype=torch.float32)
        sums = {s: torch.zeros(len(images)) for s in SCORES}
        for label in range(len(self.ops_)):
            for start in range(0, len(images), 1024):
                x = images[start:start + 1024].to(device)
                x = apply_operations(x, torch.full((len(x),), label, device=device), self.ops_)
                logp = F.log_softmax(self.net_(x)[0], 1).cpu()
                p = logp.exp()
                sums["gtp"][start:start + len(x)] += p[:, label]
                sums["mp"][start:start + len(x)] += p.max(1).values
                sums["ne"][start:start + len(x)] += (p * logp).sum(1) / math.log(2)
        return {s: (v / len(self.ops_)).numpy() for s, v in sums.items()}

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        return -self.normality_scores(X)[self.score]
