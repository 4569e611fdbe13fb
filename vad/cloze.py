"""The cloze operations that turn video cubes into generative E3Outlier tasks (paper Sec. 4.3.2).

O(x|y1) = [p1, p2, p4, p5] (the cube without its middle patch) is the source of both tasks; the targets are
O(x|y2) = p3 (appearance) and O(x|y2) = OF(p3) (the middle patch's optical flow, motion). Pixels are scaled to
[0, 1]; flow stays in frame pixels.
"""
from __future__ import annotations

import torch

from image_od.generative import GenerativeTask

TARGETS = ("appearance", "flow")


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


def cloze_tasks(targets: tuple[str, ...] = TARGETS) -> list[GenerativeTask]:
    """The generative tasks for the chosen targets (both by default, as in the paper)."""
    make = {"appearance": middle_patch, "flow": middle_flow}
    unknown = set(targets) - set(make)
    if unknown or not targets:
        raise ValueError(f"cloze targets must be a non-empty subset of {TARGETS}, got {targets}")
    return [GenerativeTask(t, context, make[t]) for t in targets]
