"""One-class Deep SVDD (Ruff et al., ICML 2018), with the settings ELITE (Zhang et al., KDD 2021) runs it under.

A bias-free encoder phi maps an image to a 128-d point; training minimises the mean squared distance to a fixed
centre c, ``(1/n) sum_i ||phi(x_i) - c||^2`` (Ruff et al., Eq. 4, the one-class objective: the soft-boundary form
is not used); the outlier score is that squared distance (higher = more anomalous). c is the mean output of the
initial network over the training images (one forward pass, batch norm in eval mode), with coordinates closer to
0 than ``center_eps`` set to +-``center_eps`` (Ruff's code: a zero unit is trivially matched by zero weights).

Network (:class:`DeepSVDDNet`): Ruff's CIFAR-10 LeNet-type net, which ELITE uses for every dataset: three blocks of
[conv 5x5 (no bias, padding 2), BN (affine=False, eps 1e-4), LeakyReLU(0.01), max-pool 2], flatten, a linear map to
``rep_dim`` without bias. No bias and no affine BN anywhere, so that phi cannot collapse onto a constant c.

Defaults = ELITE's public code for its Deep SVDD (``main.py``), so that Deep SVDD and ELITE compare at equal
settings: plain SGD (no momentum, no weight decay), lr 3e-4, batch 128, 150 epochs of the training set (the code's
``5000 // 128 * 150`` iterations on a 5,000-image pool), no autoencoder pretraining. Where this differs from Ruff et
al.: they pretrain the weights with an autoencoder and train with Adam (lr 1e-4, lr x0.1 after 50 of 150 epochs,
weight decay 5e-7, batch 200); ``optimizer="adam", lr=1e-4, weight_decay=5e-7`` gives their optimiser (no
pretraining, no schedule). Score = squared distance (Ruff); ELITE's code scores the plain distance, the same
ranking.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from image_od.baselines.autoencoders import as_images
from image_od.data.samples import ArrayData, Batch
from image_od.detector import OutlierDetector
from image_od.engine.training import TrainSettings, predict, resolve_device, seed_everything, train

__all__ = ["DeepSVDD", "DeepSVDDNet", "init_center"]


class DeepSVDDNet(nn.Module):
    """Ruff et al.'s bias-free CIFAR-10 encoder (ELITE's ``SVDD`` net) for (N, C, size, size) inputs, size divisible
    by 8: [conv5x5 no bias, BN(affine=False, eps 1e-4), LeakyReLU, max-pool 2] per width, flatten, linear (no bias)."""

    def __init__(self, in_channels: int, widths: Sequence[int] = (32, 64, 128), rep_dim: int = 128, size: int = 32):
        super().__init__()
        if len(widths) != 3 or size % 8:
            raise ValueError(f"DeepSVDDNet has three blocks and a size divisible by 8; got {widths}, {size}")
        layers: list[nn.Module] = []
        c = in_channels
        for w in widths:
            layers += [nn.Conv2d(c, w, 5, padding=2, bias=False), nn.BatchNorm2d(w, eps=1e-4, affine=False),
                       nn.LeakyReLU(), nn.MaxPool2d(2)]
            c = w
        self.encoder = nn.Sequential(*layers, nn.Flatten())
        self.project = nn.Linear(widths[-1] * (size // 8) ** 2, rep_dim, bias=False)
        self.rep_dim = rep_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.encoder(x))


@torch.no_grad()
def init_center(model: nn.Module, x: torch.Tensor, device: torch.device, eps: float = 0.1) -> torch.Tensor:
    """Deep SVDD's centre: the mean output of ``model`` (in eval mode) over ``x``, with |c_j| < eps set to +-eps
    (a coordinate of exactly 0 becomes +eps)."""
    was_training = model.training
    model.eval()
    out = predict(lambda b: model(b["image"]), ArrayData({"image": x}), device=device)
    model.train(was_training)
    c = torch.as_tensor(out, dtype=torch.float32).mean(0)
    small = c.abs() < eps
    c[small & (c < 0)] = -eps
    c[small & (c >= 0)] = eps
    return c.to(device)


class DeepSVDD(OutlierDetector):
    """One-class Deep SVDD; ``fit(X)`` trains on ``X`` (the one-class protocol's inliers, or a polluted pool) and sets
    ``decision_scores_`` (the squared distances of ``X`` itself); ``decision_function`` scores new images.
    ``X``: float (N, C, H, W) in [-1, 1], H = W divisible by 8. ``center_`` is c; ``history_`` the epoch losses."""

    def __init__(self, *, epochs: int = 150, batch_size: int = 128, optimizer: str = "sgd", lr: float = 3e-4,
                 momentum: float = 0.0, weight_decay: float = 0.0, widths: Sequence[int] = (32, 64, 128),
                 rep_dim: int = 128, center_eps: float = 0.1, device: str = "auto", seed: int = 0,
                 progress: bool = False, data_parallel: bool = True):
        self.epochs, self.batch_size, self.optimizer, self.lr = epochs, batch_size, optimizer, lr
        self.momentum, self.weight_decay, self.widths, self.rep_dim = momentum, weight_decay, widths, rep_dim
        self.center_eps, self.device, self.seed, self.progress = center_eps, device, seed, progress
        self.data_parallel = data_parallel

    def _loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        return (model(batch["image"]) - self.center_).pow(2).sum(1).mean()

    def fit(self, X: Any) -> "DeepSVDD":
        x = as_images(X)
        generator = seed_everything(self.seed)
        self.device_ = resolve_device(self.device)
        self.model_ = DeepSVDDNet(x.shape[1], tuple(self.widths), self.rep_dim, x.shape[-1]).to(self.device_)
        self.center_ = init_center(self.model_, x, self.device_, self.center_eps)
        settings = TrainSettings(epochs=self.epochs, batch_size=self.batch_size, optimizer=self.optimizer,
                                 lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay,
                                 progress=self.progress, data_parallel=self.data_parallel)
        self.history_ = train(self.model_, self._loss, ArrayData({"image": x}), settings, device=self.device_,
                              generator=generator, desc="DeepSVDD")
        self.decision_scores_ = self.decision_function(x)
        return self

    def decision_function(self, X: Any) -> np.ndarray:
        self._check_fitted("model_")
        self.model_.eval()
        scores = predict(lambda b: (self.model_(b["image"]) - self.center_).pow(2).sum(1),
                         ArrayData({"image": as_images(X)}), device=self.device_)
        return scores.astype(np.float64)
