"""Generative E3Outlier on images, as published (Sec. 3.6.1, Eq. 14-16; supplement Sec. 5), with flat settings.

Four generators restore an image from its flipped, grey, rotated views (``operations.image_tasks``: O(x|y1) from
Flip x Gray x SimpleRotation, O(x|y2) the identity). The paper's form, the default here:
- generator: the supplement's deep CAE (the network of the CAE-based baselines: three conv blocks, a 256-d tanh
  code, tanh output; ``nets.DeepCAE``), or its UNet (``generator="unet"``);
- SGD with learning rate 0.1;
- score: the plain sum over the pairs of the squared generation errors (Eq. 15-16, negated: higher = more
  anomalous), ``normalisation="none"``.
The paper is silent on the momentum, the weight decay, the batch size and the epochs of this variant: we use
plain SGD (momentum 0; on digits class 0, 10 epochs, momentum 0.9 gave AUROC 0.62 against 0.93: at lr 0.1 it
overshoots) and no weight decay, the batch size 128 and the 250 epochs of the CAE baselines (profiles shrink the
epochs).

Options that keep the earlier project form: ``generator="conv"`` (the video CAE, no bottleneck, linear output),
``optimizer="adam", lr=1e-3`` and ``normalisation="zscore"`` (each pair's errors z-scored before the sum).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from image_od.data.samples import ArrayData
from image_od.detector import OutlierDetector
from image_od.e3outlier.generative import GenerativeE3Outlier
from image_od.engine.training import TrainSettings
from image_od.operations.generative import image_tasks


class ImageGenerativeE3Outlier(OutlierDetector):
    """``X``: float array (N,C,H,W) in [-1, 1] (``protocol.to_model_input``); H and W divisible by 16 for the UNet,
    by 8 for the CAEs."""

    def __init__(self, *, generator: str = "deep-cae", widths: Sequence[int] = (64, 128, 256), epochs: int = 250,
                 batch_size: int = 128, optimizer: str = "sgd", lr: float = 0.1, momentum: float = 0.0,
                 weight_decay: float = 0.0, normalisation: str = "none", seed: int = 0, device: str = "auto",
                 progress: bool = False, data_parallel: bool = True):
        self.generator, self.widths, self.epochs, self.batch_size = generator, widths, epochs, batch_size
        self.optimizer, self.lr, self.momentum, self.weight_decay = optimizer, lr, momentum, weight_decay
        self.normalisation, self.seed, self.device, self.progress = normalisation, seed, device, progress
        self.data_parallel = data_parallel

    def _model(self) -> GenerativeE3Outlier:
        settings = TrainSettings(epochs=self.epochs, batch_size=self.batch_size, optimizer=self.optimizer, lr=self.lr,
                                 momentum=self.momentum, weight_decay=self.weight_decay, progress=self.progress,
                                 data_parallel=self.data_parallel)
        return GenerativeE3Outlier(image_tasks(), widths=self.widths, generator=self.generator,
                                   normalisation=self.normalisation, train_settings=settings, device=self.device,
                                   seed=self.seed)

    def fit(self, X: np.ndarray) -> "ImageGenerativeE3Outlier":
        self.model_ = self._model().fit(ArrayData({"image": np.asarray(X, np.float32)}))
        self.decision_scores_ = self.model_.decision_scores_
        return self

    def task_errors(self, X: np.ndarray) -> np.ndarray:
        """Each pair's squared generation error, (N, 4)."""
        self._check_fitted("model_")
        return self.model_.task_errors(ArrayData({"image": np.asarray(X, np.float32)}))

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        self._check_fitted("model_")
        return self.model_.normaliser_(self.task_errors(X)).sum(1)
