"""Networks: the generator of generative E3Outlier and the WRN classifier of discriminative E3Outlier."""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn


class ConvAutoencoder(nn.Module):
    """The CAE of the E3Outlier supplement (Sec. 5).

    Encoder: one block per width of [conv k3 s2 p1, BN, ReLU]. Decoder: the mirror blocks of
    [deconv k3 s2 p1 output_padding 1, BN, ReLU], then a single deconv to ``out_channels`` with no activation.
    The paper uses three encoder blocks; the widths are not published, so they are a setting.
    Spatial size must be divisible by ``2 ** len(widths)``.
    """

    def __init__(self, in_channels: int, out_channels: int, widths: Sequence[int] = (32, 64, 128)):
        super().__init__()
        if not widths:
            raise ValueError("ConvAutoencoder needs at least one width")
        enc: list[nn.Module] = []
        c = in_channels
        for w in widths:
            enc += [nn.Conv2d(c, w, 3, stride=2, padding=1), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
            c = w
        dec: list[nn.Module] = []
        for w in reversed(widths[:-1]):
            dec += [nn.ConvTranspose2d(c, w, 3, stride=2, padding=1, output_padding=1), nn.BatchNorm2d(w),
                    nn.ReLU(inplace=True)]
            c = w
        dec.append(nn.ConvTranspose2d(c, out_channels, 3, stride=2, padding=1, output_padding=1))
        self.encoder = nn.Sequential(*enc)
        self.decoder = nn.Sequential(*dec)

    def forward(self, x):
        return self.decoder(self.encoder(x))


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
