"""MO-GAAL, multiple-objective generative adversarial active learning (Liu et al., TKDE 2019), for images as the
E3Outlier supplement runs it (Sec. 5, "competing methods" (7)): DCGAN sub-generators of 32x32 images from 128-d
noise, batch 64, 25 epochs of joint training and 75 more of the discriminator alone.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from image_od.baselines.density import as_images
from image_od.data.samples import ArrayData
from image_od.detector import OutlierDetector
from image_od.engine.training import TrainSettings, resolve_device, score_batch_size, seed_everything, train


def _dcgan_init(module: nn.Module) -> None:
    """DCGAN initialisation: conv weights N(0, 0.02), batch-norm weights N(1, 0.02), biases 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class DCGANGenerator(nn.Module):
    """DCGAN generator of 32x32 images: noise (N, latent) -> [deconv k4, BN, ReLU] to 4x4, 8x8, 16x16 with
    4w, 2w, w channels -> deconv k4 s2 to 32x32 -> tanh."""

    def __init__(self, latent_dim: int, out_channels: int, width: int = 64):
        super().__init__()
        w = width
        self.net = nn.Sequential(
            nn.ConvTranspose2d(latent_dim, 4 * w, 4, 1, 0, bias=False), nn.BatchNorm2d(4 * w), nn.ReLU(True),
            nn.ConvTranspose2d(4 * w, 2 * w, 4, 2, 1, bias=False), nn.BatchNorm2d(2 * w), nn.ReLU(True),
            nn.ConvTranspose2d(2 * w, w, 4, 2, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(True),
            nn.ConvTranspose2d(w, out_channels, 4, 2, 1, bias=False), nn.Tanh())
        _dcgan_init(self)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z[:, :, None, None])


class DCGANDiscriminator(nn.Module):
    """DCGAN discriminator of 32x32 images: conv k4 s2 to w, 2w, 4w channels (BN after the first, LeakyReLU 0.2)
    -> conv k4 to one logit per image (N,). D(x) = sigmoid(logit) is the probability of "real"."""

    def __init__(self, in_channels: int, width: int = 64):
        super().__init__()
        w = width
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, w, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True),
            nn.Conv2d(w, 2 * w, 4, 2, 1, bias=False), nn.BatchNorm2d(2 * w), nn.LeakyReLU(0.2, True),
            nn.Conv2d(2 * w, 4 * w, 4, 2, 1, bias=False), nn.BatchNorm2d(4 * w), nn.LeakyReLU(0.2, True),
            nn.Conv2d(4 * w, 1, 4, 1, 0, bias=False))
        _dcgan_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten()


def noise_split(batch_size: int, k: int) -> list[int]:
    """How many of a batch's noise vectors each sub-generator gets, as the MO-GAAL reference code cuts them:
    generator i gets ``(k - i) * (batch_size // (k (k+1) / 2))``, the last one all that is left (for batch 64 and
    k = 10: 10, 9, ..., 2 and 10)."""
    unit = batch_size // (k * (k + 1) // 2)
    sizes = [(k - i) * unit for i in range(k - 1)]
    return sizes + [batch_size - sum(sizes)]


def generator_targets(real_scores: torch.Tensor, k: int) -> torch.Tensor:
    """Sub-generator i's target ``T_i``: the ``i / k`` quantile (linear interpolation, ``np.percentile``'s
    default) of the discriminator's outputs D(x) on all the real data, i = 0..k-1 (MO-GAAL Sec. 4.2)."""
    q = torch.arange(k, dtype=real_scores.dtype, device=real_scores.device) / k
    return torch.quantile(real_scores, q)


class MOGAAL(OutlierDetector):
    """Multiple-objective GAAL: k sub-generators and one discriminator D.

    Each step (batch of ``batch_size`` real images, uniform(0, 1) noise cut by :func:`noise_split`): D is trained
    with binary cross-entropy on the real images (label 1) and the sub-generators' samples (label 0); then, in the
    first ``epochs_joint`` epochs, each sub-generator i takes a step on BCE(D(G_i(z)), T_i) with
    ``T_i = generator_targets(D(all real data))[i]``, so that sub-generator i produces samples D scores at the
    (i/k)-quantile of its outputs on the real data. Generators stop after ``epochs_joint`` epochs (the reference
    code's ``stop_epochs``); D goes on for ``epochs_discriminator`` epochs against the frozen generators' samples.
    Score: ``1 - D(x)`` (higher = more anomalous), computed as sigmoid(-logit).

    Training: the one training loop (``image_od.engine.training.train``) steps D; the k generators step with
    their own optimizers in its ``on_step_end``, with the noise of D's step. No checkpoints (they would hold D
    alone).

    Settings follow the reference code (leibinghe/GAAL-based-outlier-detection, as PyOD's ``MO_GAAL``): k = 10,
    SGD with momentum 0.9, lr 0.01 for D and 1e-4 for the generators, uniform(0, 1) noise. The supplement sets
    the DCGAN, the 128-d noise, batch 64 and the 25 + 75 epochs.

    Choices and deviations:
    - The networks are DCGAN's (width 64; batch norm, LeakyReLU 0.2, N(0, 0.02) init) for 32x32 images: the
      supplement names a DCGAN but not its layers; the reference uses MLPs for tabular data.
    - D is trained in train mode (batch statistics of the mixed real + generated batch); the quantile targets,
      the generator steps and the scores use D in eval mode, so that they see the same function of one image.
    - Batches are reshuffled every epoch and the last incomplete one is dropped (the reference walks the data in
      a fixed order, also dropping the remainder); a set smaller than ``batch_size`` is one batch.
    - Keras' SGD lr decay of 1e-6 per step is left out; BCE is computed on logits (no clipping at 1e-7).
    """

    def __init__(self, *, epochs_joint: int = 25, epochs_discriminator: int = 75, n_generators: int = 10,
                 latent_dim: int = 128, batch_size: int = 64, lr_d: float = 0.01, lr_g: float = 1e-4,
                 momentum: float = 0.9, width: int = 64, device: str = "auto", seed: int = 0,
                 progress: bool = False, data_parallel: bool = True):
        self.epochs_joint, self.epochs_discriminator = epochs_joint, epochs_discriminator
        self.n_generators, self.latent_dim, self.batch_size = n_generators, latent_dim, batch_size
        self.lr_d, self.lr_g, self.momentum, self.width = lr_d, lr_g, momentum, width
        self.device, self.seed, self.progress = device, seed, progress
        self.data_parallel = data_parallel

    def _check_settings(self, X: np.ndarray) -> None:
        if X.shape[-2:] != (32, 32):
            raise ValueError(f"MOGAAL's DCGAN works on 32x32 images, got {X.shape[-2:]}")
        if self.n_generators < 1 or self.epochs_joint < 0 or self.epochs_discriminator < 0:
            raise ValueError("n_generators must be positive and the epochs non-negative")
        if self.epochs_joint + self.epochs_discriminator < 1:
            raise ValueError("MOGAAL needs at least one epoch")

    def fit(self, X: np.ndarray) -> MOGAAL:
        X = as_images(X)
        self._check_settings(X)
        generator = seed_everything(self.seed)
        self.device_ = device = resolve_device(self.device)
        k, n = self.n_generators, len(X)
        self.discriminator_ = disc = DCGANDiscriminator(X.shape[1], self.width).to(device)
        self.generators_ = gens = nn.ModuleList(
            DCGANGenerator(self.latent_dim, X.shape[1], self.width) for _ in range(k)).to(device)
        opt_g = [torch.optim.SGD(g.parameters(), lr=self.lr_g, momentum=self.momentum) for g in gens]
        images = torch.from_numpy(X).to(device)
        batch = min(self.batch_size, n)
        sizes = noise_split(batch, k)
        self.history_: dict[str, list[float]] = {"discriminator": [], "generator": []}
        shared: dict = {}  # the step's noise (for D's loss and the generators' steps) and the epoch's phase

        def discriminator_loss(disc: nn.Module, real: dict[str, torch.Tensor]) -> torch.Tensor:
            shared["noise"] = torch.rand(batch, self.latent_dim, generator=generator).to(device).split(sizes)
            return self._discriminator_loss(real["image"], shared["noise"])

        def generator_steps(epoch_step: int, real: dict[str, torch.Tensor]) -> None:
            if shared["joint"]:
                shared["generator_losses"].append(self._generator_steps(images, shared["noise"], opt_g))

        def start_epoch(epoch: int) -> None:
            shared.update(joint=epoch < self.epochs_joint, generator_losses=[])

        def end_epoch(epoch: int) -> None:
            if shared["joint"]:
                self.history_["generator"].append(float(np.mean(shared["generator_losses"])))

        settings = TrainSettings(epochs=self.epochs_joint + self.epochs_discriminator, batch_size=batch,
                                 optimizer="sgd", lr=self.lr_d, momentum=self.momentum, drop_last=True,
                                 progress=self.progress, data_parallel=self.data_parallel)
        self.history_["discriminator"] = train(
            disc, discriminator_loss, ArrayData({"image": torch.from_numpy(X)}), settings, device=device,
            generator=generator, desc="train MO-GAAL", on_epoch_start=start_epoch, on_step_end=generator_steps,
            on_epoch_end=end_epoch)
        self.decision_scores_ = self.decision_function(X)
        return self

    def _discriminator_loss(self, real: torch.Tensor, noise: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """D's loss on the real batch (label 1) and every sub-generator's samples (label 0), D in train mode."""
        with torch.no_grad():
            fake = torch.cat([g(z) for g, z in zip(self.generators_, noise) if len(z)])
        self.discriminator_.train()
        logits = self.discriminator_(torch.cat([real, fake]))
        labels = torch.cat([torch.ones(len(real)), torch.zeros(len(fake))]).to(logits.device)
        return F.binary_cross_entropy_with_logits(logits, labels)

    def _generator_steps(self, images: torch.Tensor, noise: tuple[torch.Tensor, ...],
                         opts: list[torch.optim.Optimizer]) -> float:
        """One step of every sub-generator towards its target quantile; returns their mean loss."""
        disc = self.discriminator_
        targets = generator_targets(self._real_probability(images), len(opts))
        disc.eval()
        disc.requires_grad_(False)
        losses = []
        for g, z, target, opt in zip(self.generators_, noise, targets, opts):
            if not len(z):
                continue
            logits = disc(g(z))
            loss = F.binary_cross_entropy_with_logits(logits, target.expand_as(logits))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        disc.requires_grad_(True)
        return float(np.mean(losses))

    @torch.no_grad()
    def _logits(self, images: torch.Tensor) -> torch.Tensor:
        self.discriminator_.eval()
        return torch.cat([self.discriminator_(part.to(self.device_))
                          for part in images.split(score_batch_size(self.device_))])

    def _real_probability(self, images: torch.Tensor) -> torch.Tensor:
        """D(x) of every real image (eval mode)."""
        return torch.sigmoid(self._logits(images))

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """``1 - D(x)`` (higher = more anomalous)."""
        self._check_fitted("discriminator_")
        return torch.sigmoid(-self._logits(torch.from_numpy(as_images(X)))).cpu().numpy()
