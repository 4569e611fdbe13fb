"""The discriminative E3Outlier operation set (supplement Sec. 1), K = 111 as in the official code.

Label order (reference code facts A.2):
- RA, 72 regular affine ops, label = flip*36 + tx*12 + ty*4 + k over flip in (no, yes), tx, ty in (0, -8, +8),
  k in 0..3: horizontal flip, then a shift ``out[r, c] = in[r + tx, c + ty]`` whose uncovered border repeats
  the image symmetrically (scipy's ``reflect``, i.e. ``np.pad(mode="symmetric")``), then ``rot90`` by k
  (counter-clockwise);
- IA, 16 irregular rotations: angles 30*j for j in 0..11 that are not multiples of 90 (30, 60, 120, ...),
  without then with a flip; flip, rotate on an enlarged canvas (cubic spline, corners filled with 0, mid-grey
  in [-1, 1]), centre crop back;
- PR, 23 patch re-arrangements: the 2x2 quadrant permutations except the identity, lexicographic; output
  quadrant p (row-major) takes input quadrant perm[p].

``apply_operations(x, labels)`` transforms a batch (B,C,H,W) in place of precomputing N x K images: RA and PR
are exact index operations in torch (on any device); IA calls scipy's spline rotation on the batch at once.
"""
from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass

import numpy as np
import scipy.ndimage
import torch

SHIFTS = (0, -8, 8)


@dataclass(frozen=True)
class Operation:
    family: str  # RA | IA | PR
    flip: bool = False
    tx: int = 0
    ty: int = 0
    k: int = 0  # rot90 count (RA)
    angle: int = 0  # degrees (IA)
    perm: tuple[int, ...] = ()  # quadrant permutation (PR)


def operation_set(families: str = "RA+IA+PR") -> list[Operation]:
    """The operations in label order; ``families`` picks e.g. "RA" (72) or "RA+IA" (88)."""
    ops: list[Operation] = []
    chosen = families.split("+")
    if "RA" in chosen:
        ops += [Operation("RA", flip, tx, ty, k)
                for flip, tx, ty, k in itertools.product((False, True), SHIFTS, SHIFTS, range(4))]
    if "IA" in chosen:
        ops += [Operation("IA", flip, angle=30 * j) for flip, j in itertools.product((False, True), range(12))
                if (30 * j) % 90 != 0]
    if "PR" in chosen:
        ops += [Operation("PR", perm=p) for p in list(itertools.permutations(range(4)))[1:]]
    unknown = set(chosen) - {"RA", "IA", "PR"}
    if unknown:
        raise ValueError(f"unknown operation families {sorted(unknown)}; expected RA, IA, PR")
    return ops


def _symmetric_index(n: int, shift: int, device) -> torch.Tensor:
    """Indices i + shift reflected into 0..n-1 with the edge repeated (half-sample symmetric)."""
    i = torch.arange(n, device=device) + shift
    i = torch.where(i < 0, -i - 1, i)
    return torch.where(i >= n, 2 * n - i - 1, i)


def _regular(x: torch.Tensor, op: Operation) -> torch.Tensor:
    if op.flip:
        x = torch.flip(x, dims=[3])
    if op.tx or op.ty:
        x = x[:, :, _symmetric_index(x.shape[2], op.tx, x.device)][:, :, :, _symmetric_index(x.shape[3], op.ty, x.device)]
    return torch.rot90(x, op.k, dims=(2, 3)) if op.k else x


def _irregular(x: torch.Tensor, op: Operation) -> torch.Tensor:
    if op.flip:
        x = torch.flip(x, dims=[3])
    h, w = x.shape[2:]
    big = scipy.ndimage.rotate(x.detach().cpu().numpy(), op.angle, axes=(3, 2), reshape=True, order=3,
                               mode="constant", cval=0.0)
    top, left = (big.shape[2] - h) // 2, (big.shape[3] - w) // 2
    return torch.from_numpy(np.ascontiguousarray(big[:, :, top:top + h, left:left + w])).to(x)


def _rearrange(x: torch.Tensor, op: Operation) -> torch.Tensor:
    h, w = x.shape[2] // 2, x.shape[3] // 2
    quads = [x[:, :, r * h:(r + 1) * h, c * w:(c + 1) * w] for r in range(2) for c in range(2)]
    q = [quads[i] for i in op.perm]
    return torch.cat([torch.cat(q[:2], 3), torch.cat(q[2:], 3)], 2)


MULTI_LABEL_HEADS = ("rotation", "translation", "irregular_rotation", "flip", "patch")


def multi_labels(ops: list[Operation]) -> tuple[torch.Tensor, tuple[int, ...]]:
    """The paper's multi-label pseudo labels (Sec. 4.2.3): per operation, one label per head of
    ``MULTI_LABEL_HEADS``, with 4, 9, 9, 2 and 24 classes; class 0 of a head means "not applied".

    Returns (labels (K, 5) int64, head sizes).
    """
    angles = [30 * j for j in range(12) if (30 * j) % 90]
    perms = list(itertools.permutations(range(4)))
    rows = []
    for op in ops:
        rotation = op.k if op.family == "RA" else 0
        translation = SHIFTS.index(op.tx) * 3 + SHIFTS.index(op.ty)
        irregular = angles.index(op.angle) + 1 if op.family == "IA" else 0
        patch = perms.index(op.perm) if op.family == "PR" else 0
        rows.append((rotation, translation, irregular, int(op.flip), patch))
    return torch.tensor(rows, dtype=torch.int64), (4, 9, 9, 2, 24)


APPLY = {"RA": _regular, "IA": _irregular, "PR": _rearrange}


@functools.lru_cache(maxsize=16)
def _pixel_maps(ops: tuple[Operation, ...], h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """RA and PR operations only move pixels: for each operation, the source pixel of every output pixel
    (K, h*w), found by applying it to an image of pixel indices; and a mask of the operations that are such maps
    (IA interpolates, so it is not)."""
    index = torch.arange(h * w).reshape(1, 1, h, w)
    is_map = torch.tensor([op.family != "IA" for op in ops])
    maps = torch.stack([APPLY[op.family](index, op).reshape(-1) if m else index.reshape(-1)
                        for op, m in zip(ops, is_map.tolist())])
    return maps, is_map


def apply_operations(x: torch.Tensor, labels: torch.Tensor, ops: list[Operation]) -> torch.Tensor:
    """Apply ``ops[labels[i]]`` to ``x[i]`` for a batch (B,C,H,W): one gather for every pixel-moving operation
    (RA, PR), then the irregular rotations grouped by operation."""
    b, c, h, w = x.shape
    maps, is_map = _pixel_maps(tuple(ops), h, w)
    labels_cpu = labels.cpu()
    moved = is_map[labels_cpu]
    out = torch.empty_like(x)
    if moved.any():
        sel = moved.nonzero(as_tuple=True)[0].to(x.device)
        src = maps[labels_cpu[moved]].to(x.device)[:, None, :].expand(-1, c, -1)
        out[sel] = x[sel].reshape(len(sel), c, h * w).gather(2, src).reshape(len(sel), c, h, w)
    for label in torch.unique(labels_cpu[~moved]).tolist():
        idx = (labels_cpu == label).nonzero(as_tuple=True)[0].to(x.device)
        out[idx] = APPLY["IA"](x[idx], ops[label])
    return out
