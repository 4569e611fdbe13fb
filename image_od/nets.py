"""Generator networks for generative E3Outlier."""
from __future__ import annotations

from typing import Sequence

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
