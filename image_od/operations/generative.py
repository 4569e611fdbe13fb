"""Image operations for generative E3Outlier (supplement Sec. 5).

O(x|y1) is drawn from Flip x Gray x SimpleRotation: the image is flipped, turned grey and rotated by
(y-1)*90 degrees (4 operations); O(x|y2) is the identity. A generator learns to restore the original image
from each operated view, which it does well only for the patterns that dominate the data (inlier priority).
Images are float tensors (B,C,H,W) in [-1, 1], under the key ``image``.
"""
from __future__ import annotations

import torch

from image_od.e3outlier.generative import GenerativeTask

GREY_WEIGHTS = (0.299, 0.587, 0.114)


def grey(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma, kept at the input's channel count so the generator's output matches the target."""
    if x.shape[1] == 1:
        return x
    w = torch.tensor(GREY_WEIGHTS, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True).expand_as(x)


def flip_grey_rotate(k: int):
    """O(x|y1) for rotation index k: horizontal flip, grey, then rotation by k*90 degrees (counter-clockwise)."""

    def op(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.rot90(grey(torch.flip(batch["image"].float(), dims=[3])), k, dims=(2, 3))

    op.__name__ = f"flip_grey_rot{90 * k}"
    return op


def identity(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return batch["image"].float()


def image_tasks() -> list[GenerativeTask]:
    """The four (y1, y2) pairs of the paper's image setting."""
    return [GenerativeTask(f"rot{90 * k}", flip_grey_rotate(k), identity) for k in range(4)]
