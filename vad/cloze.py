"""The cloze operations that turn video cubes into generative E3Outlier tasks (paper Sec. 4.3.2).

O(x|y1) = [p1, p2, p4, p5] (the cube without its middle patch) is the source of every task; the targets are
O(x|y2) = p3 (appearance) and O(x|y2) = OF(p3) (the middle patch's optical flow, motion), the paper's two, and
optionally a third, ``flow_hof``: a histogram of the middle flow's orientations weighted by magnitude (8 bins) in
each 4x4-pixel cell, a motion target that ignores where exactly in the cell the motion is. Pixels are scaled to
[0, 1]; flow stays in frame pixels.
"""
from __future__ import annotations

import torch

from image_od.e3outlier.generative import GenerativeTask

TARGETS = ("appearance", "flow", "flow_hof")


def _patches(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """(B,T,size,size) or (B,T,3,size,size) uint8 -> float in [0,1], shape (B,T,C,size,size)."""
    cubes = batch["cubes"].float() / 255.0
    return cubes.unsqueeze(2) if cubes.ndim == 4 else cubes


def context(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """O(x|y1): every patch but the middle one, frames stacked on channels."""
    p = _patches(batch)
    mid = p.shape[1] // 2
    return torch.cat([p[:, :mid], p[:, mid + 1:]], 1).flatten(1, 2)


def middle_patch(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """O(x|y2) = p3."""
    p = _patches(batch)
    return p[:, p.shape[1] // 2]


def middle_flow(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """O(x|y2) = OF(p3)."""
    return batch["flow"].float()


HOF_BINS = 8
HOF_CELL = 4


def middle_flow_hof(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Magnitude-weighted orientation histogram of OF(p3) per 4x4 cell, (B, 8, S, S) (each cell's histogram
    repeated over its pixels, so that source and target share a size). Orientations are split linearly between
    the two nearest bins."""
    f = batch["flow"].float()
    mag = torch.sqrt(f[:, 0] ** 2 + f[:, 1] ** 2)
    pos = (torch.atan2(f[:, 1], f[:, 0]) % (2 * torch.pi)) / (2 * torch.pi) * HOF_BINS
    lo = pos.floor().long() % HOF_BINS
    frac = pos - pos.floor()
    hist = torch.zeros(f.shape[0], HOF_BINS, *f.shape[-2:], device=f.device)
    hist.scatter_add_(1, lo.unsqueeze(1), (mag * (1 - frac)).unsqueeze(1))
    hist.scatter_add_(1, ((lo + 1) % HOF_BINS).unsqueeze(1), (mag * frac).unsqueeze(1))
    cells = torch.nn.functional.avg_pool2d(hist, HOF_CELL)
    return torch.nn.functional.interpolate(cells, scale_factor=HOF_CELL, mode="nearest")


def cloze_tasks(targets: tuple[str, ...] = ("appearance", "flow")) -> list[GenerativeTask]:
    """The generative tasks for the chosen targets (the paper's two by default)."""
    make = {"appearance": middle_patch, "flow": middle_flow, "flow_hof": middle_flow_hof}
    unknown = set(targets) - set(make)
    if unknown or not targets:
        raise ValueError(f"cloze targets must be a non-empty subset of {TARGETS}, got {targets}")
    return [GenerativeTask(t, context, make[t]) for t in targets]
