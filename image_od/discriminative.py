"""Discriminative E3Outlier (paper Sec. 3.2-3.4): self-supervised operation classification, then network
uncertainty on the operated copies of each image as its outlier score.

Training runs over the shuffled grid of all (image, operation) pairs, as the reference code does, but the
operated images are made per batch (``operations_discriminative.apply_operations``), never for the whole set.
Scores (all averaged over the K operations, computed from log-softmax; returned negated so that
higher = more anomalous):
- ``gtp``: probability of the operation actually applied (the pseudo label);
- ``mp``: maximum probability;
- ``ne``: negative entropy, sum_c p log2 p (the paper's default);
- ``mcd``: MC dropout (needs ``dropout`` > 0; the TPAMI code uses 0.05 and 5 passes): the mean over operations of
  E[max p] - Std[max p] over stochastic passes, with dropout on and batch norm in eval mode;
- ``ssd_if``: SSD+IF, an Isolation Forest on the penultimate features of the untransformed images.
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

SCORES = ("gtp", "mp", "ne", "mcd", "ssd_if")


class DiscriminativeE3Outlier(OutlierDetector):
    """``X``: float array (N,C,32,32) in [-1, 1] (see ``protocol.to_model_input``)."""

    def __init__(self, *, operations: str = "RA+IA+PR", score: str = "ne", depth: int = 10, width: int = 4,
                 dropout: float = 0.0, mc_passes: int = 5, epochs: int | None = None, batch_size: int = 128, optimizer: str = "sgd", lr: float = 1e-3,
                 weight_decay: float = 5e-4, device: str = "auto", seed: int = 0, progress: bool = True):
        self.operations = operations
        self.score = score
        self.depth, self.width, self.dropout, self.mc_passes = depth, width, dropout, mc_passes
        self.epochs = epochs  # None: ceil(250 / K), the paper's budget of about 250 passes over the data
        self.batch_size, self.optimizer, self.lr, self.weight_decay = batch_size, optimizer, lr, weight_decay
        self.device, self.seed, self.progress = device, seed, progress

    def fit(self, X: np.ndarray) -> "DiscriminativeE3Outlier":
        if self.score not in SCORES:
            raise ValueError(f"unknown score {self.score!r}; expected one of {SCORES}")
        if self.score == "mcd" and self.dropout <= 0:
            raise ValueError("score 'mcd' needs dropout > 0 (the TPAMI code uses 0.05)")
        generator = seed_everything(self.seed)
        device = resolve_device(self.device)
        self.ops_ = operation_set(self.operations)
        k = len(self.ops_)
        images = torch.as_tensor(X, dtype=torch.float32).to(device)
        self.net_ = WideResNet(images.shape[1], k, self.depth, self.width, self.dropout)
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
        names = ["gtp", "mp", "ne"] + (["mcd"] if self.dropout > 0 else [])
        sums = {s: torch.zeros(len(images)) for s in names}
        for label in range(len(self.ops_)):
            for start in range(0, len(images), 1024):
                x = images[start:start + 1024].to(device)
                x = apply_operations(x, torch.full((len(x),), label, device=device), self.ops_)
                logp = F.log_softmax(self.net_(x)[0], 1).cpu()
                p = logp.exp()
                part = slice(start, start + len(x))
                sums["gtp"][part] += p[:, label]
                sums["mp"][part] += p.max(1).values
                sums["ne"][part] += (p * logp).sum(1) / math.log(2)
                if self.dropout > 0:
                    sums["mcd"][part] += self._mc_dropout_max_prob(x)
        scores = {s: (v / len(self.ops_)).numpy() for s, v in sums.items()}
        scores["ssd_if"] = self._isolation_forest(images, device)
        return scores

    def _mc_dropout_max_prob(self, x: torch.Tensor) -> torch.Tensor:
        """E[max p] - Std[max p] over ``mc_passes`` passes with only the dropout layers in training mode."""
        dropouts = [m for m in self.net_.modules() if isinstance(m, torch.nn.Dropout)]
        for m in dropouts:
            m.train()
        maxp = torch.stack([F.softmax(self.net_(x)[0], 1).max(1).values.cpu() for _ in range(self.mc_passes)])
        for m in dropouts:
            m.eval()
        return maxp.mean(0) - maxp.std(0)

    def _isolation_forest(self, images: torch.Tensor, device: torch.device) -> np.ndarray:
        from sklearn.ensemble import IsolationForest

        features = torch.cat([self.net_(images[i:i + 1024].to(device))[1].cpu() for i in range(0, len(images), 1024)])
        forest = IsolationForest(n_estimators=100, random_state=self.seed).fit(features.numpy())
        return forest.decision_function(features.numpy())  # higher = more normal

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        return -self.normality_scores(X)[self.score]
