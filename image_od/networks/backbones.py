"""The classifier backbones of discriminative E3Outlier for 32x32 inputs (WRN, the default, and the alternatives),
and a factory picking one by name.

The official E3Outlier code offers ``wrn`` (WRN-10-4, the default), ``resnet20``, ``resnet50``, ``densenet22`` and
``densenet40``; ``resnet18`` is the CIFAR ResNet18 of contrastive E3Outlier, CSI and UniCon-HA. Every network here
has the interface of :class:`WideResNet`: ``Net(in_channels, n_classes, depth, ..., dropout=0.0)``
and ``forward(x) -> (logits, features)``, where features are the globally average-pooled penultimate activations.
With ``dropout > 0`` each block holds an ``nn.Dropout`` (for MC-dropout scoring).
"""
from __future__ import annotations

import math
import re

import torch
from torch import nn


class _WideBlock(nn.Module):
    """Pre-activation basic block of a wide ResNet, with optional dropout between its convs (for MC dropout)."""

    def __init__(self, cin: int, cout: int, stride: int, dropout: float):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(cout), nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.shortcut = None if cin == cout and stride == 1 else nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x):
        o = torch.relu(self.bn1(x))
        skip = x if self.shortcut is None else self.shortcut(o)
        o = self.conv2(self.dropout(torch.relu(self.bn2(self.conv1(o)))))
        return o + skip


class WideResNet(nn.Module):
    """WRN-depth-width for 32x32 inputs (the official E3Outlier code uses WRN-10-4 without dropout).

    ``forward`` returns (logits, features); features are the pooled penultimate representation.
    """

    def __init__(self, in_channels: int, n_classes: int, depth: int = 10, width: int = 4, dropout: float = 0.0):
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WRN depth must be 6n+4, got {depth}")
        n = (depth - 4) // 6
        widths = [16, 16 * width, 32 * width, 64 * width]
        layers: list[nn.Module] = [nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)]
        for group, stride in zip(range(3), (1, 2, 2)):
            for i in range(n):
                layers.append(_WideBlock(widths[group] if i == 0 else widths[group + 1], widths[group + 1],
                                         stride if i == 0 else 1, dropout))
        self.features = nn.Sequential(*layers, nn.BatchNorm2d(widths[3]), nn.ReLU(inplace=True),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(widths[3], n_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):  # fan-in normal init, as the reference code
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / (m.kernel_size[0] * m.kernel_size[1] * m.in_channels)))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x):
        f = self.features(x)
        return self.fc(f), f


def _init_conv_bn(model: nn.Module) -> None:
    """He (fan-out) normal init of convolutions and unit/zero batch norm, as the official E3Outlier backbones."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / (m.kernel_size[0] * m.kernel_size[1] * m.out_channels)))
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _dropout(p: float) -> nn.Module:
    return nn.Dropout(p) if p > 0 else nn.Identity()


def _shortcut(cin: int, cout: int, stride: int) -> nn.Module | None:
    """Projection shortcut (1x1 conv + BN) when the shape changes, identity otherwise."""
    if cin == cout and stride == 1:
        return None
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))


class _BasicBlock(nn.Module):
    """Post-activation basic block: conv3x3-BN-ReLU-[dropout]-conv3x3-BN, add shortcut, ReLU."""

    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int, dropout: float):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, planes, 3, stride, 1, bias=False), nn.BatchNorm2d(planes), nn.ReLU(inplace=True),
            _dropout(dropout),
            nn.Conv2d(planes, planes, 3, 1, 1, bias=False), nn.BatchNorm2d(planes))
        self.shortcut = _shortcut(cin, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x if self.shortcut is None else self.shortcut(x)
        return torch.relu(self.body(x) + skip)


class _Bottleneck(nn.Module):
    """Post-activation bottleneck: conv1x1-BN-ReLU, conv3x3-BN-ReLU-[dropout], conv1x1 (4x planes)-BN, add, ReLU."""

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int, dropout: float):
        super().__init__()
        cout = planes * self.expansion
        self.body = nn.Sequential(
            nn.Conv2d(cin, planes, 1, bias=False), nn.BatchNorm2d(planes), nn.ReLU(inplace=True),
            nn.Conv2d(planes, planes, 3, stride, 1, bias=False), nn.BatchNorm2d(planes), nn.ReLU(inplace=True),
            _dropout(dropout),
            nn.Conv2d(planes, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.shortcut = _shortcut(cin, cout, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x if self.shortcut is None else self.shortcut(x)
        return torch.relu(self.body(x) + skip)


class _StagedResNet(nn.Module):
    """Stem conv3x3 stride 1 (``stem`` channels)-BN-ReLU, stages of blocks given as (planes, stride, count) (the
    stride on a stage's first block, projection shortcuts where the shape changes), global average pooling and a
    linear head; He fan-out init. ``forward(x) -> (logits, features)``."""

    def __init__(self, in_channels: int, n_classes: int, stem: int, stages: list[tuple[int, int, int]],
                 block: type[nn.Module], dropout: float):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, stem, 3, 1, 1, bias=False), nn.BatchNorm2d(stem),
                                   nn.ReLU(inplace=True)]
        c = stem
        for planes, stride, count in stages:
            for i in range(count):
                layers.append(block(c, planes, stride if i == 0 else 1, dropout))
                c = planes * block.expansion
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(c, n_classes)
        _init_conv_bn(self)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.features(x)
        return self.fc(f), f


class ResNet(_StagedResNet):
    """He et al. CIFAR ResNet (post-activation, as ported to the official E3Outlier code).

    Stem conv3x3 (16 channels)-BN-ReLU, then 3 stages of n blocks with 16/32/64 planes (strides 1/2/2, projection
    shortcuts where the shape changes), global average pooling and a linear classifier.
    ``block="basic"``: depth = 6n+2 (resnet20: n=3; resnet50: n=8, the official E3Outlier ``resnet50``), 64 features.
    ``block="bottleneck"``: depth = 9n+2 (1x1-3x3-1x1 blocks, expansion 4, e.g. 29, 47, 110), 256 features.
    """

    def __init__(self, in_channels: int, n_classes: int, depth: int = 20, block: str = "basic",
                 dropout: float = 0.0):
        kinds = {"basic": (_BasicBlock, 6), "bottleneck": (_Bottleneck, 9)}
        if block not in kinds:
            raise ValueError(f"ResNet block must be 'basic' or 'bottleneck', got {block!r}")
        cls, per = kinds[block]
        if depth < per + 2 or (depth - 2) % per:
            raise ValueError(f"ResNet depth with {block} blocks must be {per}n+2 with n >= 1, got {depth}")
        n = (depth - 2) // per
        super().__init__(in_channels, n_classes, 16, [(16, 1, n), (32, 2, n), (64, 2, n)], cls, dropout)


class ResNet18(_StagedResNet):
    """CIFAR ResNet18 (the common 32x32 variant, e.g. SimCLR/CSI code): stem conv3x3 stride 1 (``width``
    channels)-BN-ReLU without max-pool, 4 stages of 2 post-activation basic blocks with width/2w/4w/8w channels
    (strides 1/2/2/2, projection shortcuts), global average pooling (8*width = 512 features) and a linear head.
    ``width`` < 64 shrinks it (the ``cpu`` profile, tests)."""

    def __init__(self, in_channels: int, n_classes: int, width: int = 64, dropout: float = 0.0):
        super().__init__(in_channels, n_classes, width,
                         [(width, 1, 2), (2 * width, 2, 2), (4 * width, 2, 2), (8 * width, 2, 2)], _BasicBlock,
                         dropout)


class _DenseLayer(nn.Module):
    """DenseNet-BC layer: BN-ReLU-conv1x1 (4k)-BN-ReLU-conv3x3 (k)-[dropout], concatenated to its input."""

    def __init__(self, cin: int, growth: int, dropout: float):
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm2d(cin), nn.ReLU(inplace=True), nn.Conv2d(cin, 4 * growth, 1, bias=False),
            nn.BatchNorm2d(4 * growth), nn.ReLU(inplace=True), nn.Conv2d(4 * growth, growth, 3, 1, 1, bias=False),
            _dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((x, self.body(x)), 1)


def _transition(cin: int, cout: int) -> nn.Module:
    """DenseNet transition: BN-ReLU-conv1x1-avgpool 2x2."""
    return nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(inplace=True), nn.Conv2d(cin, cout, 1, bias=False),
                         nn.AvgPool2d(2))


class DenseNet(nn.Module):
    """CIFAR DenseNet-BC (Huang et al.), as in the official E3Outlier code.

    Stem conv3x3 with 2k channels (k = growth rate, 12), then 3 dense blocks of n = (depth-4)/6 bottleneck layers
    (each adds k channels) joined by transitions that compress channels by ``compression`` (0.5) and halve the
    resolution, then BN-ReLU, global average pooling and a linear classifier. densenet22: n=3, 69 features;
    densenet40: n=6, 132 features.
    """

    def __init__(self, in_channels: int, n_classes: int, depth: int = 40, growth_rate: int = 12,
                 compression: float = 0.5, dropout: float = 0.0):
        super().__init__()
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(f"DenseNet-BC depth must be 6n+4 with n >= 1, got {depth}")
        if not 0 < compression <= 1:
            raise ValueError(f"DenseNet compression must be in (0, 1], got {compression}")
        n = (depth - 4) // 6
        c = 2 * growth_rate
        layers: list[nn.Module] = [nn.Conv2d(in_channels, c, 3, 1, 1, bias=False)]
        for b in range(3):
            for _ in range(n):
                layers.append(_DenseLayer(c, growth_rate, dropout))
                c += growth_rate
            if b < 2:
                cout = int(math.floor(c * compression))
                layers.append(_transition(c, cout))
                c = cout
        self.features = nn.Sequential(*layers, nn.BatchNorm2d(c), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1),
                                      nn.Flatten())
        self.fc = nn.Linear(c, n_classes)
        _init_conv_bn(self)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.features(x)
        return self.fc(f), f


_FORMS = ("wrn (= wrn-10-4)", "wrn-D-W with D = 6n+4 (e.g. wrn-10-4)",
          "resnet18 or resnet18-W (the 4-stage CIFAR ResNet18 of SimCLR/CSI, base width W, default 64)",
          "resnetN with N = 6n+2 (basic blocks: resnet20, resnet32, resnet50) or N = 9n+2 (bottleneck: resnet29)",
          "densenetN with N = 6n+4 (DenseNet-BC: densenet22, densenet40)")


def make_backbone(name: str, in_channels: int, n_classes: int, dropout: float = 0.0) -> nn.Module:
    """Build a backbone by name: ``wrn``/``wrn-D-W``, ``resnet18``/``resnet18-W``, ``resnetN`` or ``densenetN``.

    ``resnet18`` is the 4-stage CIFAR ResNet18 (:class:`ResNet18`); any other ``resnetN`` uses basic blocks when
    N = 6n+2 (so ``resnet50`` is the official 6*8+2 basic-block net) and bottleneck blocks when only N = 9n+2 fits.
    Unknown or ill-sized names raise ValueError.
    """
    key = name.strip().lower()
    if key == "wrn":
        key = "wrn-10-4"
    reason = ""
    try:
        if m := re.fullmatch(r"wrn-(\d+)-(\d+)", key):
            depth, width = int(m[1]), int(m[2])
            if depth < 10 or width < 1:
                raise ValueError(f"WRN needs depth >= 10 and width >= 1, got {depth}-{width}")
            return WideResNet(in_channels, n_classes, depth, width, dropout)
        if m := re.fullmatch(r"resnet18(?:-(\d+))?", key):
            return ResNet18(in_channels, n_classes, int(m[1] or 64), dropout)
        if m := re.fullmatch(r"resnet(\d+)", key):
            depth = int(m[1])
            block = "basic" if depth >= 8 and (depth - 2) % 6 == 0 else "bottleneck"
            return ResNet(in_channels, n_classes, depth, block, dropout)
        if m := re.fullmatch(r"densenet(\d+)", key):
            return DenseNet(in_channels, n_classes, int(m[1]), dropout=dropout)
    except ValueError as e:
        reason = f" ({e})"
    raise ValueError(f"unknown backbone {name!r}{reason}; accepted forms: " + "; ".join(_FORMS))
