"""Contrastive E3Outlier (E3Outlier TPAMI, Sec. 3.6.2, Eqs. 17-22; settings from the supplement, Sec. 5), and the
contrastive parts that CSI and UniCon-HA reuse: one supervised-contrastive loss, the two-view x rotation batch,
batched tensor augmentations and the leave-one-out nearest-neighbour similarity.

Training (Eq. 19): each batch of B images is expanded by the four simple rotations (B' = O_c(B|1..4), Eq. 18 with
B'), every rotated copy gets two independent random augmentations, and the 2*4*B views go through the feature
extractor f (a CIFAR ResNet18, 512-d penultimate features) and the projection head g. The loss is the SimCLR loss
over the expanded batch (positives: the two views of the same image under the same rotation; every other view,
other rotations of the same image included, is a negative) plus ``cls_weight`` times the cross-entropy of a linear
rotation classifier on f (L_cls). Score (Eqs. 20-22): per rotation, the maximum similarity of a sample's f with the
other samples' f under the same rotation (leave-one-out, j != i), divided by the mean ||f|| of that rotation;
summed over the rotations. The score is transductive: ``decision_function(X)`` compares X's samples with each other.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from image_od.data.samples import ArrayData
from image_od.detector import OutlierDetector
from image_od.engine.precision import PRECISIONS, autocast, resolve_precision
from image_od.engine.training import TrainSettings, predict, resolve_device, seed_everything, train, warmup_cosine
from image_od.networks.backbones import make_backbone

N_ROTATIONS = 4  # the simple rotation set T_SR of the supplement: 0, 90, 180, 270 degrees
GREY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R 601 luma, as image_od.operations.generative
SIMILARITIES = ("inner", "csi", "cosine")
SIMILARITY_BLOCK = 1024  # rows per block of the similarity matrix


# ------------------------------------------------------------------------------------------------------ the loss
def contrastive_loss(features: torch.Tensor, labels: torch.Tensor, tau: float = 0.5,
                     weights: torch.Tensor | None = None,
                     positive_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Supervised-contrastive loss (SupCon "L_out", Khosla et al. 2020) of (N, D) projections, L2-normalised here.

    Samples with the same label are positives of each other, every other sample is a negative, and a sample is
    never its own positive or negative. For anchor i with positives P(i) and s = cosine similarity:
    ``loss_i = -1/|P(i)| sum_{p in P(i)} log( exp(s_ip/tau) / sum_{a != i} exp(s_ia/tau) )``;
    the result is the mean of loss_i over the anchors that have a positive (anchors without one, or whose positives
    all have ``positive_weights`` 0, are left out; if no anchor is left, a zero that keeps the graph is returned).

    Labellings: SimCLR (Eq. 18; one positive, the other view) = ``simclr_labels``; UniCon-HA's aggregation = all
    inlier views share one label, each virtual outlier's two views their own. E3Outlier's Eq. 17 puts the sum over
    positives inside the log (SupCon "L_in"); with a single positive, as in Eqs. 18-19, both forms are identical.

    ``weights`` (N,): per-anchor weights, the result is ``sum_i w_i loss_i / sum_i w_i`` over anchors with
    positives. ``positive_weights`` (N,): each sample's weight when it is a positive, so that
    ``loss_i = -sum_p v_p log p_ip / sum_p v_p``; with ``weights_i = w_i * sum_{p in P(i)} w_p`` and
    ``positive_weights = w`` this is a pair-weighted loss ``sum_{i,p} w_i w_p (-log p_ip) / sum_{i,p} w_i w_p``
    (UniCon-HA's soft aggregation). Computed in float32 at least (half-precision inputs are upcast).
    """
    if features.ndim != 2 or labels.shape != features.shape[:1]:
        raise ValueError(f"expected features (N, D) and labels (N,), got {tuple(features.shape)} and "
                         f"{tuple(labels.shape)}")
    if features.dtype in (torch.float16, torch.bfloat16):
        features = features.float()
    z = F.normalize(features, dim=1)
    n = len(z)
    self_mask = torch.eye(n, dtype=torch.bool, device=z.device)
    logits = (z @ z.T / tau).masked_fill(self_mask, float("-inf"))
    log_prob = (logits - torch.logsumexp(logits, dim=1, keepdim=True)).masked_fill(self_mask, 0.0)
    positive = (labels[:, None] == labels[None, :]) & ~self_mask
    pair_weight = positive.to(z.dtype)
    if positive_weights is not None:
        pair_weight = pair_weight * positive_weights.to(z)[None, :]
    mass = pair_weight.sum(1)
    has_positive = positive.any(1) & (mass > 0)
    if not has_positive.any():
        return features.sum() * 0.0
    per_anchor = -(pair_weight * log_prob).sum(1)[has_positive] / mass[has_positive]
    if weights is None:
        return per_anchor.mean()
    w = weights.to(z)[has_positive]
    return (w * per_anchor).sum() / w.sum()


def simclr_labels(n_images: int, n_rotations: int = 1, n_views: int = 2,
                  device: torch.device | str | None = None) -> torch.Tensor:
    """SimCLR labels of a batch laid out as [view][rotation][image] (sample v*R*B + r*B + b): the views of image b
    under rotation r share the label r*B + b, so they are each other's positives and everything else a negative."""
    return torch.arange(n_rotations * n_images, device=device).repeat(n_views)


def rotation_targets(n_images: int, n_rotations: int = N_ROTATIONS, n_views: int = 2,
                     device: torch.device | str | None = None) -> torch.Tensor:
    """The rotation index of each sample of a [view][rotation][image] batch (the L_cls targets)."""
    return torch.arange(n_rotations, device=device).repeat_interleave(n_images).repeat(n_views)


def rotate_batch(x: torch.Tensor, n_rotations: int = N_ROTATIONS) -> torch.Tensor:
    """(B, C, H, W) -> (R*B, C, H, W) laid out [rotation][image]; rotation r turns by r*90 degrees
    counter-clockwise (``torch.rot90``, as ``image_od.operations.generative``)."""
    return torch.cat([torch.rot90(x, r, dims=(2, 3)) for r in range(n_rotations)])


# ----------------------------------------------------------------------------------------------- augmentations
def _grey(u: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) -> (N, 1, H, W) luma."""
    w = torch.tensor(GREY_WEIGHTS, dtype=u.dtype, device=u.device).view(1, 3, 1, 1)
    return (u * w).sum(1, keepdim=True)


def rgb_to_hsv(u: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) RGB in [0, 1] -> HSV in [0, 1] (hue as a fraction of a turn), torchvision's formulas."""
    r, g, b = u.unbind(1)
    maxc, minc = u.max(1).values, u.min(1).values
    flat = maxc == minc
    ones = torch.ones_like(maxc)
    chroma = maxc - minc
    s = chroma / torch.where(flat, ones, maxc)
    div = torch.where(flat, ones, chroma)
    rc, gc, bc = (maxc - r) / div, (maxc - g) / div, (maxc - b) / div
    h = ((maxc == r) * (bc - gc) + ((maxc == g) & (maxc != r)) * (2.0 + rc - bc)
         + ((maxc != g) & (maxc != r)) * (4.0 + gc - rc))
    return torch.stack((torch.fmod(h / 6.0 + 1.0, 1.0), s, maxc), 1)


def hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_hsv`."""
    h, s, v = hsv.unbind(1)
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    sector = (i.to(torch.int64) % 6).unsqueeze(1) == torch.arange(6, device=hsv.device).view(1, 6, 1, 1)
    p = (v * (1.0 - s)).clamp(0, 1)
    q = (v * (1.0 - s * f)).clamp(0, 1)
    t = (v * (1.0 - s * (1.0 - f))).clamp(0, 1)
    table = ((v, q, p, p, t, v), (t, v, v, q, p, p), (p, p, t, v, v, q))
    return torch.stack([(sector * torch.stack(c, 1)).sum(1) for c in table], 1)


def train_contrastive(net: nn.Module, optimizer: torch.optim.Optimizer,
                      loss_fn: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, shuffle: torch.Generator,
                      *, epochs: int, batch_size: int, lr: float, warmup_epochs: int, device: torch.device, desc: str,
                      progress: bool, data_parallel: bool = True, **hooks: Callable) -> tuple[list[float], list[float]]:
    """The contrastive detectors' training in the one training loop: shuffled batches of ``images``,
    ``loss_fn(batch)``, the caller's optimizer, the learning rate set per epoch by ``warmup_cosine``, batches kept
    whole under torchrun (the negatives are the batch); ``hooks`` (``on_epoch_start``, ``on_epoch_end``,
    ``on_step_end``) go to the loop. Returns the mean loss and the learning rate of every epoch."""
    settings = TrainSettings(epochs=epochs, batch_size=batch_size, lr=lr, lr_schedule="warmup_cosine",
                             warmup_epochs=warmup_epochs, progress=progress, split_batches=False,
                             data_parallel=data_parallel)
    history = train(net, lambda model, batch: loss_fn(batch["image"]), ArrayData({"image": images}), settings,
                    device=device, generator=shuffle, desc=desc, optimizer=optimizer, **hooks)
    return history, [lr * warmup_cosine(epoch, epochs, warmup_epochs) for epoch in range(epochs)]


@dataclass(frozen=True)
class Augmentation:
    """Random augmentation applied per image to a whole batch of tensors (on their device), images in [-1, 1].

    In order: random resized crop back to the input size (crop area fraction ~ U(``crop_scale``), aspect ratio
    log-uniform in ``crop_ratio``, position uniform; bilinear, via one affine grid), horizontal flip with
    ``hflip_p``, colour jitter with ``jitter_p`` (brightness, contrast, saturation factors ~ U(1-j, 1+j), hue shift
    ~ U(-j, j), in that fixed order, with torchvision's formulas), then greyscale with ``grey_p``. On grey images
    (C=1) only brightness and contrast act. The random draws come from a CPU ``torch.Generator`` (deterministic
    on every device).

    Deviations from torchvision's RandomResizedCrop / ColorJitter: a crop side that would exceed the image is
    clamped to it (instead of 10 redraws and a centre-crop fallback), the crop box is continuous (not whole
    pixels), and the jitter order is fixed (torchvision draws a random order).
    """

    crop_scale: tuple[float, float] = (0.2, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1)
    jitter_p: float = 0.8
    grey_p: float = 0.2
    hflip_p: float = 0.0

    def sample(self, n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Per-image parameters: crop box (w, h: side fractions; cx, cy: centre in [-1, 1] coordinates), flip,
        jitter factors (identity where jitter is not applied) and the greyscale flag."""
        u = torch.rand(n, 11, generator=generator, dtype=torch.float64)
        lo, hi = self.crop_scale
        area = lo + (hi - lo) * u[:, 0]
        log_lo, log_hi = math.log(self.crop_ratio[0]), math.log(self.crop_ratio[1])
        ratio = torch.exp(log_lo + (log_hi - log_lo) * u[:, 1])
        w, h = torch.sqrt(area * ratio).clamp(max=1.0), torch.sqrt(area / ratio).clamp(max=1.0)
        bj, cj, sj, hj = self.jitter
        jitter = u[:, 5] < self.jitter_p

        def factor(j: float, v: torch.Tensor) -> torch.Tensor:
            return torch.where(jitter, max(0.0, 1 - j) + (1 + j - max(0.0, 1 - j)) * v, 1.0)

        params = {"w": w, "h": h, "cx": (1 - w) * (2 * u[:, 2] - 1), "cy": (1 - h) * (2 * u[:, 3] - 1),
                  "flip": u[:, 4] < self.hflip_p, "brightness": factor(bj, u[:, 6]),
                  "contrast": factor(cj, u[:, 7]), "saturation": factor(sj, u[:, 8]),
                  "hue": torch.where(jitter, hj * (2 * u[:, 9] - 1), 0.0), "grey": u[:, 10] < self.grey_p}
        return {k: v.float() if v.is_floating_point() else v for k, v in params.items()}

    @staticmethod
    def apply(x: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """Apply sampled parameters to (N, C, H, W) images in [-1, 1]."""
        p = {k: v.to(x.device) for k, v in params.items()}
        n = len(x)
        theta = torch.zeros(n, 2, 3, dtype=x.dtype, device=x.device)
        theta[:, 0, 0] = torch.where(p["flip"], -p["w"], p["w"]).to(x.dtype)
        theta[:, 0, 2] = p["cx"].to(x.dtype)
        theta[:, 1, 1] = p["h"].to(x.dtype)
        theta[:, 1, 2] = p["cy"].to(x.dtype)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        u = (F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False) + 1) / 2
        view = (n, 1, 1, 1)
        u = (u * p["brightness"].view(view)).clamp(0, 1)
        mean = (u if u.shape[1] == 1 else _grey(u)).mean(dim=(1, 2, 3), keepdim=True)
        c = p["contrast"].view(view)
        u = (c * u + (1 - c) * mean).clamp(0, 1)
        if u.shape[1] == 3:
            s = p["saturation"].view(view)
            u = (s * u + (1 - s) * _grey(u)).clamp(0, 1)
            hsv = rgb_to_hsv(u)
            hsv = torch.cat([torch.remainder(hsv[:, :1] + p["hue"].view(view), 1.0), hsv[:, 1:]], 1)
            shifted = hsv_to_rgb(hsv)
            u = torch.where((p["hue"] != 0).view(view), shifted, u)
            u = torch.where(p["grey"].view(view), _grey(u).expand_as(u), u)
        return u * 2 - 1

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self.apply(x, self.sample(len(x), generator))


# -------------------------------------------------------------------------------------------------- networks
class ContrastiveNet(nn.Module):
    """f (a backbone returning (rotation logits, features)) and the projection head g of the supplement: a
    three-layer fully connected net with 128 hidden and 128 output nodes,
    Linear(d, 128)-ReLU-Linear(128, 128)-ReLU-Linear(128, 128) (no batch norm: the paper names none).
    ``forward(x) -> (z = g(f(x)), rotation logits, f(x))``."""

    def __init__(self, backbone: nn.Module, hidden: int = 128, out: int = 128):
        super().__init__()
        self.backbone = backbone
        d = backbone.fc.in_features
        self.head = nn.Sequential(nn.Linear(d, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, hidden),
                                  nn.ReLU(inplace=True), nn.Linear(hidden, out))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits, f = self.backbone(x)
        return self.head(f), logits, f


# -------------------------------------------------------------------------------------------- score


def max_similarity(features: torch.Tensor, bank: torch.Tensor | None = None, similarity: str = "inner",
                   chunk: int = SIMILARITY_BLOCK) -> torch.Tensor:
    """For each row i of ``features`` (N, D), the maximum similarity to the rows j of ``bank`` (M, D); with no bank,
    to the other rows of ``features`` (j != i: leave-one-out, the transductive protocol).

    ``inner``: f_i . f_j (E3Outlier Eq. 20); ``csi``: f_i . f_j / ||f_j|| = cos_ij ||f_i|| (CSI's s_con);
    ``cosine``: cos_ij (UniCon-HA Eq. 10). Computed in float32 in blocks of ``chunk`` rows.
    """
    if similarity not in SIMILARITIES:
        raise ValueError(f"unknown similarity {similarity!r}; expected one of {SIMILARITIES}")
    q = features.float()
    b = q if bank is None else bank.float()
    if bank is None and len(q) < 2:
        raise ValueError("leave-one-out similarity needs at least 2 samples")
    if similarity in ("csi", "cosine"):
        b = F.normalize(b, dim=1)
    if similarity == "cosine":
        q = F.normalize(q, dim=1)
    out = []
    for start in range(0, len(q), chunk):
        s = q[start:start + chunk] @ b.T
        if bank is None:
            rows = torch.arange(len(s), device=s.device)
            s[rows, rows + start] = float("-inf")
        out.append(s.max(1).values)
    return torch.cat(out)


# ------------------------------------------------------------------------------------------------- detector
class ContrastiveE3Outlier(OutlierDetector):
    """Contrastive E3Outlier. ``X``: float array (N, C, 32, 32) in [-1, 1] (see ``protocol.to_model_input``).

    Paper settings (supplement Sec. 5, CIFAR-10): ResNet18 f, 3-layer projection head g (128 hidden, 128 out),
    augmentations = random colour jitter + random crop + random RGB-to-grey, batch expanded by the 4 simple
    rotations, tau = 0.5, SGD with a 10-epoch warm-up then cosine decay, lr 0.1 and 100 epochs (the paper uses
    lr 0.03 / 50 epochs for SVHN and 0.1 / 200 epochs for CIFAR-100). ``cls_weight`` = 1 is Eq. 19's plain sum.

    Our choices where the paper says nothing: ``batch_size`` 128 images per step (= 1024 views; CSI's global
    batch), momentum 0.9, ``weight_decay`` 5e-4; the warm-up is linear and the lr is set once per epoch
    (:func:`warmup_cosine`); augmentation strengths are SimCLR's CIFAR ones (colour jitter 0.4/0.4/0.4/0.1 with
    p 0.8, grey p 0.2) with RandomResizedCrop scale (0.2, 1) (SimCLR/CSI use 0.08: a 9x9 pixel crop of a 32x32
    image, often empty on zero-padded 28x28 or 8x8 digits) and no flip (the paper lists none), see
    :class:`Augmentation`. Weight decay applies to every parameter (as SimCLR's CIFAR code). Each rotated copy
    is augmented independently (Eq. 18 applied to B', as CSI's code): rotate first, then augment. L_cls is a
    linear rotation classifier on f, over all 8B views.

    Score (``score_similarity``): ``inner`` (default) is Eq. 20 as printed, the raw inner product of ResNet
    features f (not the projections z); ``csi`` is CSI's cos x ||f_i||; ``cosine`` the plain cosine (no norm
    normalisation). Eq. 21 prints Z = (mean ||f||)^-1 and divides by Z, which would *multiply* by the mean norm;
    we read it as CSI's per-rotation weight and *divide* by the mean ||f|| of the scored set under each rotation
    (within a rotation a positive constant does not change the ranking; it only weighs the rotations in Eq. 22's
    sum). Scoring uses the un-augmented images, batch norm in eval mode; ``decision_function`` is minus the
    normality. Caveat (measured): the raw inner product rewards large feature norms, and an untrained or briefly
    trained net gives high-energy images (noise, unusual patterns) the largest norms, so at tiny budgets ``inner``
    (and ``csi``) can rank such outliers as the most normal while ``cosine`` does not; training makes the norms
    informative (tests/test_contrastive.py: digits AUROC 0.47 untrained -> 0.98 after 6 epochs).

    Training: the one training loop (``image_od.engine.training.train``, through :func:`train_contrastive`) with
    this detector's SGD, the per-epoch warm-up/cosine schedule, and whole batches on every rank under torchrun (a
    contrastive loss over a rank's share of a batch would not be the global batch's: the negatives differ).
    ``precision``: ``auto`` (bf16 autocast where the device runs it natively), ``bf16``, ``fp32``.
    """

    def __init__(self, *, epochs: int = 100, batch_size: int = 128, lr: float = 0.1, momentum: float = 0.9,
                 weight_decay: float = 5e-4, warmup_epochs: int = 10, tau: float = 0.5, cls_weight: float = 1.0,
                 backbone: str = "resnet18", crop_scale: tuple[float, float] = (0.2, 1.0),
                 jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1), jitter_p: float = 0.8,
                 grey_p: float = 0.2, hflip_p: float = 0.0, score_similarity: str = "inner",
                 precision: str = "auto", device: str = "auto", seed: int = 0, progress: bool = False,
                 data_parallel: bool = True):
        self.epochs, self.batch_size, self.lr, self.momentum = epochs, batch_size, lr, momentum
        self.weight_decay, self.warmup_epochs, self.tau, self.cls_weight = weight_decay, warmup_epochs, tau, cls_weight
        self.backbone = backbone
        self.crop_scale, self.jitter, self.jitter_p, self.grey_p, self.hflip_p = (crop_scale, jitter, jitter_p,
                                                                                  grey_p, hflip_p)
        self.score_similarity, self.precision = score_similarity, precision
        self.device, self.seed, self.progress = device, seed, progress
        self.data_parallel = data_parallel

    # ----------------------------------------------------------------------------------------------- fitting
    def fit(self, X: np.ndarray) -> ContrastiveE3Outlier:
        """Train f, g and the rotation head on X (Eq. 19); ``decision_scores_`` are X's own scores."""
        self._check_settings()
        self.device_ = resolve_device(self.device)
        self.precision_ = resolve_precision(self.precision, self.device_)
        self.augmentation_ = Augmentation(crop_scale=tuple(self.crop_scale), jitter=tuple(self.jitter),
                                          jitter_p=self.jitter_p, grey_p=self.grey_p, hflip_p=self.hflip_p)
        images = torch.as_tensor(np.asarray(X), dtype=torch.float32)
        if images.ndim != 4:
            raise ValueError(f"expected images (N, C, H, W), got shape {tuple(images.shape)}")
        self.net_, self.history_, self.lr_history_ = self._train(images)
        self.decision_scores_ = self.decision_function(X)
        return self

    def _check_settings(self) -> None:
        if self.score_similarity not in SIMILARITIES:
            raise ValueError(f"unknown score_similarity {self.score_similarity!r}; expected one of {SIMILARITIES}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; expected one of {PRECISIONS}")
        if self.epochs < 1 or self.batch_size < 1 or self.warmup_epochs < 0:
            raise ValueError("epochs and batch_size must be positive and warmup_epochs non-negative")

    def _autocast(self):
        return autocast(self.precision_, self.device_)

    def _forward(self, net: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(z, rotation logits, f) in float32. Not channels-last: with it, ResNet18's fp32 backward crashed
        (SIGSEGV) on AVX2-only PyTorch kernels (``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2``)."""
        with self._autocast():
            return tuple(t.float() for t in net(x))

    def _loss(self, net: nn.Module, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """L_CSS (Eq. 19) of a batch of images (B, C, H, W): SimCLR over the rotation-expanded two-view batch plus
        ``cls_weight`` times the rotation cross-entropy."""
        b = len(x)
        rotated = rotate_batch(x, N_ROTATIONS)
        views = torch.cat([self.augmentation_(rotated, generator), self.augmentation_(rotated, generator)])
        z, logits, _ = self._forward(net, views)
        contrastive = contrastive_loss(z, simclr_labels(b, N_ROTATIONS, 2, device=x.device), self.tau)
        if self.cls_weight == 0:
            return contrastive
        return contrastive + self.cls_weight * F.cross_entropy(logits, rotation_targets(b, N_ROTATIONS, 2,
                                                                                         device=x.device))

    def _train(self, images: torch.Tensor) -> tuple[nn.Module, list[float], list[float]]:
        shuffle = seed_everything(self.seed)
        augment = torch.Generator().manual_seed(self.seed + 7919)
        net = ContrastiveNet(make_backbone(self.backbone, images.shape[1], N_ROTATIONS))
        net.to(self.device_)
        optimizer = torch.optim.SGD(net.parameters(), lr=self.lr, momentum=self.momentum,
                                    weight_decay=self.weight_decay)
        history, lrs = train_contrastive(net, optimizer, lambda x: self._loss(net, x, augment), images, shuffle,
                                         epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
                                         warmup_epochs=self.warmup_epochs, device=self.device_,
                                         desc=f"train contrastive {self.backbone}", progress=self.progress,
                                         data_parallel=self.data_parallel)
        return net, history, lrs

    # ----------------------------------------------------------------------------------------------- scoring
    @torch.no_grad()
    def features(self, X: np.ndarray) -> torch.Tensor:
        """f of every image under every rotation, un-augmented: (4, N, D) float32 on the CPU."""
        self._check_fitted("net_")
        self.net_.eval()
        data = ArrayData({"image": torch.as_tensor(np.asarray(X), dtype=torch.float32)})
        return torch.stack([torch.from_numpy(predict(
            lambda batch, r=r: self._forward(self.net_, torch.rot90(batch["image"], r, dims=(2, 3)))[2],
            data, device=self.device_)) for r in range(N_ROTATIONS)])

    def _normality(self, X: np.ndarray) -> np.ndarray:
        """Eq. 22 (higher = more normal): the sum over rotations of the leave-one-out maximum similarity among X's
        samples, divided by the rotation's mean ||f|| (Eq. 21) except for the ``cosine`` similarity."""
        total = torch.zeros(len(X))
        for f in self.features(X):
            f = f.to(self.device_)
            s = max_similarity(f, similarity=self.score_similarity)
            if self.score_similarity != "cosine":
                s = s / f.norm(dim=1).mean().clamp_min(1e-12)
            total += s.cpu()
        return total.numpy()

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Minus Eq. 22: X's samples compared with each other (the transductive score of the paper)."""
        return -self._normality(X)

