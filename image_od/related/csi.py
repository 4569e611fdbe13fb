"""CSI (Tack et al., NeurIPS 2020) in the form the CSI-synthetic paper uses it, and CSI with contrasting synthetic
images (Yu & Chiu, "Boosting Semi-Supervised Anomaly Detection via Contrasting Synthetic Images", MVA 2021).

Both are one-class detectors: ``fit(X)`` trains on inliers and keeps a feature bank of X, ``decision_function(X')``
scores new images against that bank (one-class protocol), ``decision_scores_`` (and ``fit_score``) score the fitted
set against itself with the self-match excluded (transductive protocol). The parts reused from
:mod:`image_od.e3outlier.contrastive`: ``contrastive_loss`` (SimCLR labels), ``simclr_labels``, ``rotation_targets``,
``rotate_batch``, ``Augmentation``, ``warmup_cosine``, ``max_similarity`` (and ``backbones.ResNet18``). Shared with
:mod:`image_od.related.unicon`: :func:`two_view_batch` (flip, rotate, augment) and :func:`tta_features` (CSI's test-time
augmentation ensemble).
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from image_od.detector import OutlierDetector, image_array
from image_od.e3outlier.contrastive import (
    N_ROTATIONS,
    Augmentation,
    contrastive_loss,
    max_similarity,
    rotate_batch,
    rotation_targets,
    simclr_labels,
    train_contrastive,
)
from image_od.engine.precision import PRECISIONS, autocast, resolve_precision
from image_od.engine.training import resolve_device, score_batch_size, seed_everything
from image_od.networks.backbones import ResNet18

OPTIMIZERS = ("lars", "sgd", "adam")
SCORE_LAYERS = ("projection", "features")


# ---------------------------------------------------------------------------------------------- shared helpers
def flip_images(x: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Mirror (left-right) the images of ``x`` (N, C, H, W) where the boolean ``flip`` (N,) is set."""
    return torch.where(flip.to(x.device).view(-1, 1, 1, 1), x.flip(3), x)


def two_view_batch(x: torch.Tensor, augmentation: Augmentation, generator: torch.Generator, hflip_p: float,
                   n_rotations: int = N_ROTATIONS) -> torch.Tensor:
    """The two-view x rotation batch of CSI's code, laid out [view][rotation][image] (``simclr_labels``): per view,
    a random horizontal flip of each image (probability ``hflip_p``), then the rotations, then ``augmentation``
    drawn independently for every rotated copy. The flip comes before the rotation (as CSI's code does) so that a
    flipped copy keeps its rotation label (a flip after a 90-degree turn would equal a flip before a 270-degree
    one); ``augmentation`` itself should therefore have ``hflip_p`` 0."""
    views = []
    for _ in range(2):
        flip = torch.rand(len(x), generator=generator) < hflip_p
        views.append(augmentation(rotate_batch(flip_images(x, flip), n_rotations), generator))
    return torch.cat(views)


@torch.no_grad()
def tta_features(embed: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, *, rotations: Sequence[int],
                 samples: int, augmentation: Augmentation, hflip_p: float, seed: int, device: torch.device,
                 normalise: bool = False, chunk: int | None = None) -> torch.Tensor:
    """CSI's test-time ensemble: for each rotation k, the mean over ``samples`` random views
    ``embed(augmentation(rot_k(flip(x))))`` of every image, as a (len(rotations), N, D) float32 CPU tensor
    (``normalise``: each view's embedding is L2-normalised before the mean, as UniCon-HA's score needs).

    ``samples`` 0 embeds the plain rotated images once. The draws of round r come from a CPU generator seeded
    with ``seed`` and r and are made for all N images at once, so the features do not depend on ``chunk`` and the
    same images get the same features on every call (CSI's evaluation re-seeds every round the same way).
    """
    n, rotations, chunk = len(images), list(rotations), chunk or score_batch_size(device)
    total = None
    for r in range(max(samples, 1)):
        generator = torch.Generator().manual_seed(seed * 1_000_003 + r)
        draws = [(torch.rand(n, generator=generator) < hflip_p, augmentation.sample(n, generator))
                 if samples > 0 else None for _ in rotations]
        rounds = []
        for k, draw in zip(rotations, draws):
            parts = []
            for start in range(0, n, chunk):
                x = images[start:start + chunk].to(device)
                if draw is not None:
                    flip, params = draw
                    x = flip_images(x, flip[start:start + chunk])
                x = torch.rot90(x, k, dims=(2, 3))
                if draw is not None:
                    x = augmentation.apply(x, {key: v[start:start + chunk] for key, v in params.items()})
                e = embed(x).float()
                parts.append((F.normalize(e, dim=1) if normalise else e).cpu())
            rounds.append(torch.cat(parts))
        stacked = torch.stack(rounds)
        total = stacked if total is None else total + stacked
    return total / max(samples, 1)


@contextmanager
def frozen(*modules: nn.Module) -> Iterator[None]:
    """Parameters of ``modules`` do not collect gradients inside the block (gradients still flow through them)."""
    params = [p for m in modules for p in m.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


class LARS(torch.optim.SGD):
    """SGD wrapped in LARS trust ratios, as ``torchlars.LARS`` (which CSI's code uses) does: for every parameter
    tensor w with gradient g, ``g <- (g + wd w) * trust_coef ||w|| / (||g|| + wd ||w|| + eps)`` (factor 1 where
    ||w|| or ||g|| is 0), then a plain SGD step with momentum and no further weight decay."""

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
                 trust_coef: float = 1e-3, eps: float = 1e-8):
        super().__init__(params, lr=lr, momentum=momentum, weight_decay=0.0)
        self.lars_weight_decay, self.trust_coef, self.eps = weight_decay, trust_coef, eps

    @torch.no_grad()
    def step(self, closure=None):
        wd = self.lars_weight_decay
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                w_norm, g_norm = p.norm(), p.grad.norm()
                ratio = torch.where((w_norm > 0) & (g_norm > 0),
                                    self.trust_coef * w_norm / (g_norm + wd * w_norm + self.eps),
                                    torch.ones_like(w_norm))
                p.grad.add_(p, alpha=wd).mul_(ratio)
        return super().step(closure)


def make_optimizer(name: str, params, lr: float, momentum: float, weight_decay: float) -> torch.optim.Optimizer:
    if name == "lars":
        return LARS(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; expected one of {OPTIMIZERS}")


def as_images(X: np.ndarray) -> torch.Tensor:
    """``X`` (checked by ``detector.image_array``) as a float32 tensor (N,C,H,W)."""
    return torch.as_tensor(np.asarray(image_array(X)), dtype=torch.float32)


# ---------------------------------------------------------------------------------------------------- network
class CSINet(nn.Module):
    """CSI's network: the CIFAR ResNet18 f (``backbones.ResNet18``; its ``fc`` is CSI's shift head, a linear
    4-way rotation classifier on f) and CSI's projection head Linear(d, d)-ReLU-Linear(d, ``projection_dim``)
    ("simclr" layer, d = 8 * width). ``forward(x) -> (z, rotation logits, f)``."""

    def __init__(self, in_channels: int, width: int = 64, projection_dim: int = 128):
        super().__init__()
        self.backbone = ResNet18(in_channels, N_ROTATIONS, width)
        d = self.backbone.fc.in_features
        self.head = nn.Sequential(nn.Linear(d, d), nn.ReLU(inplace=True), nn.Linear(d, projection_dim))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits, f = self.backbone(x)
        return self.head(f), logits, f


# ------------------------------------------------------------------------------------------------------- CSI
class CSI(OutlierDetector):
    """CSI, as the CSI-synthetic paper (its Eqs. 1-4 and 11) uses it. ``X``: float (N, C, H, W) in [-1, 1].

    Training (Eq. 4): ``L_CSI = L_con-SI + cls_weight * L_cls-SI``. Each batch of B images is expanded by the four
    rotations (shifted instances, Eq. 2), every rotated copy gets two views (:func:`two_view_batch`), and
    ``L_con-SI`` is SimCLR's NT-Xent over the 8B views (``contrastive_loss`` with ``simclr_labels``, tau 0.5: a
    view's one positive is its other view under the same rotation; other rotations of the same image are
    negatives); ``L_cls-SI`` is the cross-entropy of the 4-way rotation head on f over all 8B views.

    Score (Eq. 11 with CSI's per-rotation maximum): ``sum_k max_m cos(z(S_k x), z(S_k x_m)) ||z(S_k x)||`` over the
    training bank {x_m}; z is the projection (``score_layer="projection"``, CSI's "simclr" layer; ``features``
    uses f). With ``tta_samples`` R > 0 it is CSI's M_ens: the features of a test image are averaged over R random
    views (flip, colour jitter, grey, resized crop of fixed area ``tta_crop``) before the dot product, and the
    bank is the R-averaged, L2-normalised training features (CSI's evaluation code). ``decision_function`` is
    minus that (higher = anomalous); ``decision_scores_`` compare the fitted images with the other fitted images
    (j != i), so the transductive protocol never matches an image with itself (use them, or ``fit_score``, not
    ``decision_function`` on the fitted set, which finds every image in the bank).

    Settings from CSI's public code (the CSI-synthetic paper: "most of our optimization settings follows [CSI]"):
    CIFAR ResNet18, projection head 512-512-128, tau 0.5, ``cls_weight`` 1, 128 images per step (CSI: 32 per GPU
    on 4 GPUs, with the similarity matrix gathered over the GPUs), 1000 epochs, LARS (trust 0.001, eps 1e-8)
    over SGD with momentum 0.9 and weight decay 1e-6, learning rate 0.1 warmed up to 1.0 over 10 epochs
    (GradualWarmupScheduler, multiplier 10) then cosine; augmentations: flip p 0.5 (before the rotation),
    colour jitter 0.4/0.4/0.4/0.1 with p 0.8, grey p 0.2, RandomResizedCrop scale (0.08, 1); evaluation with
    10 samples at crop area 0.54. The paper's T also lists Gaussian blur, which CSI's CIFAR code does not use;
    neither do we.

    Deviations: the learning rate is set per epoch by ``training.warmup_cosine`` (linear warm-up lr*(e+1)/10,
    which starts at 0.1 as CSI's does, then a cosine that reaches 0 at the last epoch) where CSI steps it every
    iteration; the batch-layout and augmentation implementation are :mod:`image_od.e3outlier.contrastive`'s
    (:class:`~image_od.e3outlier.contrastive.Augmentation` lists its differences from torchvision). The score has none of
    CSI's per-rotation normalising weights and no rotation-head term (the CSI-synthetic paper's "simplified"
    score). ``optimizer`` ``sgd``/``adam`` and ``width`` < 64 are for small budgets and tests.

    Training loop: the one training loop (``image_od.engine.training.train``) for F, with LARS as the caller's
    optimizer; :class:`CSISynth` steps its other four networks in the loop's ``on_step_end``. No checkpoints (they
    would hold F alone); one process.
    """

    def __init__(self, *, epochs: int = 1000, batch_size: int = 128, optimizer: str = "lars", lr: float = 1.0,
                 momentum: float = 0.9, weight_decay: float = 1e-6, warmup_epochs: int = 10, tau: float = 0.5,
                 cls_weight: float = 1.0, width: int = 64, projection_dim: int = 128,
                 crop_scale: tuple[float, float] = (0.08, 1.0),
                 jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1), jitter_p: float = 0.8,
                 grey_p: float = 0.2, hflip_p: float = 0.5, tta_samples: int = 10, tta_crop: float = 0.54,
                 score_layer: str = "projection", precision: str = "auto", device: str = "auto", seed: int = 0,
                 progress: bool = False, data_parallel: bool = True):
        self.epochs, self.batch_size, self.optimizer, self.lr = epochs, batch_size, optimizer, lr
        self.momentum, self.weight_decay, self.warmup_epochs = momentum, weight_decay, warmup_epochs
        self.tau, self.cls_weight, self.width, self.projection_dim = tau, cls_weight, width, projection_dim
        self.crop_scale, self.jitter, self.jitter_p, self.grey_p, self.hflip_p = (crop_scale, jitter, jitter_p,
                                                                                  grey_p, hflip_p)
        self.tta_samples, self.tta_crop, self.score_layer = tta_samples, tta_crop, score_layer
        self.precision, self.device, self.seed, self.progress = precision, device, seed, progress
        self.data_parallel = data_parallel

    # -------------------------------------------------------------------------------------------- fitting
    def _check_settings(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; expected one of {OPTIMIZERS}")
        if self.score_layer not in SCORE_LAYERS:
            raise ValueError(f"unknown score_layer {self.score_layer!r}; expected one of {SCORE_LAYERS}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; expected one of {PRECISIONS}")
        if self.epochs < 1 or self.batch_size < 1 or self.warmup_epochs < 0 or self.tta_samples < 0:
            raise ValueError("epochs and batch_size must be positive, warmup_epochs and tta_samples non-negative")

    def fit(self, X: np.ndarray) -> CSI:
        """Train on the inliers X, keep their feature bank; ``decision_scores_`` are X's leave-one-out scores."""
        self._check_settings()
        images = as_images(X)
        self._check_images(images)
        self.device_ = resolve_device(self.device)
        self.precision_ = resolve_precision(self.precision, self.device_)
        self.augmentation_ = Augmentation(crop_scale=tuple(self.crop_scale), jitter=tuple(self.jitter),
                                          jitter_p=self.jitter_p, grey_p=self.grey_p, hflip_p=0.0)
        self.history_, self.lr_history_ = self._train(images)
        features = self._score_features(images)
        self.bank_ = F.normalize(features, dim=2)
        self.decision_scores_ = -self._normality(features, None)
        return self

    def _check_images(self, images: torch.Tensor) -> None:
        if len(images) < 2:
            raise ValueError("fit needs at least 2 images")

    def _forward(self, net: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The net's outputs in float32 (autocast as ``precision`` says). Not channels-last: with it, ResNet18's
        fp32 backward crashed (SIGSEGV) on AVX2-only PyTorch kernels."""
        with autocast(self.precision_, self.device_):
            return tuple(t.float() for t in net(x))

    def csi_loss(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """L_CSI (Eq. 4) of the images ``x`` (B, C, H, W) with the current network."""
        b = len(x)
        views = two_view_batch(x, self.augmentation_, generator, self.hflip_p)
        z, logits, _ = self._forward(self.net_, views)
        loss = contrastive_loss(z, simclr_labels(b, N_ROTATIONS, 2, device=x.device), self.tau)
        if self.cls_weight:
            loss = loss + self.cls_weight * F.cross_entropy(logits, rotation_targets(b, N_ROTATIONS, 2,
                                                                                      device=x.device))
        return loss

    def _setup(self, images: torch.Tensor) -> None:
        """Networks and optimizers (the subclass adds its own)."""
        self.net_ = CSINet(images.shape[1], self.width, self.projection_dim)
        self.net_.to(self.device_)
        self.optimizer_ = make_optimizer(self.optimizer, self.net_.parameters(), self.lr, self.momentum,
                                         self.weight_decay)

    def _after_step(self, step: int, x: torch.Tensor) -> None:
        """After the loop's F step on the batch ``x`` (the subclass adds its adversarial autoencoder's steps)."""
        self.steps_["F"] += 1

    def _train(self, images: torch.Tensor) -> tuple[list[float], list[float]]:
        """F in the one training loop, as the contrastive detectors train (``train_contrastive``): LARS, the
        learning rate per epoch by ``warmup_cosine``, batches whole (the negatives are the batch), no outer autocast
        (the networks' forward passes autocast themselves, the losses stay float32); the subclass's other networks
        step in the loop's ``on_step_end``. Returns the mean L_CSI and the learning rate of every epoch."""
        shuffle = seed_everything(self.seed)
        self._views = torch.Generator().manual_seed(self.seed + 7919)  # augmentations of every loss
        self.steps_: Counter = Counter()
        self._setup(images)
        history, lrs = train_contrastive(
            self.net_, self.optimizer_, lambda x: self.csi_loss(x, self._views), images, shuffle, epochs=self.epochs,
            batch_size=self.batch_size, lr=self.lr, warmup_epochs=self.warmup_epochs, device=self.device_,
            desc=f"train {type(self).__name__}", progress=self.progress, data_parallel=self.data_parallel,
            on_epoch_start=lambda epoch: self._train_mode(), on_epoch_end=lambda epoch: self._end_epoch(),
            on_step_end=lambda step, batch: self._after_step(step, batch["image"]))
        del self.optimizer_, self._views
        return history, lrs

    def _train_mode(self) -> None:
        self.net_.train()

    def _end_epoch(self) -> None:
        """Hook after every epoch (the subclass averages its loss records)."""

    # -------------------------------------------------------------------------------------------- scoring
    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        z, _, f = self._forward(self.net_, x)
        return z if self.score_layer == "projection" else f

    def _score_features(self, images: torch.Tensor) -> torch.Tensor:
        """(4, N, D): per rotation, each image's feature averaged over the test-time views (not normalised)."""
        self.net_.eval()
        tta = Augmentation(crop_scale=(self.tta_crop, self.tta_crop), jitter=tuple(self.jitter),
                           jitter_p=self.jitter_p, grey_p=self.grey_p, hflip_p=0.0)
        return tta_features(self._embed, images, rotations=range(N_ROTATIONS), samples=self.tta_samples,
                            augmentation=tta, hflip_p=self.hflip_p, seed=self.seed + 104729, device=self.device_)

    def _normality(self, features: torch.Tensor, bank: torch.Tensor | None) -> np.ndarray:
        """sum_k max_m cos(f_k, bank_km) ||f_k||; no bank: the other rows of ``features`` (leave-one-out)."""
        total = torch.zeros(features.shape[1])
        for k in range(len(features)):
            q = features[k].to(self.device_)
            b = None if bank is None else bank[k].to(self.device_)
            total += max_similarity(q, b, similarity="csi").cpu()
        return total.numpy()

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Minus Eq. 11 of X against the training bank (new data: no self-match to leave out)."""
        self._check_fitted("bank_")
        return -self._normality(self._score_features(as_images(X)), self.bank_)



# ------------------------------------------------------------------------------------- adversarial autoencoder
def _sn(module: nn.Module) -> nn.Module:
    return nn.utils.parametrizations.spectral_norm(module)


class SNGenerator(nn.Module):
    """SN-GAN's standard CNN generator (Miyato et al. 2018, Table 3a) with base width w (64 in SN-GAN): h (N, latent)
    -> dense 4x4x8w -> 3 x [deconv 4x4 stride 2, BN, ReLU] (4w, 2w, w channels) -> conv 3x3 -> tanh (32x32)."""

    def __init__(self, latent_dim: int, out_channels: int, width: int = 64):
        super().__init__()
        c = 8 * width
        self.dense = nn.Linear(latent_dim, 16 * c)
        layers: list[nn.Module] = []
        for _ in range(3):
            layers += [nn.ConvTranspose2d(c, c // 2, 4, 2, 1), nn.BatchNorm2d(c // 2), nn.ReLU(inplace=True)]
            c //= 2
        self.body = nn.Sequential(*layers, nn.Conv2d(c, out_channels, 3, 1, 1), nn.Tanh())

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.body(self.dense(h).view(len(h), -1, 4, 4))


class SNEncoder(nn.Module):
    """The encoder E, "symmetric to G": conv 3x3 (w) -> 3 x [conv 4x4 stride 2, BN, LeakyReLU 0.2] (2w, 4w, 8w
    channels, 32 -> 4 pixels) -> dense to the latent code (no output non-linearity)."""

    def __init__(self, in_channels: int, latent_dim: int, width: int = 64):
        super().__init__()
        c = width
        layers: list[nn.Module] = [nn.Conv2d(in_channels, c, 3, 1, 1), nn.LeakyReLU(0.2, inplace=True)]
        for _ in range(3):
            layers += [nn.Conv2d(c, 2 * c, 4, 2, 1), nn.BatchNorm2d(2 * c), nn.LeakyReLU(0.2, inplace=True)]
            c *= 2
        self.body = nn.Sequential(*layers, nn.Flatten(), nn.Linear(16 * c, latent_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class SNDiscriminator(nn.Module):
    """SN-GAN's standard CNN discriminator (Table 3b), spectral norm on every layer, LeakyReLU 0.1: conv 3x3 w,
    conv 4x4/2 w, conv 3x3 2w, conv 4x4/2 2w, conv 3x3 4w, conv 4x4/2 4w, conv 3x3 8w, dense -> one logit (N,)."""

    def __init__(self, in_channels: int, width: int = 64):
        super().__init__()
        w = width
        spec = [(in_channels, w, 3, 1), (w, w, 4, 2), (w, 2 * w, 3, 1), (2 * w, 2 * w, 4, 2), (2 * w, 4 * w, 3, 1),
                (4 * w, 4 * w, 4, 2), (4 * w, 8 * w, 3, 1)]
        layers: list[nn.Module] = []
        for cin, cout, k, s in spec:
            layers += [_sn(nn.Conv2d(cin, cout, k, s, 1)), nn.LeakyReLU(0.1, inplace=True)]
        self.body = nn.Sequential(*layers, nn.Flatten(), _sn(nn.Linear(16 * 8 * w, 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).squeeze(1)


class LatentDiscriminator(nn.Module):
    """D' (not specified by the paper): an MLP latent -> 8w -> 8w -> one logit with LeakyReLU 0.2, as AAE's."""

    def __init__(self, latent_dim: int, width: int = 64):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(latent_dim, 8 * width), nn.LeakyReLU(0.2, inplace=True),
                                  nn.Linear(8 * width, 8 * width), nn.LeakyReLU(0.2, inplace=True),
                                  nn.Linear(8 * width, 1))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.body(h).squeeze(1)


def _bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


AAE_TERMS = ("d", "g_adv", "csi_s", "d_latent", "e_adv", "rec", "lrec", "joint")


class CSISynth(CSI):
    """CSI with contrasting synthetic images (Yu & Chiu, MVA 2021; Algorithm 1, Eqs. 5-10): CSI's feature
    extractor F (all of :class:`CSI`'s settings and its score, Eq. 11) trained together with an adversarial
    autoencoder: generator G (h ~ N(0, I) -> image), encoder E, image discriminator D, latent discriminator D'.

    Algorithm 1, per batch X (``step`` counts batches over all epochs, from 0): one F step on L_CSI(X); and when
    ``step % every == 0`` (N = 5), with ``synthetic_size`` fresh h (default: as many as X has images),
    X~ = G(h), X^ = G(E(X)):
      1. D step on Eq. 7, then one G and E step against it (x~, x^ labelled real: non-saturating loss);
      2. G step on L_CSI-S = L_CSI(G(h)) (Eq. 6), gradients through the frozen F;
      3. D' step on Eq. 9 (prior h real, E(X) fake), then an E step against it;
      4. G and E step on L_REC = ``rec_weight`` * mean((x - x^)^2) - mean cos(z(T1(x)), z(T2(x^))) (Eq. 8, lambda
         100; z = F's projection, T1, T2 ~ CSI's augmentations, F frozen);
      5. E step on L_LREC = mean((E(G(h)) - h)^2) (Eq. 10, G not updated);
      6. F step on L_JOINT = L_CSI(X u X~) (Eq. 5) with the X~ drawn at the start of this block (detached).
    How the synthetic images enter the contrastive batch: exactly as real ones do (Eq. 5 is L_CSI of the union).
    Every synthetic image is one more instance: its four rotations are four more shifted instances, each with its
    own label shared only by its two views (so they are negatives of every real view and of each other), and the
    rotation head is trained on them with their rotation index. They are not given a common "fake" label.
    ``use_encoder=False`` is the paper's ablation "CSI + G" (no E, D'; steps 3-5 dropped, Eq. 7 without x^).

    Settings: Adam lr 2e-4, betas (0.9, 0.999) for G, E, D, D' (the paper's), N = 5, lambda = 100; G and D are
    SN-GAN's standard CNNs (the paper: "follows [SN-GAN]") with base width ``gan_width`` (64) and ``latent_dim``
    128, E mirrors G, D' is an MLP. F keeps CSI's optimizer and schedule (the paper says Adam 2e-4 "for model
    training" and also that most settings follow CSI; we read Adam as the generative model's; ``optimizer="adam",
    lr=2e-4, warmup_epochs=0`` gives the other reading). Images must be 32x32.

    Our choices where the paper says nothing: "plenty" of h = ``synthetic_size``; D is standard BCE (real 1,
    x~ and x^ 0) where Eq. 7's printed signs make D a "fake" detector; the pixel and latent reconstructions are
    means over elements (so lambda 100 weighs a per-pixel MSE); F runs in training mode (batch statistics) in the
    G/E steps; the AAE has no learning-rate schedule. ``steps_`` counts the optimizer steps of each network and
    ``aae_history_`` the per-epoch means of every AAE loss term.
    """

    def __init__(self, *, epochs: int = 1000, batch_size: int = 128, optimizer: str = "lars", lr: float = 1.0,
                 momentum: float = 0.9, weight_decay: float = 1e-6, warmup_epochs: int = 10, tau: float = 0.5,
                 cls_weight: float = 1.0, width: int = 64, projection_dim: int = 128,
                 crop_scale: tuple[float, float] = (0.08, 1.0),
                 jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1), jitter_p: float = 0.8,
                 grey_p: float = 0.2, hflip_p: float = 0.5, tta_samples: int = 10, tta_crop: float = 0.54,
                 score_layer: str = "projection", every: int = 5, synthetic_size: int | None = None,
                 latent_dim: int = 128, gan_width: int = 64, aae_lr: float = 2e-4,
                 aae_betas: tuple[float, float] = (0.9, 0.999), rec_weight: float = 100.0, use_encoder: bool = True,
                 precision: str = "auto", device: str = "auto", seed: int = 0, progress: bool = False,
                 data_parallel: bool = True):
        super().__init__(epochs=epochs, batch_size=batch_size, optimizer=optimizer, lr=lr, momentum=momentum,
                         weight_decay=weight_decay, warmup_epochs=warmup_epochs, tau=tau, cls_weight=cls_weight,
                         width=width, projection_dim=projection_dim, crop_scale=crop_scale, jitter=jitter,
                         jitter_p=jitter_p, grey_p=grey_p, hflip_p=hflip_p, tta_samples=tta_samples,
                         tta_crop=tta_crop, score_layer=score_layer, precision=precision, device=device, seed=seed,
                         progress=progress, data_parallel=data_parallel)
        self.every, self.synthetic_size, self.latent_dim, self.gan_width = every, synthetic_size, latent_dim, gan_width
        self.aae_lr, self.aae_betas, self.rec_weight, self.use_encoder = aae_lr, aae_betas, rec_weight, use_encoder

    def _check_settings(self) -> None:
        super()._check_settings()
        if self.every < 1 or (self.synthetic_size is not None and self.synthetic_size < 1):
            raise ValueError("every and synthetic_size must be positive")

    def _check_images(self, images: torch.Tensor) -> None:
        super()._check_images(images)
        if images.shape[2:] != (32, 32):
            raise ValueError(f"CSISynth's generator makes 32x32 images, got {tuple(images.shape[2:])}")

    def _setup(self, images: torch.Tensor) -> None:
        super()._setup(images)
        c, dev = images.shape[1], self.device_
        self.generator_ = SNGenerator(self.latent_dim, c, self.gan_width).to(dev)
        self.discriminator_ = SNDiscriminator(c, self.gan_width).to(dev)

        def adam(m: nn.Module) -> torch.optim.Adam:
            return torch.optim.Adam(m.parameters(), lr=self.aae_lr, betas=tuple(self.aae_betas))

        self._aae_opt = {"G": adam(self.generator_), "D": adam(self.discriminator_)}
        if self.use_encoder:
            self.encoder_ = SNEncoder(c, self.latent_dim, self.gan_width).to(dev)
            self.latent_discriminator_ = LatentDiscriminator(self.latent_dim, self.gan_width).to(dev)
            self._aae_opt.update(E=adam(self.encoder_), D_latent=adam(self.latent_discriminator_))
        self._noise = torch.Generator().manual_seed(self.seed + 15485863)
        self._records: dict[str, list[float]] = {k: [] for k in AAE_TERMS}
        self.aae_history_: list[dict[str, float]] = []

    def _train_mode(self) -> None:
        super()._train_mode()
        for m in self._aae_modules():
            m.train()

    def _aae_modules(self) -> list[nn.Module]:
        mods = [self.generator_, self.discriminator_]
        return mods + ([self.encoder_, self.latent_discriminator_] if self.use_encoder else [])

    def _step(self, loss: torch.Tensor, *names: str) -> None:
        """Backpropagate ``loss`` and step the optimizers of the networks ``names`` (their gradients zeroed first)."""
        for n in names:
            self._aae_opt[n].zero_grad(set_to_none=True)
        loss.backward()
        for n in names:
            self._aae_opt[n].step()
            self.steps_[n] += 1

    def _record(self, name: str, loss: torch.Tensor) -> None:
        self._records[name].append(float(loss.detach()))

    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        """``n`` synthetic images G(h) (N, C, 32, 32) in [-1, 1], h ~ N(0, I) drawn with ``seed``."""
        self._check_fitted("generator_")
        self.generator_.eval()
        h = torch.randn(n, self.latent_dim, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            return self.generator_(h.to(self.device_)).cpu().numpy()

    def _after_step(self, step: int, x: torch.Tensor) -> None:
        super()._after_step(step, x)
        if step % self.every == 0:
            self._aae_block(x, self._views)

    def _f_step(self, loss: torch.Tensor) -> None:
        """An extra step of F (Eq. 5's joint batch) with the loop's optimizer, at the current learning rate."""
        self.optimizer_.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer_.step()
        self.steps_["F"] += 1

    def _aae_block(self, x: torch.Tensor, generator: torch.Generator) -> None:
        """Algorithm 1's inner block (steps 1-6 of the class docstring)."""
        G, D = self.generator_, self.discriminator_
        h = torch.randn(self.synthetic_size or len(x), self.latent_dim, generator=self._noise).to(self.device_)
        # 1. Eq. 7: D tells real from synthetic and reconstructed images; G and E then fool it
        x_tilde = G(h)
        x_hat = self.generator_(self.encoder_(x)) if self.use_encoder else None
        fakes = [x_tilde] + ([x_hat] if x_hat is not None else [])
        d_loss = _bce(D(x), 1.0) + sum(_bce(D(f.detach()), 0.0) for f in fakes)
        self._step(d_loss, "D")
        self._record("d", d_loss)
        with frozen(D):
            g_loss = sum(_bce(D(f), 1.0) for f in fakes)
            self._step(g_loss, "G", *(["E"] if self.use_encoder else []))
        self._record("g_adv", g_loss)
        x_tilde = x_tilde.detach()  # the X~ of this block, for L_JOINT
        # 2. Eq. 6: G makes images whose CSI loss under F is low
        with frozen(self.net_):
            csi_s = self.csi_loss(G(h), generator)
            self._step(csi_s, "G")
        self._record("csi_s", csi_s)
        if self.use_encoder:
            E, D_latent = self.encoder_, self.latent_discriminator_
            # 3. Eq. 9: D' tells the prior from the codes; E then fools it
            code = E(x)
            dl_loss = _bce(D_latent(h), 1.0) + _bce(D_latent(code.detach()), 0.0)
            self._step(dl_loss, "D_latent")
            self._record("d_latent", dl_loss)
            with frozen(D_latent):
                e_loss = _bce(D_latent(E(x)), 1.0)
                self._step(e_loss, "E")
            self._record("e_adv", e_loss)
            # 4. Eq. 8: pixel reconstruction plus feature agreement of differently augmented x and x^
            x_hat = G(E(x))
            with frozen(self.net_):
                with torch.no_grad():
                    z_real = self._forward(self.net_, self._augment(x, generator))[0]
                z_rec = self._forward(self.net_, self._augment(x_hat, generator))[0]
                rec = self.rec_weight * F.mse_loss(x_hat, x) - F.cosine_similarity(z_real, z_rec, dim=1).mean()
                self._step(rec, "G", "E")
            self._record("rec", rec)
            # 5. Eq. 10: latent reconstruction, E only
            with torch.no_grad():
                synthetic = G(h)
            lrec = F.mse_loss(E(synthetic), h)
            self._step(lrec, "E")
            self._record("lrec", lrec)
        # 6. Eq. 5: an extra F step with the synthetic images in the contrastive batch
        joint = self.csi_loss(torch.cat([x, x_tilde]), generator)
        self._f_step(joint)
        self._record("joint", joint)

    def _augment(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """One random T ~ CSI's augmentations (flip, jitter, grey, resized crop), no rotation."""
        flip = torch.rand(len(x), generator=generator) < self.hflip_p
        return self.augmentation_(flip_images(x, flip), generator)

    def _end_epoch(self) -> None:
        self.aae_history_.append({k: float(np.mean(v)) for k, v in self._records.items() if v})
        self._records = {k: [] for k in AAE_TERMS}

    def _train(self, images: torch.Tensor) -> tuple[list[float], list[float]]:
        out = super()._train(images)
        del self._aae_opt, self._records, self._noise
        for m in self._aae_modules():
            m.eval()
        return out
