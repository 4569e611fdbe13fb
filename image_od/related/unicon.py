"""UniCon-HA: unilaterally aggregated contrastive learning with hierarchical augmentation (Wang et al., ICCV 2023,
Eqs. 4-10), on the shared contrastive parts of :mod:`image_od.e3outlier.contrastive` and CSI's flip/rotate/augment batch and
test-time ensemble (:mod:`image_od.related.csi`).

UniCLR (Eqs. 4-5) is the one shared supervised-contrastive loss with a label trick (:func:`unicon_labels`): every
inlier view (rotation 0) carries one common label, so all inlier views are positives of each other, and each
virtual outlier (a 90/180/270-degree rotation of an inlier) carries a label of its own shared only by its two views.
Soft aggregation (Eqs. 6-7) re-weights the inlier views through ``contrastive_loss``'s ``weights`` and
``positive_weights`` (:func:`soft_aggregation_weights`).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from image_od.detector import OutlierDetector
from image_od.e3outlier.contrastive import (
    N_ROTATIONS,
    Augmentation,
    contrastive_loss,
    max_similarity,
    rotation_targets,
    simclr_labels,
    train_contrastive,
)
from image_od.engine.precision import PRECISIONS, autocast, resolve_precision
from image_od.engine.training import resolve_device, seed_everything
from image_od.networks.backbones import ResNet18, _BasicBlock, _init_conv_bn
from image_od.related.csi import (
    OPTIMIZERS,
    as_images,
    make_optimizer,
    tta_features,
    two_view_batch,
)

SOFT_AGGREGATIONS = ("pair", "literal", "none")
STAGES = (1, 2, 3, 4)


# ------------------------------------------------------------------------------------------------------- loss
def unicon_labels(n_images: int, n_rotations: int = N_ROTATIONS, n_views: int = 2,
                  device: torch.device | str | None = None) -> torch.Tensor:
    """UniCLR labels of a [view][rotation][image] batch (as ``simclr_labels``): the views of the un-rotated images
    (the inliers) all get label -1; the two views of rotated copy (r, b), r >= 1, share the label r*B + b."""
    labels = simclr_labels(n_images, n_rotations, n_views, device=device)
    inlier = rotation_targets(n_images, n_rotations, n_views, device=device) == 0
    return labels.masked_fill(inlier, -1)


def soft_weights(z: torch.Tensor, tau_w: float = 0.5) -> torch.Tensor:
    """Eq. 7: the weight of each of the n inlier views z (n, D) (L2-normalised here),
    ``w_i = sum_{j != i} exp(z_i.z_j / tau_w) / sum_k sum_{j != k} exp(z_k.z_j / tau_w)``; sums to 1, low for a
    view far from the other inliers. Computed in the log domain (no overflow at small ``tau_w``), no gradient."""
    z = F.normalize(z.detach().float(), dim=1)
    logits = (z @ z.T / tau_w).masked_fill(torch.eye(len(z), dtype=torch.bool, device=z.device), float("-inf"))
    return torch.softmax(torch.logsumexp(logits, dim=1), dim=0)


def soft_aggregation_weights(w: torch.Tensor, inlier: torch.Tensor,
                             form: str = "pair") -> tuple[torch.Tensor | None, torch.Tensor]:
    """``contrastive_loss``'s (``weights``, ``positive_weights``) that apply the soft weights ``w`` (one per inlier
    view, in batch order) to the inlier anchors of a UniCLR batch (``inlier``: (N,) mask); virtual-outlier anchors
    keep weight 1 (SA acts on inliers only).

    ``pair`` (default): the inlier part of Eq. 4 becomes ``n sum_{a, b in in, b != a} w_a w_b (-log p_ab) / S``,
    ``S = sum_a w_a sum_{b != a} w_b``, n the number of inlier views: a positive pair counts by the product of its
    two weights (the paper's reading of Eq. 6: "a positive pair receives more attention only if w_x and w_x' are
    both sufficiently large"), and with equal weights this is exactly UniCLR. It is the anchor weight
    ``n w_a s_a / S`` (s_a = sum_{b != a} w_b) with positive weights w, so the total stays Eq. 4's mean over all
    N views. ``literal``: Eq. 6 as printed with detached weights: w_x w_x' inside the log only adds a constant
    and w_x cancels against the normaliser, leaving a per-anchor mean over positives weighted by w_x' (the
    constant is dropped)."""
    positive_weights = torch.ones(len(inlier), dtype=w.dtype, device=w.device)
    positive_weights[inlier] = w
    if form == "literal":
        return None, positive_weights
    if form != "pair":
        raise ValueError(f"unknown soft aggregation form {form!r}; expected 'pair' or 'literal'")
    others = w.sum() - w
    weights = torch.ones_like(positive_weights)
    weights[inlier] = len(w) * w * others / (w * others).sum()
    return weights, positive_weights


def stage_augmentation(strength: float, crop_min: float = 0.08,
                       jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1), jitter_p: float = 0.8,
                       grey_p: float = 0.2) -> Augmentation:
    """T_i of strength s in (0, 1]: crop area ~ U(1 - (1 - crop_min) s, 1), colour jitter ``jitter`` * s (with
    probability ``jitter_p``), grey with probability ``grey_p`` * s; s = 1 is SimCLR's CIFAR augmentation. The
    flip is drawn apart (before the rotation, see ``csi.two_view_batch``), at the same rate for every stage."""
    return Augmentation(crop_scale=(1 - (1 - crop_min) * strength, 1.0), jitter=tuple(j * strength for j in jitter),
                        jitter_p=jitter_p, grey_p=grey_p * strength, hflip_p=0.0)


# ---------------------------------------------------------------------------------------------------- network
def _projection_head(channels: int, stage: int, out: int) -> nn.Module:
    """g_i: (4 - i) x [conv 3x3 stride 2, BN, ReLU] doubling the channels (the maps then have the shape of res4's),
    then global average pooling and CSI's projection MLP Linear(c, c)-ReLU-Linear(c, out)."""
    layers: list[nn.Module] = []
    c = channels
    for _ in range(4 - stage):
        layers += [nn.Conv2d(c, 2 * c, 3, 2, 1, bias=False), nn.BatchNorm2d(2 * c), nn.ReLU(inplace=True)]
        c *= 2
    head = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, c), nn.ReLU(inplace=True),
                         nn.Linear(c, out))
    _init_conv_bn(head)
    return head


class UniConNet(nn.Module):
    """The CIFAR ResNet18 (``backbones.ResNet18``; its ``fc`` is an optional rotation classifier on f) with a
    projection head g_i after each res_i in ``stages``. ``project(x, i) = g_i(res_i(x))`` runs the network up to
    the end of stage i only; ``forward(x) -> (rotation logits, f)`` is the backbone's (f: res4 pooled)."""

    def __init__(self, in_channels: int, width: int = 64, stages: Sequence[int] = (2, 3, 4),
                 projection_dim: int = 128):
        super().__init__()
        self.backbone = ResNet18(in_channels, N_ROTATIONS, width)
        blocks = [i for i, m in enumerate(self.backbone.features) if isinstance(m, _BasicBlock)]
        self.stage_end = {s: blocks[2 * s - 1] + 1 for s in STAGES}  # 2 blocks per stage
        self.heads = nn.ModuleDict({str(s): _projection_head(width * 2 ** (s - 1), s, projection_dim)
                                    for s in stages})

    def project(self, x: torch.Tensor, stage: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(z_i, f): the stage's projection and the pooled maps of its last block."""
        maps = self.backbone.features[:self.stage_end[stage]](x)
        return self.heads[str(stage)](maps), maps.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.backbone(x)


# --------------------------------------------------------------------------------------------------- detector
class UniConHA(OutlierDetector):
    """UniCon-HA (Wang et al., ICCV 2023). ``X``: float (N, C, H, W) in [-1, 1]; one-class: fit on inliers.

    Training (Eq. 9): ``L_all = 1/4 sum_{i in stages} lambda_i L_UniCLR(D_in u D_vout; T_i)``. Per step, B inlier
    images and their 90/180/270-degree rotations (the virtual outliers, 1:3 as the paper keeps them) get two views
    each for every stage i, drawn with that stage's augmentation T_i (:func:`stage_augmentation` of strength
    ``strengths[i]``; stronger for deeper stages), and go through res_1..res_i and the head g_i (Eq. 8): one
    forward pass per stage. L_UniCLR is ``contrastive_loss`` with :func:`unicon_labels` (tau 0.5). At the stages
    in ``sa_stages`` (res4 only, as the paper), the inlier anchors are soft-aggregated with the Eq. 7 weights of
    that stage's inlier projections (tau_w 0.5, detached), in the ``soft_aggregation`` form (see
    :func:`soft_aggregation_weights`). ``cls_weight`` > 0 adds a rotation classifier on f (Table 6's "Rot Cls."
    rows; the final model has none).

    Score (Eq. 10): ``max_m cos(f(x), f(x_m))`` over the training images x_m, f the pooled res4 features, with
    CSI's test-time ensemble (``tta_samples`` views of flip, jitter, grey and a resized crop of fixed area
    ``tta_crop``): the L2-normalised features of the views are averaged, and the maximum cosine is taken against
    the bank of training features built the same way. ``decision_function`` is minus that (higher = anomalous);
    ``decision_scores_`` (and ``fit_score``) score the fitted images against the *other* fitted images (the
    self-match, cosine 1, is excluded: the transductive protocol).

    Paper settings: ResNet18 from scratch, SGD lr 0.01 with one cosine cycle, 2,048 epochs, tau = tau_w = 0.5,
    rotations as virtual outliers, HA on stages 2-3-4 (Table 6's best rows), SA at res4 only, no rotation
    classifier, augmentations random resized crop, colour jitter, horizontal flip and grey of increasing strength.
    The rest is in the paper's unavailable supplement; our choices (the spec's proposals, from CSI's code where
    the paper follows CSI): strengths s_i = i/4 (T_4 = SimCLR's CIFAR augmentation: crop area (0.08, 1), jitter
    0.4/0.4/0.4/0.1 with p 0.8, grey 0.2; T_i scales the crop's lower bound, the jitter and the grey rate by s_i),
    flip p 0.5 at every stage (before the rotation, as CSI's code), lambda_i = 1 with Eq. 9's 1/4 kept, heads g_i
    as :func:`_projection_head` (CSI's 2-layer MLP to 128 after the down-sampling convolutions), 32 inlier images
    per step (CSI's per-GPU batch; 256 views), momentum 0.9 and weight decay 1e-4, the cosine set per epoch
    (``training.warmup_cosine`` without warm-up), the pair form of SA (Eq. 6 as printed is degenerate, see
    :func:`soft_aggregation_weights`), 10 test-time views at crop area 0.54 (CSI's evaluation). ``width`` < 64
    and ``optimizer`` ``lars`` (CSI's, see :class:`image_od.related.csi.LARS`) or ``adam`` are for small budgets and tests:
    with SGD at 0.01 the loss barely moves in a few dozen steps.

    Training: the one training loop (``train_contrastive``, as ``ContrastiveE3Outlier``): the learning rate set every
    epoch, batches kept whole under torchrun, and the loss drawing its augmentations from a generator of its own.
    """

    def __init__(self, *, epochs: int = 2048, batch_size: int = 32, optimizer: str = "sgd", lr: float = 0.01,
                 momentum: float = 0.9, weight_decay: float = 1e-4, tau: float = 0.5, tau_w: float = 0.5,
                 stages: tuple[int, ...] = (2, 3, 4), lambdas: tuple[float, ...] = (1.0, 1.0, 1.0),
                 strengths: tuple[float, ...] = (0.5, 0.75, 1.0), soft_aggregation: str = "pair",
                 sa_stages: tuple[int, ...] = (4,), cls_weight: float = 0.0, width: int = 64,
                 projection_dim: int = 128, crop_min: float = 0.08,
                 jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1), jitter_p: float = 0.8,
                 grey_p: float = 0.2, hflip_p: float = 0.5, tta_samples: int = 10, tta_crop: float = 0.54,
                 precision: str = "auto", device: str = "auto", seed: int = 0, progress: bool = False,
                 data_parallel: bool = True):
        self.epochs, self.batch_size, self.optimizer, self.lr = epochs, batch_size, optimizer, lr
        self.momentum, self.weight_decay = momentum, weight_decay
        self.tau, self.tau_w, self.stages, self.lambdas, self.strengths = tau, tau_w, stages, lambdas, strengths
        self.soft_aggregation, self.sa_stages, self.cls_weight = soft_aggregation, sa_stages, cls_weight
        self.width, self.projection_dim, self.crop_min = width, projection_dim, crop_min
        self.jitter, self.jitter_p, self.grey_p, self.hflip_p = jitter, jitter_p, grey_p, hflip_p
        self.tta_samples, self.tta_crop = tta_samples, tta_crop
        self.precision, self.device, self.seed, self.progress = precision, device, seed, progress
        self.data_parallel = data_parallel

    # -------------------------------------------------------------------------------------------- fitting
    def _check_settings(self) -> None:
        stages = tuple(self.stages)
        if not stages or any(s not in STAGES for s in stages) or len(set(stages)) != len(stages):
            raise ValueError(f"stages must be distinct values of {STAGES}, got {self.stages!r}")
        if len(self.lambdas) != len(stages) or len(self.strengths) != len(stages):
            raise ValueError("lambdas and strengths need one value per stage")
        if any(not 0 < s <= 1 for s in self.strengths):
            raise ValueError(f"strengths must lie in (0, 1], got {self.strengths!r}")
        if any(s not in stages for s in self.sa_stages):
            raise ValueError(f"sa_stages {self.sa_stages!r} must be among stages {stages!r}")
        if self.soft_aggregation not in SOFT_AGGREGATIONS:
            raise ValueError(f"unknown soft_aggregation {self.soft_aggregation!r}; expected {SOFT_AGGREGATIONS}")
        if self.cls_weight and 4 not in stages:
            raise ValueError("the rotation classifier (cls_weight > 0) reads stage 4, which stages must include")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; expected one of {OPTIMIZERS}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; expected one of {PRECISIONS}")
        if self.epochs < 1 or self.batch_size < 1 or self.tta_samples < 0:
            raise ValueError("epochs and batch_size must be positive and tta_samples non-negative")

    def fit(self, X: np.ndarray) -> UniConHA:
        """Train on the inliers X and keep their feature bank; ``decision_scores_`` are X's leave-one-out scores."""
        self._check_settings()
        images = as_images(X)
        if len(images) < 2:
            raise ValueError("fit needs at least 2 images")
        self.device_ = resolve_device(self.device)
        self.precision_ = resolve_precision(self.precision, self.device_)
        self.augmentations_ = [stage_augmentation(s, self.crop_min, tuple(self.jitter), self.jitter_p, self.grey_p)
                               for s in self.strengths]
        self.net_, self.history_, self.lr_history_ = self._train(images)
        self.bank_ = self._score_features(images)
        self.decision_scores_ = -max_similarity(self.bank_.to(self.device_), similarity="cosine").cpu().numpy()
        return self

    def _autocast(self):
        return autocast(self.precision_, self.device_)

    def loss(self, net: UniConNet, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """L_all (Eq. 9) of a batch of inlier images x (B, C, H, W), plus ``cls_weight`` x the rotation loss."""
        b = len(x)
        labels = unicon_labels(b, device=x.device)
        inlier = rotation_targets(b, N_ROTATIONS, 2, device=x.device) == 0
        total = x.new_zeros(())
        for stage, lam, augmentation in zip(self.stages, self.lambdas, self.augmentations_):
            views = two_view_batch(x, augmentation, generator, self.hflip_p)
            with self._autocast():
                z, f = net.project(views, stage)
            z, f = z.float(), f.float()
            weights = positive_weights = None
            if stage in self.sa_stages and self.soft_aggregation != "none":
                w = soft_weights(z[inlier], self.tau_w)
                weights, positive_weights = soft_aggregation_weights(w, inlier, self.soft_aggregation)
            total = total + lam * contrastive_loss(z, labels, self.tau, weights, positive_weights)
            if stage == 4 and self.cls_weight:
                cls = F.cross_entropy(net.backbone.fc(f), rotation_targets(b, N_ROTATIONS, 2, device=x.device))
        total = total / 4
        return total + self.cls_weight * cls if self.cls_weight else total

    def _train(self, images: torch.Tensor) -> tuple[UniConNet, list[float], list[float]]:
        shuffle = seed_everything(self.seed)
        augment = torch.Generator().manual_seed(self.seed + 7919)
        net = UniConNet(images.shape[1], self.width, tuple(self.stages), self.projection_dim)
        net.to(self.device_)
        optimizer = make_optimizer(self.optimizer, net.parameters(), self.lr, self.momentum, self.weight_decay)
        history, lrs = train_contrastive(net, optimizer, lambda x: self.loss(net, x, augment), images, shuffle,
                                         epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, warmup_epochs=0,
                                         device=self.device_, desc="train UniCon-HA", progress=self.progress,
                                         data_parallel=self.data_parallel)
        return net, history, lrs

    # -------------------------------------------------------------------------------------------- scoring
    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        with self._autocast():
            return self.net_(x)[1].float()

    def _score_features(self, images: torch.Tensor) -> torch.Tensor:
        """(N, D): each image's L2-normalised f, averaged over the test-time views (then normalised by the
        cosine)."""
        self.net_.eval()
        tta = Augmentation(crop_scale=(self.tta_crop, self.tta_crop), jitter=tuple(self.jitter),
                           jitter_p=self.jitter_p, grey_p=self.grey_p, hflip_p=0.0)
        return tta_features(self._embed, images, rotations=[0], samples=self.tta_samples, augmentation=tta,
                            hflip_p=self.hflip_p, seed=self.seed + 104729, device=self.device_, normalise=True)[0]

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Minus Eq. 10: the maximum cosine of X's features to the training bank (new data)."""
        self._check_fitted("bank_")
        q = self._score_features(as_images(X)).to(self.device_)
        return -max_similarity(q, self.bank_.to(self.device_), similarity="cosine").cpu().numpy()

