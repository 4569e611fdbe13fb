"""ADIB and ADRA: transfer-based semantic anomaly detection (Deecke, Ruff, Vandermeulen, Bilen, ICML 2021), and
the ResNet26 classifier pre-training that gives them their theta0 (``tools/pretrain_classifier.py``).

Both methods train a binary classifier f = sigmoid(logit) with binary cross-entropy, target 0 for the normal
images X and 1 for an outlier-exposure (OE) corpus (``fit(X, exposure=X_oe)``; Eq. 1 as intended: the printed
signs make it unbounded, the official code uses ``BCEWithLogitsLoss``), starting from pre-trained weights theta0:

- :class:`ADIB` (Eq. 2) adds the L2-SP penalty Omega(theta) = alpha ||theta - theta0|| (alpha = 1e-2) that pulls
  the weights toward theta0. The paper prints ||.||^2; the official code (VICO-UoE/TransferAD, ``train.py``)
  adds ``alpha * torch.norm(theta - theta0, 2)``, the norm itself, and the issue writes it unsquared too. The
  default is the code's (``squared=False``); ``squared=True`` is the paper's formula. theta is, as in the code,
  the concatenation of the weights of every 3x3 convolution (``penalty_scope="conv3x3"``: the stem and the block
  convolutions, not BN or the head); ``penalty_scope="backbone"`` penalises every pre-trained parameter (all
  convolutions and BN affine parameters; our option). ``weights=None`` is the from-scratch baseline (random init,
  no penalty: there is no theta0; Table 4 row a1) and ``alpha=0`` plain fine-tuning (row a2, "SAD with pretrained
  weights").
- :class:`ADRA` (Eq. 3) freezes every 3x3 convolution and trains parallel 1x1 residual adapters
  (``y = BN(conv3x3(x) + conv1x1(x))``, Rebuffi et al.), all BN affine parameters (running statistics keep
  updating) and the new head, without Omega (as the code; the paper says "only the V are learned").

Network (the official ``nn/resnet.py``, whose state-dict key names we keep, so the authors' ImageNet-32
``resnet26.pth`` loads as it is when a user has it): stem conv3x3-BN-ReLU (64 channels), 3 stages of 4
post-activation basic blocks with 64/128/256 channels (strides 1/2/2), a parameter-free shortcut (2x2 average
pooling, zero channels appended) where the shape changes, BN-ReLU, global average pooling and a linear head with
one logit. ``image_od.networks.backbones`` does not fit: its blocks use 1x1-conv projection shortcuts, a Sequential body
with other key names and no adapters, so the network is written here. ``widths`` and ``blocks`` (per stage; 4 =
ResNet26) shrink it for tests and CPUs. Inputs always have 3 channels: grey images are replicated (as the
pretraining does), so one weights file serves grey and colour data.

Training (paper Sec. 5 and the code): SGD lr 0.1, momentum 0.9, weight decay 1e-4 on every trained parameter,
100 epochs, lr x0.1 at 60% and 80% of training; each step takes 64 normal + 64 OE images (BCE is the mean over
the 128), augmented by random crop with 4-pixel padding and horizontal flip (both sets, as the code). Score:
sigmoid(logit) in eval mode, higher = more anomalous, computed in float64 (float32 rounds logits above ~17 to
exactly 1, which would tie the most anomalous images).

Our choices where paper and code say nothing or cannot apply here:
- theta0 comes from a LOCAL file (``weights=PATH``, read with ``safe_io.load_tensors``; nothing is downloaded; the
  ImageNet-32 weights cannot be had here); ``tools/pretrain_classifier.py`` makes one by supervised
  classification of a labelled dataset. The head ``linears.*`` of the file is dropped (a new 1-logit head keeps
  PyTorch's default init, as the code); adapters missing from the file keep the code's He-normal init (not zero).
- inputs are X in [-1, 1] as given (the code normalises with CIFAR's mean/std: ``input_norm="cifar"`` does that,
  for weights trained that way); crop padding is black (-1, torchvision pads 0 before normalising).
- an epoch is ceil(N / 64) steps over the shuffled normal images (the last batch smaller, as the code's
  ``drop_last=False``; a last batch of one joins the one before, as everywhere in the shared loop), each with the next 64 images of a shuffled OE stream that is reshuffled when fewer than 64
  are left (the code's ``zip`` with ``drop_last=True``; identical whenever the OE holds >= 64 images per step, as
  CIFAR-100 does, and still defined for a small OE).
- the lr steps are set per step: x0.1 from step round(0.6 T) and again from round(0.8 T) of the T = epochs x
  steps-per-epoch steps (with 100 epochs exactly the code's ``MultiStepLR([60, 80])``; finer for short budgets).
- the OE images are converted to X's channel count before training (colour -> grey by ITU-R 601 luma, grey ->
  colour by replication), so that colour alone cannot separate a colour OE from grey normal data.
- ``precision="auto"``: bfloat16 autocast where the device runs it natively (``image_od.engine.precision``); the
  penalty and the loss are computed in float32.

Training loop: the one training loop (``image_od.engine.training.train``) with ``lr_schedule="step"``, the caller's
SGD over the trainable parameters (ADRA trains a subset), and the loss drawing each step's OE batch from its own
stream. The history is the sample-weighted mean loss of each epoch (the loop's definition; our own loop before
averaged the steps). No checkpoints; one process.
"""
from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from image_od.data.samples import ArrayData
from image_od.detector import OutlierDetector, image_array
from image_od.engine.precision import PRECISIONS, autocast, resolve_precision
from image_od.engine.training import (
    TrainSettings,
    lr_history,
    make_optimizer,
    predict,
    resolve_device,
    seed_everything,
    train,
)
from image_od.files.safe_io import load_tensors, state_dict_in, state_dict_mismatch

__all__ = ["ADIB", "ADRA", "CIFAR_MEAN", "CIFAR_STD", "PENALTY_SCOPES", "ResNet26", "crop_flip", "l2sp_penalty",
           "load_pretrained", "match_channels", "oe_bce", "penalty_parameters", "pretrain_resnet26", "sidecar_path"]

GREY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R 601 luma, as image_od.operations.generative
CIFAR_MEAN = (0.491373, 0.482353, 0.446667)  # the official code's Normalize
CIFAR_STD = (0.247059, 0.243529, 0.261569)
INPUT_NORMS = ("none", "cifar")
PENALTY_SCOPES = ("conv3x3", "backbone")
SCORES = ("sigmoid", "logit")
HEAD = "linears."
ADAPTER_PARTS = ("pre_ra.", ".ra1.", ".ra2.")


# -------------------------------------------------------------------------------------------------- network
def _is_adapter(key: str) -> bool:
    return key.startswith("pre_ra.") or any(part in key for part in ADAPTER_PARTS[1:])


class _Block(nn.Module):
    """Post-activation basic block, optionally with parallel 1x1 residual adapters ``ra1``/``ra2`` summed before
    BN; the shortcut (stride or width change) is a 2x2 average pool (stride 2) with zero channels appended."""

    def __init__(self, cin: int, planes: int, stride: int, adapters: bool):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.ra1 = nn.Conv2d(cin, planes, 1, stride, 0, bias=False) if adapters else None
        self.ra2 = nn.Conv2d(planes, planes, 1, 1, 0, bias=False) if adapters else None
        self.stride, self.extra = stride, planes - cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv1(x)
        if self.ra1 is not None:
            y = y + self.ra1(x)
        y = F.relu(self.bn1(y))
        z = self.conv2(y)
        if self.ra2 is not None:
            z = z + self.ra2(y)
        z = self.bn2(z)
        skip = x
        if self.stride > 1:
            skip = F.avg_pool2d(skip, self.stride)
        if self.extra:
            skip = F.pad(skip, (0, 0, 0, 0, 0, self.extra))
        return F.relu(z + skip)


class ResNet26(nn.Module):
    """The ResNet26 of the official ADIB/ADRA code for 32x32 inputs (see the module docstring), depth 6 x
    ``blocks`` + 2; ``adapters=True`` adds the parallel 1x1 adapters (``pre_ra``, ``ra1``, ``ra2``) of ADRA.
    ``forward(x) -> (N, n_outputs)`` logits; ``features(x)`` the (N, widths[2]) pooled features."""

    def __init__(self, n_outputs: int = 1, widths: Sequence[int] = (64, 128, 256), blocks: int = 4,
                 adapters: bool = False, in_channels: int = 3):
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if len(widths) != 3 or min(widths) < 1 or widths[1] < widths[0] or widths[2] < widths[1]:
            raise ValueError(f"ResNet26 widths must be 3 positive, non-decreasing channel counts, got {widths}")
        if blocks < 1 or n_outputs < 1:
            raise ValueError(f"blocks and n_outputs must be positive, got {blocks} and {n_outputs}")
        self.widths, self.blocks, self.adapters = widths, blocks, adapters
        self.pre_conv = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.pre_ra = nn.Conv2d(in_channels, widths[0], 1, 1, 0, bias=False) if adapters else None
        self.pre_bn = nn.BatchNorm2d(widths[0])
        c = widths[0]
        for i, (planes, stride) in enumerate(zip(widths, (1, 2, 2)), start=1):
            layer = nn.ModuleList()
            for j in range(blocks):
                layer.append(_Block(c, planes, stride if j == 0 else 1, adapters))
                c = planes
            setattr(self, f"layer{i}", layer)
        self.end_bn_relu = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(inplace=True))
        self.linears = nn.Linear(c, n_outputs)
        for m in self.modules():  # the code's init; the Linear keeps PyTorch's default
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / (m.kernel_size[0] * m.kernel_size[1] * m.out_channels)))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pre_conv(x) if self.pre_ra is None else self.pre_conv(x) + self.pre_ra(x)
        x = F.relu(self.pre_bn(x))
        for layer in (self.layer1, self.layer2, self.layer3):
            for block in layer:
                x = block(x)
        return F.adaptive_avg_pool2d(self.end_bn_relu(x), 1).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linears(self.features(x))

    def conv3x3_weights(self) -> list[nn.Parameter]:
        """The weights of every 3x3 convolution (the stem's first), the parameters the code's L2-SP acts on."""
        return [m.weight for m in self.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]


# ---------------------------------------------------------------------------------------------- losses etc.
def oe_bce(logits: torch.Tensor, n_normal: int) -> torch.Tensor:
    """Binary cross-entropy of a batch whose first ``n_normal`` logits are normal images (target 0) and the rest
    outlier-exposure images (target 1), averaged over the whole batch (``BCEWithLogitsLoss``)."""
    logits = logits.reshape(-1).float()
    targets = torch.zeros_like(logits)
    targets[n_normal:] = 1.0
    return F.binary_cross_entropy_with_logits(logits, targets)


def l2sp_penalty(params: Sequence[torch.Tensor], reference: Sequence[torch.Tensor], alpha: float,
                 squared: bool = False) -> torch.Tensor:
    """alpha ||theta - theta0||_2 (``squared=False``, the official code) or alpha ||theta - theta0||_2^2 (the paper's
    Eq. for ADIB), theta = the concatenation of ``params``, theta0 = of ``reference`` (float32). The unsquared
    norm's gradient at theta = theta0 is 0 (PyTorch's subgradient), so the first step is defined."""
    if len(params) != len(reference) or not params:
        raise ValueError(f"need equally many (> 0) parameters and references, got {len(params)} and {len(reference)}")
    diff = torch.cat([(p.float() - r.float()).reshape(-1) for p, r in zip(params, reference)])
    return alpha * (diff.square().sum() if squared else torch.linalg.vector_norm(diff))


def penalty_parameters(net: ResNet26, scope: str = "conv3x3") -> list[nn.Parameter]:
    """The parameters L2-SP acts on: every 3x3 conv weight (``conv3x3``, the code), or every parameter except the
    head and the adapters (``backbone``: all conv weights and BN affine parameters)."""
    if scope == "conv3x3":
        return net.conv3x3_weights()
    if scope == "backbone":
        return [p for k, p in net.named_parameters() if not k.startswith(HEAD) and not _is_adapter(k)]
    raise ValueError(f"unknown penalty_scope {scope!r}; expected one of {PENALTY_SCOPES}")


def crop_flip(x: torch.Tensor, padding: int, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """Per image: a random crop of the original size from the image padded by ``padding`` black (-1) pixels, then
    (``flip``) a horizontal flip with probability 1/2 (torchvision's RandomCrop(padding) + RandomHorizontalFlip);
    draws from the CPU ``generator``."""
    n, _, h, w = x.shape
    if padding > 0:
        offsets = torch.randint(0, 2 * padding + 1, (2, n), generator=generator).to(x.device)
        padded = F.pad(x, (padding,) * 4, value=-1.0).permute(0, 2, 3, 1)
        rows = offsets[0][:, None] + torch.arange(h, device=x.device)
        cols = offsets[1][:, None] + torch.arange(w, device=x.device)
        x = padded[torch.arange(n, device=x.device)[:, None, None], rows[:, :, None], cols[:, None, :]]
        x = x.permute(0, 3, 1, 2)
    if flip:
        flips = (torch.rand(n, generator=generator) < 0.5).to(x.device).view(n, 1, 1, 1)
        x = torch.where(flips, x.flip(3), x)
    return x.contiguous()


def match_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """(N, C, H, W) images with C in (1, 3) -> ``channels`` (1 or 3): grey replicated, colour to ITU-R 601 luma."""
    if x.shape[1] == channels:
        return x
    if x.shape[1] == 1 and channels == 3:
        return x.expand(-1, 3, -1, -1)
    if x.shape[1] == 3 and channels == 1:
        w = torch.tensor(GREY_WEIGHTS, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return (x * w).sum(1, keepdim=True)
    raise ValueError(f"cannot convert images with {x.shape[1]} channels to {channels}")


def _as_images(X: Any, what: str = "X") -> torch.Tensor:
    """``X`` (``detector.image_array``: C = 1 or 3, values in [-1, 1]) as a float32 tensor."""
    x = image_array(X, what, channels=(1, 3))
    return torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).float()


class _Input(nn.Module):
    """The network's input transform: 3 channels (grey replicated), optionally CIFAR-normalised."""

    def __init__(self, norm: str):
        super().__init__()
        self.norm = norm
        self.register_buffer("mean", torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(CIFAR_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = match_channels(x, 3)
        return ((x + 1) / 2 - self.mean) / self.std if self.norm == "cifar" else x


# -------------------------------------------------------------------------------------------------- weights
def sidecar_path(path: str | Path) -> Path:
    """The JSON description written beside a weights file by ``tools/pretrain_classifier.py``: ``PATH.json``."""
    return Path(str(path) + ".json")


def _describe(state: Mapping[str, torch.Tensor]) -> str:
    """The widths and blocks a state_dict was made with, where they can be read off."""
    try:
        widths = tuple(int(state[k].shape[0]) for k in ("pre_conv.weight", "layer2.0.conv1.weight",
                                                        "layer3.0.conv1.weight"))
        blocks = len({k.split(".")[1] for k in state if k.startswith("layer1.") and k.endswith(".conv1.weight")})
        return f"; the file holds widths={widths}, blocks={blocks}, {int(state['pre_conv.weight'].shape[1])} " \
               f"input channels"
    except (KeyError, IndexError):
        return ""


def load_pretrained(net: ResNet26, path: str | Path) -> dict[str, list[str]]:
    """Load the pre-trained weights of the local file ``path`` into ``net`` (in place), dropping the file's head
    ``linears.*``. Missing keys are allowed only for the head, the adapters (when ``net`` has them) and BN batch
    counters; unexpected keys or shape mismatches raise ValueError naming the file. Returns what was not loaded."""
    if path is None:
        raise ValueError("no pre-trained weights given: pass weights=PATH, a local ResNet26 state_dict made by "
                         "tools/pretrain_classifier.py (nothing is downloaded)")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pre-trained weights file {path} not found; make one with "
                                f"'python tools/pretrain_classifier.py --dataset ... --out {path}'")
    given = {k: v for k, v in state_dict_in(load_tensors(path, map_location="cpu"), path, "ResNet26").items()
             if not k.startswith(HEAD)}
    mismatch = state_dict_mismatch(given, net.state_dict(), lambda k: k.startswith(HEAD) or _is_adapter(k))
    if mismatch:
        raise ValueError(f"{path}: not the weights of this ResNet26 (widths={net.widths}, blocks={net.blocks}, "
                         f"3 input channels{', with adapters' if net.adapters else ''}): {mismatch}"
                         f"{_describe(given)}")
    result = net.load_state_dict(given, strict=False)
    return {"not_loaded": list(result.missing_keys)}


def _read_sidecar(path: str | Path | None) -> dict | None:
    if path is None or not sidecar_path(path).is_file():
        return None
    try:
        return json.loads(sidecar_path(path).read_text())
    except (OSError, ValueError):
        return None


def _check_common(epochs: int, batch_size: int, lr: float, milestones: Sequence[float], gamma: float,
                  input_norm: str, precision: str, widths: Sequence[int]) -> None:
    if epochs < 1 or batch_size < 1 or lr <= 0:
        raise ValueError(f"epochs, batch_size and lr must be positive, got {epochs}, {batch_size}, {lr}")
    if any(not 0 <= m <= 1 for m in milestones) or not 0 < gamma <= 1:
        raise ValueError(f"milestones must be fractions of training in [0, 1] and gamma in (0, 1], got "
                         f"{tuple(milestones)} and {gamma}")
    if input_norm not in INPUT_NORMS:
        raise ValueError(f"unknown input_norm {input_norm!r}; expected one of {INPUT_NORMS}")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {PRECISIONS}")
    if len(tuple(widths)) != 3:
        raise ValueError(f"widths must be 3 channel counts, got {widths}")


def pretrain_resnet26(images: np.ndarray, labels: np.ndarray, *, epochs: int = 30, batch_size: int = 128,
                      lr: float = 0.1, momentum: float = 0.9, weight_decay: float = 5e-4,
                      milestones: Sequence[float] = (0.6, 0.8), gamma: float = 0.1, augment: bool = True,
                      widths: Sequence[int] = (64, 128, 256), blocks: int = 4, input_norm: str = "none",
                      precision: str = "auto", seed: int = 0, device: str = "auto", progress: bool = False,
                      data_parallel: bool = True) -> tuple[ResNet26, dict]:
    """Supervised classification pre-training of a :class:`ResNet26` (no adapters), the theta0 of ADIB/ADRA.

    ``images`` (N, C, 32, 32) in [-1, 1]; ``labels`` (N,) class indices 0..K-1. Cross-entropy, SGD with the same
    step schedule and crop/flip augmentation as ADIB; weight decay 5e-4 (our choice: the usual CIFAR setting).
    Returns the network (on the CPU, eval mode; its head has K outputs) and ``{"history", "train_accuracy",
    "seconds"}`` (accuracy of the final network on its un-augmented training images)."""
    _check_common(epochs, batch_size, lr, milestones, gamma, input_norm, precision, widths)
    x = _as_images(images, "images")
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    if y.shape != (len(x),) or y.min() < 0:
        raise ValueError(f"labels must be (N,) = ({len(x)},) non-negative class indices, got {tuple(y.shape)}")
    n_classes = int(y.max()) + 1
    if n_classes < 2:
        raise ValueError("pre-training needs at least 2 classes")
    start = time.perf_counter()
    shuffle = seed_everything(seed)
    aug = torch.Generator().manual_seed(seed + 7919)
    dev = resolve_device(device)
    prec = resolve_precision(precision, dev)
    net = ResNet26(n_classes, widths, blocks).to(dev)
    prep = _Input(input_norm).to(dev)
    if dev.type == "cpu":
        net = net.to(memory_format=torch.channels_last)

    def loss_fn(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        xb = batch["image"]
        if augment:
            xb = crop_flip(xb, 4, True, aug)
        xb = prep(xb)
        if dev.type == "cpu":
            xb = xb.contiguous(memory_format=torch.channels_last)
        with autocast(prec, dev):
            logits = model(xb).float()
        return F.cross_entropy(logits, batch["label"])

    settings = TrainSettings(epochs=epochs, batch_size=batch_size, optimizer="sgd", lr=lr, momentum=momentum,
                             weight_decay=weight_decay, lr_schedule="step", milestones=tuple(milestones), gamma=gamma,
                             progress=progress, data_parallel=data_parallel)
    history = train(net, loss_fn, ArrayData({"image": x, "label": y}), settings, device=dev, generator=shuffle,
                    desc=f"pretrain ResNet26 on {n_classes} classes")
    net.eval()
    with torch.no_grad():
        def fn(batch):
            with autocast(prec, dev):
                return net(prep(batch["image"])).float().argmax(1)
        pred = predict(fn, ArrayData({"image": x}), device=dev)
    accuracy = float((torch.from_numpy(pred) == y).float().mean())
    return net.cpu().to(memory_format=torch.contiguous_format), {
        "history": history, "train_accuracy": accuracy, "seconds": time.perf_counter() - start}


# ------------------------------------------------------------------------------------------------ detectors
class _TransferAD(OutlierDetector):
    """The shared machinery of ADIB and ADRA (see the module docstring)."""

    adapters = False  # ADRA: parallel 1x1 adapters, frozen 3x3 convolutions
    needs = ("pre-trained weights", "an outlier-exposure corpus")


    def _check_settings(self) -> None:
        _check_common(self.epochs, self.batch_size, self.lr, self.milestones, self.gamma, self.input_norm,
                      self.precision, self.widths)
        if self.exposure_batch_size < 1 or self.crop_padding < 0:
            raise ValueError(f"exposure_batch_size must be positive and crop_padding >= 0, got "
                             f"{self.exposure_batch_size} and {self.crop_padding}")
        if self.score not in SCORES:
            raise ValueError(f"unknown score {self.score!r}; expected one of {SCORES}")

    def _alpha(self) -> float:  # ADRA: no penalty
        return 0.0

    def _squared(self) -> bool:
        return False

    def _penalty_scope(self) -> str:  # what ``drift_`` measures for ADRA (its frozen 3x3 weights)
        return "conv3x3"

    def _network(self) -> ResNet26:
        """The initial network: theta0 from ``weights`` (or random), the head new; 3x3 convs frozen for ADRA."""
        net = ResNet26(1, self.widths, self.blocks, adapters=self.adapters)
        self.pretraining_ = None
        if self.weights is not None:
            load_pretrained(net, self.weights)
            self.pretraining_ = _read_sidecar(self.weights)
        if self.adapters:
            for p in net.conv3x3_weights():
                p.requires_grad_(False)
        return net

    def fit(self, X: Any, exposure: Any = None) -> _TransferAD:
        """Train on the normal images ``X`` (target 0) against the outlier-exposure images ``exposure`` (target 1),
        both (N, C, 32, 32) in [-1, 1]; ``decision_scores_`` are X's own scores (the transductive protocol)."""
        self._check_settings()
        name = type(self).__name__
        if exposure is None:
            raise ValueError(f"{name} needs an outlier-exposure corpus: fit(X, exposure=X_oe), images disjoint "
                             f"from the normal class (e.g. another dataset)")
        x = _as_images(X, "X")
        oe = match_channels(_as_images(exposure, "exposure"), x.shape[1])
        if oe.shape[2:] != x.shape[2:]:
            raise ValueError(f"exposure images are {tuple(oe.shape[2:])}, X images {tuple(x.shape[2:])}")
        shuffle = seed_everything(self.seed)
        aug = torch.Generator().manual_seed(self.seed + 7919)
        oe_shuffle = torch.Generator().manual_seed(self.seed + 104729)
        self.device_ = resolve_device(self.device)
        self.precision_ = resolve_precision(self.precision, self.device_)
        dev = self.device_
        net = self._network().to(dev)
        if dev.type == "cpu":
            net = net.to(memory_format=torch.channels_last)
        penalised = penalty_parameters(net, self._penalty_scope())
        theta0 = [p.detach().clone() for p in penalised]
        alpha = self._alpha() if self.weights is not None else 0.0
        self.input_ = _Input(self.input_norm).to(dev)
        oe_dev = oe.to(dev)
        trainable = [p for p in net.parameters() if p.requires_grad]
        self.n_trainable_ = sum(p.numel() for p in trainable)
        oe_batch = min(self.exposure_batch_size, len(oe))
        stream = {"order": torch.empty(0, dtype=torch.long), "pos": 0}

        def next_oe() -> torch.Tensor:  # the next OE batch of a shuffled stream (drop_last, reshuffled)
            if stream["pos"] + oe_batch > len(stream["order"]):
                stream["order"], stream["pos"] = torch.randperm(len(oe), generator=oe_shuffle), 0
            idx = stream["order"][stream["pos"]:stream["pos"] + oe_batch]
            stream["pos"] += oe_batch
            return idx

        def loss_fn(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
            normal = batch["image"]
            xb = torch.cat([normal, oe_dev[next_oe().to(dev)]])
            if self.augment:
                xb = crop_flip(xb, self.crop_padding, self.hflip, aug)
            xb = self.input_(xb)
            if dev.type == "cpu":
                xb = xb.contiguous(memory_format=torch.channels_last)
            with autocast(self.precision_, dev):
                logits = model(xb).float()
            loss = oe_bce(logits, len(normal))
            if alpha > 0:
                loss = loss + l2sp_penalty(penalised, theta0, alpha, self._squared())
            return loss

        settings = TrainSettings(epochs=self.epochs, batch_size=self.batch_size, optimizer="sgd", lr=self.lr,
                                 momentum=self.momentum, weight_decay=self.weight_decay, lr_schedule="step",
                                 milestones=tuple(self.milestones), gamma=self.gamma, progress=self.progress,
                                 data_parallel=self.data_parallel)
        data = ArrayData({"image": x})
        self.history_ = train(net, loss_fn, data, settings, device=dev, generator=shuffle,
                              optimizer=make_optimizer(trainable, settings), desc=f"train {name}")
        self.lr_history_ = lr_history(settings, len(data))
        with torch.no_grad():
            self.drift_ = float(torch.linalg.vector_norm(torch.cat([
                (p.float() - r.float()).reshape(-1) for p, r in zip(penalised, theta0)])))
        self.net_ = net.eval()
        self.decision_scores_ = self.decision_function(x)
        return self

    @torch.no_grad()
    def logits(self, X: Any) -> np.ndarray:
        """The network's logit of every image (eval mode), float32."""
        self._check_fitted("net_")
        self.net_.eval()
        dev = self.device_

        def fn(batch):
            xb = self.input_(batch["image"])
            if dev.type == "cpu":
                xb = xb.contiguous(memory_format=torch.channels_last)
            with autocast(self.precision_, dev):
                return self.net_(xb).float().reshape(-1)

        return predict(fn, ArrayData({"image": _as_images(X, "X")}), device=dev,
                       progress=self.progress)

    def decision_function(self, X: Any) -> np.ndarray:
        """sigmoid(logit) in float64 (``score="sigmoid"``, the paper) or the logit itself (``"logit"``, the same
        ranking); higher = more anomalous."""
        logits = self.logits(X).astype(np.float64)
        return logits if self.score == "logit" else 1.0 / (1.0 + np.exp(-logits))


class ADIB(_TransferAD):
    """Anomaly Detection with an Inductive Bias (Deecke et al. 2021, Eq. 2): OE binary classification fine-tuned
    from theta0 with the L2-SP penalty ``alpha`` ||theta - theta0|| (``squared=True``: the paper's squared norm)
    on the 3x3 conv weights (``penalty_scope``). ``weights``: a local ResNet26 state_dict (theta0);
    ``weights=None`` trains from scratch without penalty, ``alpha=0`` fine-tunes without it (the two baselines).
    ``fit(X, exposure=X_oe)``. After fit: ``net_``, ``history_`` (mean loss per epoch), ``lr_history_`` (per
    step), ``drift_`` (final ||theta - theta0|| over the penalised parameters; from the random init when
    ``weights=None``), ``n_trainable_``,
    ``pretraining_`` (the weights file's JSON sidecar, if any), ``decision_scores_``."""

    def __init__(self, *, weights: str | None = None, alpha: float = 1e-2, squared: bool = False,
                 penalty_scope: str = "conv3x3", epochs: int = 100, batch_size: int = 64,
                 exposure_batch_size: int = 64, lr: float = 0.1, momentum: float = 0.9, weight_decay: float = 1e-4,
                 milestones: tuple[float, ...] = (0.6, 0.8), gamma: float = 0.1, augment: bool = True,
                 crop_padding: int = 4, hflip: bool = True, widths: tuple[int, int, int] = (64, 128, 256),
                 blocks: int = 4, input_norm: str = "none", score: str = "sigmoid", precision: str = "auto",
                 seed: int = 0, device: str = "auto", progress: bool = False, data_parallel: bool = True):
        self.weights, self.alpha, self.squared, self.penalty_scope = weights, alpha, squared, penalty_scope
        self.epochs, self.batch_size, self.exposure_batch_size = epochs, batch_size, exposure_batch_size
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        self.milestones, self.gamma = milestones, gamma
        self.augment, self.crop_padding, self.hflip = augment, crop_padding, hflip
        self.widths, self.blocks, self.input_norm, self.score = widths, blocks, input_norm, score
        self.precision, self.seed, self.device, self.progress = precision, seed, device, progress
        self.data_parallel = data_parallel

    def _check_settings(self) -> None:
        super()._check_settings()
        if self.alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {self.alpha}")
        if self.penalty_scope not in PENALTY_SCOPES:
            raise ValueError(f"unknown penalty_scope {self.penalty_scope!r}; expected one of {PENALTY_SCOPES}")

    def _alpha(self) -> float:
        return float(self.alpha)

    def _squared(self) -> bool:
        return bool(self.squared)

    def _penalty_scope(self) -> str:
        return self.penalty_scope


class ADRA(_TransferAD):
    """Anomaly Detection with Residual Adaptation (Deecke et al. 2021, Eq. 3): the OE binary classifier with every
    3x3 convolution of theta0 frozen; parallel 1x1 adapters, BN affine parameters and the head are trained, no
    penalty (the official code). ``weights`` (a local ResNet26 state_dict) is required: freezing random
    convolutions is not the method. Attributes after fit as :class:`ADIB` (``drift_`` is 0: the 3x3 weights do
    not move)."""

    adapters = True

    def __init__(self, *, weights: str | None = None, epochs: int = 100, batch_size: int = 64,
                 exposure_batch_size: int = 64, lr: float = 0.1, momentum: float = 0.9, weight_decay: float = 1e-4,
                 milestones: tuple[float, ...] = (0.6, 0.8), gamma: float = 0.1, augment: bool = True,
                 crop_padding: int = 4, hflip: bool = True, widths: tuple[int, int, int] = (64, 128, 256),
                 blocks: int = 4, input_norm: str = "none", score: str = "sigmoid", precision: str = "auto",
                 seed: int = 0, device: str = "auto", progress: bool = False, data_parallel: bool = True):
        self.weights = weights
        self.epochs, self.batch_size, self.exposure_batch_size = epochs, batch_size, exposure_batch_size
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        self.milestones, self.gamma = milestones, gamma
        self.augment, self.crop_padding, self.hflip = augment, crop_padding, hflip
        self.widths, self.blocks, self.input_norm, self.score = widths, blocks, input_norm, score
        self.precision, self.seed, self.device, self.progress = precision, seed, device, progress
        self.data_parallel = data_parallel

    def _check_settings(self) -> None:
        super()._check_settings()
        if self.weights is None:
            raise ValueError("ADRA needs pre-trained weights (weights=PATH, a local ResNet26 state_dict made by "
                             "tools/pretrain_classifier.py): it freezes theta0's 3x3 convolutions")
