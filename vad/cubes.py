"""Spatio-temporal cubes (STCs) and their middle-frame flow.

A cube of frame t is the box of frame t cropped from frames t-2..t+2 and resized to ``size`` x ``size``
(paper Sec. 4.3.2). Frame indices outside the video repeat the edge frame, so cubes never cross videos.
The flow patch is the middle frame's flow (see ``vad.flow``) cropped with the same box; its vectors stay in
frame pixels, as in the reference code.

Cropping and resizing use torchvision's ``roi_align`` (aligned, adaptive sampling): bilinear like
``cv2.resize`` for boxes smaller than the patch, area-averaged for larger ones. The crop region of box
[x1,y1,x2,y2] is pixels ceil(x1)..ceil(x2)-1 as in the VEC code.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torchvision.ops import roi_align

from .flow import iter_flow_chunks


def cube_offsets(n_frames: int = 5) -> np.ndarray:
    """Temporal offsets of a cube's frames around its centre frame, e.g. [-2,-1,0,1,2]."""
    if n_frames < 1 or n_frames % 2 == 0:
        raise ValueError(f"cube length must be odd and positive, got {n_frames}")
    half = n_frames // 2
    return np.arange(-half, half + 1)


def _pixel_boxes(boxes: np.ndarray) -> np.ndarray:
    """VEC's crop region in continuous coordinates: [ceil(x1), ceil(y1), ceil(x2), ceil(y2)], at least 1 px."""
    b = np.ceil(boxes).astype(np.float32)
    b[:, 2] = np.maximum(b[:, 2], b[:, 0] + 1)
    b[:, 3] = np.maximum(b[:, 3], b[:, 1] + 1)
    return b


def _to_nchw(frames: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(frames)).float()
    return t.unsqueeze(1) if t.ndim == 3 else t.permute(0, 3, 1, 2)


def crop_resize(images: torch.Tensor, index: np.ndarray, boxes: np.ndarray, size: int) -> torch.Tensor:
    """Crop ``boxes[i]`` from ``images[index[i]]`` (N,C,H,W) and resize to size x size: (K,C,size,size)."""
    rois = torch.from_numpy(np.concatenate([index[:, None].astype(np.float32), _pixel_boxes(boxes)], 1))
    return roi_align(images, rois, output_size=size, spatial_scale=1.0, sampling_ratio=-1, aligned=True)


def extract_cubes(
    frames: np.ndarray,
    boxes_per_frame: Sequence[np.ndarray],
    flow_estimator,
    *,
    size: int = 32,
    n_frames: int = 5,
    chunk: int = 32,
) -> dict[str, np.ndarray]:
    """All cubes of one video.

    ``frames``: (T,H,W) grey or (T,H,W,3) uint8. ``boxes_per_frame``: T arrays of (k,4) xyxy boxes.
    Returns ``cubes`` uint8 (N,n_frames,size,size) (or (N,n_frames,3,size,size) for colour), ``flow`` float16
    (N,2,size,size), ``boxes`` float32 (N,4), ``frame`` int32 (N,), ordered by frame.
    """
    T = len(frames)
    if len(boxes_per_frame) != T:
        raise ValueError(f"{len(boxes_per_frame)} box lists for {T} frames")
    offsets = cube_offsets(n_frames)
    half = n_frames // 2
    colour = frames.ndim == 4
    out: dict[str, list[np.ndarray]] = {"cubes": [], "flow": [], "boxes": [], "frame": []}
    for start, flows in iter_flow_chunks(flow_estimator, frames, chunk):
        stop = start + len(flows)
        frame_ids = [t for t in range(start, stop) if len(boxes_per_frame[t])]
        if not frame_ids:
            continue
        boxes = np.concatenate([np.asarray(boxes_per_frame[t], np.float32).reshape(-1, 4) for t in frame_ids])
        centre = np.concatenate([np.full(len(boxes_per_frame[t]), t) for t in frame_ids])
        lo, hi = max(start - half, 0), min(stop + half, T)
        window = _to_nchw(frames[lo:hi])
        idx = (np.clip(centre[:, None] + offsets[None, :], 0, T - 1) - lo).reshape(-1)
        patches = crop_resize(window, idx, np.repeat(boxes, n_frames, 0), size)
        patches = patches.round().clamp(0, 255).to(torch.uint8).numpy()
        shape = (len(boxes), n_frames, 3, size, size) if colour else (len(boxes), n_frames, size, size)
        flow_patches = crop_resize(torch.from_numpy(flows).permute(0, 3, 1, 2), centre - start, boxes, size)
        out["cubes"].append(patches.reshape(shape))
        out["flow"].append(flow_patches.numpy().astype(np.float16))
        out["boxes"].append(boxes)
        out["frame"].append(centre.astype(np.int32))
    if not out["frame"]:
        empty_cube = (0, n_frames, 3, size, size) if colour else (0, n_frames, size, size)
        return {"cubes": np.zeros(empty_cube, np.uint8), "flow": np.zeros((0, 2, size, size), np.float16),
                "boxes": np.zeros((0, 4), np.float32), "frame": np.zeros(0, np.int32)}
    return {k: np.concatenate(v) for k, v in out.items()}
