"""The generators of generative E3Outlier: the video CAE, the supplement's deep CAE of the image baselines, the
UNet."""
from __future__ import annotations

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


class DeepCAE(nn.Module):
    """The deep CAE of the supplement (Sec. 5, "competing methods"), shared by the image baselines and generative
    E3Outlier's paper form: [conv k3 s2 p1, BN, ReLU] x3, flatten, fc(-, ``code``), tanh, fc(``code``, -), BN,
    ReLU, reshape, [deconv k3 s2, BN, ReLU] x2, deconv k3 s2, tanh.

    The paper gives the flattened size 4096 for 32x32 inputs (256 channels at 4x4), not the widths of the first
    two blocks: ``widths`` (64, 128, 256) is our choice. ``encode`` gives the 256-d tanh code (CAE+IF's features);
    the output is in [-1, 1], the range of the inputs.
    """

    def __init__(self, in_channels: int, out_channels: int | None = None, widths: Sequence[int] = (64, 128, 256),
                 code: int = 256, size: int = 32):
        super().__init__()
        if len(widths) != 3 or size % 8:
            raise ValueError(f"DeepCAE has three blocks of widths and a size divisible by 8; got {widths}, {size}")
        out_channels = out_channels or in_channels
        self.shape = (widths[2], size // 8, size // 8)
        flat = widths[2] * (size // 8) ** 2
        blocks: list[nn.Module] = []
        c = in_channels
        for w in widths:
            blocks += [nn.Conv2d(c, w, 3, stride=2, padding=1), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
            c = w
        self.encoder = nn.Sequential(*blocks, nn.Flatten(), nn.Linear(flat, code), nn.Tanh())
        self.expand = nn.Sequential(nn.Linear(code, flat), nn.BatchNorm1d(flat), nn.ReLU(inplace=True))
        up: list[nn.Module] = []
        for w in (widths[1], widths[0]):
            up += [nn.ConvTranspose2d(c, w, 3, stride=2, padding=1, output_padding=1), nn.BatchNorm2d(w),
                   nn.ReLU(inplace=True)]
            c = w
        up += [nn.ConvTranspose2d(c, out_channels, 3, stride=2, padding=1, output_padding=1), nn.Tanh()]
        self.decoder = nn.Sequential(*up)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decode(self, code: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.expand(code).view(len(code), *self.shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


class UNet(nn.Module):
    """The supplement's UNet generator (Sec. 5): four down blocks (max-pool, then two conv k3 + BN + ReLU) and four
    up blocks (bilinear upsampling, concatenation with the skip connection of the same size, two convs), after an
    input block of two convs; a 1x1 conv and tanh give the output in [-1, 1]. ``width`` (the first block's
    channels, doubled per level) is not published; ``generative.make_generator`` passes the first of the generator
    widths (64 with the image detector's defaults). Spatial size must be divisible by 16."""

    def __init__(self, in_channels: int, out_channels: int | None = None, width: int = 32):
        super().__init__()
        out_channels = out_channels or in_channels

        def double(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                                 nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

        chans = [width * 2 ** i for i in range(5)]
        self.inc = double(in_channels, chans[0])
        self.down = nn.ModuleList(double(chans[i], chans[i + 1]) for i in range(4))
        self.up = nn.ModuleList(double(chans[i + 1] + chans[i], chans[i]) for i in reversed(range(4)))
        self.out = nn.Sequential(nn.Conv2d(chans[0], out_channels, 1), nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.inc(x)]
        for block in self.down:
            skips.append(block(nn.functional.max_pool2d(skips[-1], 2)))
        y = skips.pop()
        for block in self.up:
            skip = skips.pop()
            y = block(torch.cat([nn.functional.interpolate(y, size=skip.shape[-2:], mode="bilinear",
                                                           align_corners=False), skip], 1))
        return self.out(y)
