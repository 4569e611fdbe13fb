"""Spatio-temporal cubes (STCs), their middle-frame flow and their motion energy.

A cube of frame t is the box of frame t cropped from frames t-2..t+2 and resized to ``size`` x ``size``
(paper Sec. 4.3.2). Frame indices outside the video repeat the edge frame, so cubes never cross videos.
The flow patch is the middle frame's flow (see ``vad.flow``) cropped with the same box; its vectors stay in
frame pixels, as in the reference code. The motion energy (``cube_energy``) is the largest mean flow magnitude
over person-shaped windows of the box (``vad.scoring.window_energy``), measured on a flow of its own over a wider
frame pair where the object moves little enough for it.

Cropping and resizing use torchvision's ``roi_align`` (aligned, adaptive sampling): bilinear like
``cv2.resize`` for boxes smaller than the patch, area-averaged for larger ones. The crop region of box
[x1,y1,x2,y2] is pixels ceil(x1)..ceil(x2)-1 as in the VEC code.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Sequence

import cv2
import numpy as np
import torch
from torchvision.ops import roi_align

from .flow import flow_pairs
from .scoring import motion_energy, window_energy


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


@dataclass(frozen=True)
class Window:
    """Frames ``lo..lo+len(frames)-1`` of a video around its chunk ``start..stop-1``: the chunk plus up to
    ``margin`` frames on each side (fewer only at the video's ends)."""

    frames: np.ndarray
    lo: int
    start: int
    stop: int

    @property
    def hi(self) -> int:
        return self.lo + len(self.frames)

    @property
    def chunk(self) -> slice:
        """The chunk's frames, as a slice of ``frames``."""
        return slice(self.start - self.lo, self.stop - self.lo)


def iter_windows(frames: Iterable[np.ndarray], chunk: int, margin: int) -> Iterator[Window]:
    """Slide over a stream of frames chunk by chunk, holding at most ``chunk + 2 * margin`` frames.

    A window reaches the video's end exactly when ``hi`` is the video's length, so anything computed from the
    window with indices clipped to it equals the whole-video computation clipped to the video.
    """
    if chunk < 1 or margin < 0:
        raise ValueError(f"chunk must be positive and margin non-negative, got {chunk} and {margin}")
    stream, buffer, first, start, ended = iter(frames), [], 0, 0, False
    while True:
        while not ended and first + len(buffer) < start + chunk + margin:
            frame = next(stream, None)
            ended = frame is None
            if not ended:
                buffer.append(frame)
        stop = min(start + chunk, first + len(buffer))
        if stop <= start:
            return
        lo, hi = max(start - margin, 0), min(stop + margin, first + len(buffer))
        yield Window(np.stack(buffer[lo - first:hi - first]), lo, start, stop)
        start = stop
        drop = max(start - margin - first, 0)
        del buffer[:drop]
        first += drop


def empty_cubes(colour: bool, size: int = 32, n_frames: int = 5) -> dict[str, np.ndarray]:
    """The arrays of ``window_cubes`` with no cube."""
    cube = (0, n_frames, 3, size, size) if colour else (0, n_frames, size, size)
    return {"cubes": np.zeros(cube, np.uint8), "flow": np.zeros((0, 2, size, size), np.float16),
            "energy": np.zeros(0, np.float32), "boxes": np.zeros((0, 4), np.float32), "frame": np.zeros(0, np.int32)}


def chunk_flow(frames: np.ndarray, window: Window, flow_estimator, gap: int = 1) -> np.ndarray:
    """(chunk frames, H, W, 2) float32 flow in pixels per frame standing for each frame of ``window``'s chunk: the
    flow between frames ``gap`` apart around t (``flow_pairs``), divided by the frames between them."""
    pairs = [(a - window.lo, b - window.lo) for a, b in flow_pairs(window.hi, gap)[window.start:window.stop]]
    apart = np.array([max(b - a, 1) for a, b in pairs], np.float32)[:, None, None, None]
    flow = np.asarray(flow_estimator(frames, pairs), np.float32)  # DIS gives float32: no copy
    flow /= apart
    return flow


def cube_energy(flow_patches: np.ndarray, wide_patches: np.ndarray | None, boxes: np.ndarray,
                energy_gap: int, aspect: float = 0.0) -> np.ndarray:
    """Each cube's motion energy: the flow magnitude in its box (``window_energy`` with ``aspect``; 0: the box
    mean), from ``wide_patches`` (flow over frames ``energy_gap`` apart, in pixels per frame) where the object's
    move over that pair, ``energy_gap`` times the box mean of ``flow_patches`` (the cube's own flow), stays under
    half the box's shorter side, else from ``flow_patches``. Over a wider pair DIS measures a large object's speed
    better (its flat interior drags a small move towards zero) but loses an object that jumps about its own size
    (docs/BENCHMARKS.md#flow-gap); ``wide_patches`` None: the cube's own flow alone."""
    if wide_patches is None:
        return window_energy(flow_patches, boxes, aspect)
    mean = motion_energy(flow_patches)
    energy = mean if aspect <= 0 else window_energy(flow_patches, boxes, aspect)
    side = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    wide = energy_gap * mean < side / 2
    return np.where(wide, window_energy(wide_patches, boxes, aspect), energy).astype(np.float32)


def window_cubes(window: Window, boxes_per_frame: Sequence[np.ndarray], flow_estimator, *, size: int = 32,
                 n_frames: int = 5, flow_gap: int = 1, energy_gap: int | None = None,
                 energy_aspect: float = 0.0) -> dict[str, np.ndarray]:
    """The cubes of the chunk of ``window`` (one box list per chunk frame), as ``extract_cubes``. The window needs
    ``n_frames // 2`` frames on each side of the chunk (and what the flow pairs reach) where the video has them."""
    frames, colour = window.frames, window.frames.ndim == 4
    if len(boxes_per_frame) != window.stop - window.start:
        raise ValueError(f"{len(boxes_per_frame)} box lists for {window.stop - window.start} frames")
    energy_gap = energy_gap or flow_gap
    frame_ids = [t for t in range(window.start, window.stop) if len(boxes_per_frame[t - window.start])]
    if not frame_ids:
        return empty_cubes(colour, size, n_frames)
    box_lists = [np.asarray(boxes_per_frame[t - window.start], np.float32).reshape(-1, 4) for t in frame_ids]
    boxes = np.concatenate(box_lists)
    centre = np.concatenate([np.full(len(b), t) for t, b in zip(frame_ids, box_lists)])
    idx = (np.clip(centre[:, None] + cube_offsets(n_frames)[None, :], window.lo, window.hi - 1) - window.lo)
    patches = crop_resize(_to_nchw(frames), idx.reshape(-1), np.repeat(boxes, n_frames, 0), size)
    patches = patches.round().clamp(0, 255).to(torch.uint8).numpy()
    shape = (len(boxes), n_frames, 3, size, size) if colour else (len(boxes), n_frames, size, size)

    def flow_patches(gap: int) -> np.ndarray:  # float16, as stored: the energy's patches are rounded alike
        flows = torch.from_numpy(chunk_flow(frames, window, flow_estimator, gap)).permute(0, 3, 1, 2)
        return crop_resize(flows, centre - window.start, boxes, size).numpy().astype(np.float16)

    own = flow_patches(flow_gap)
    wide = flow_patches(energy_gap) if energy_gap != flow_gap else None
    energy = cube_energy(own, wide, boxes, energy_gap, energy_aspect)
    return {"cubes": patches.reshape(shape), "flow": own, "energy": energy, "boxes": boxes,
            "frame": centre.astype(np.int32)}


def processing_size(frame_hw: tuple[int, int], min_side: int = 0, max_side: int = 0) -> tuple[int, int]:
    """(height, width) at which frames of ``frame_hw`` are processed, aspect kept: enlarged until the shorter side has
    ``min_side`` pixels (``data.min_side``), shrunk until it has ``max_side`` (``data.max_side``); a bound of 0, or
    a frame within the bounds: its own size."""
    h, w = frame_hw
    short = min(h, w)
    if min_side and short < min_side:
        target = min_side
    elif max_side and short > max_side:
        target = max_side
    else:
        return h, w
    scale = target / short
    return max(round(h * scale), target), max(round(w * scale), target)


def resize_frames(frames: Iterable[np.ndarray], size_hw: tuple[int, int]) -> Iterator[np.ndarray]:
    """Each frame resized to ``size_hw`` (bilinear when enlarging, pixel-area averaging when shrinking, which does not
    alias); frames of that size pass through untouched."""
    h, w = size_hw
    for frame in frames:
        if frame.shape[:2] == (h, w):
            yield frame
        else:
            shrink = h * w < frame.shape[0] * frame.shape[1]
            yield cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def iter_cubes(frames: Iterable[np.ndarray], boxes_for: Callable[[Window], Sequence[np.ndarray]], flow_estimator,
               *, size: int = 32, n_frames: int = 5, chunk: int = 64, flow_gap: int = 1,
               energy_gap: int | None = None,
               energy_aspect: float = 0.0) -> Iterator[tuple[Window, dict[str, np.ndarray]]]:
    """Stream one video's cubes chunk by chunk: (window, ``window_cubes``) per chunk of ``chunk`` frames, ordered
    by frame. ``boxes_for(window)`` gives the boxes of the window's chunk frames. Memory holds one window."""
    # the cube's frames t-2..t+2, t-1..t+1 for motion boxes, and the flow pairs
    margin = max(n_frames // 2, 1, *(g - g // 2 for g in (flow_gap, energy_gap or flow_gap)))
    for window in iter_windows(frames, chunk, margin):
        yield window, window_cubes(window, boxes_for(window), flow_estimator, size=size, n_frames=n_frames,
                                   flow_gap=flow_gap, energy_gap=energy_gap, energy_aspect=energy_aspect)


def concat_cubes(parts: Iterable[dict[str, np.ndarray]], colour: bool, size: int = 32,
                 n_frames: int = 5) -> dict[str, np.ndarray]:
    """Chunks of cubes joined into one video's arrays."""
    parts = [empty_cubes(colour, size, n_frames), *parts]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def extract_cubes(frames: np.ndarray, boxes_per_frame: Sequence[np.ndarray], flow_estimator, *, size: int = 32,
                  n_frames: int = 5, chunk: int = 64, flow_gap: int = 1, energy_gap: int | None = None,
                  energy_aspect: float = 0.0) -> dict[str, np.ndarray]:
    """All cubes of one video held in memory (``iter_cubes`` over its frames).

    ``frames``: (T,H,W) grey or (T,H,W,3) uint8. ``boxes_per_frame``: T arrays of (k,4) xyxy boxes.
    Returns ``cubes`` uint8 (N,n_frames,size,size) (or (N,n_frames,3,size,size) for colour), ``flow`` float16
    (N,2,size,size), ``energy`` float32 (N,) (``cube_energy``; ``energy_gap`` None: from ``flow`` alone;
    ``energy_aspect``: its windows),
    ``boxes`` float32 (N,4), ``frame`` int32 (N,), ordered by frame.
    """
    if len(boxes_per_frame) != len(frames):
        raise ValueError(f"{len(boxes_per_frame)} box lists for {len(frames)} frames")
    parts = iter_cubes(frames, lambda w: boxes_per_frame[w.start:w.stop], flow_estimator, size=size,
                       n_frames=n_frames, chunk=chunk, flow_gap=flow_gap, energy_gap=energy_gap,
                       energy_aspect=energy_aspect)
    return concat_cubes((arrays for _, arrays in parts), frames.ndim == 4, size, n_frames)
