"""Foreground regions of interest: motion boxes, an object detector, precomputed box files.

Boxes are float32 (M,4) arrays ``[x1, y1, x2, y2]`` in original frame pixels, one array per frame. The motion
recipe and the covered-box removal follow the cloze-test (VEC) reference code.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import numpy as np


class RegionError(ValueError):
    """A bad box file or detector setting; the message names the file."""


def _empty() -> np.ndarray:
    return np.zeros((0, 4), np.float32)


def motion_boxes(prev: np.ndarray, cur: np.ndarray, nxt: np.ndarray, *, blur_ksize: int = 3, threshold: int = 18,
                 min_area: int = 100, max_aspect: float = 10.0, margin: int = 2,
                 exclude: np.ndarray | None = None) -> np.ndarray:
    """Boxes around pixels that changed: |I(t-1)-I(t)| + |I(t)-I(t+1)| > threshold (computed without uint8 wrap)."""
    blurred = [cv2.GaussianBlur(f, (blur_ksize, blur_ksize), 0).astype(np.int16) for f in (prev, cur, nxt)]
    change = np.abs(blurred[0] - blurred[1]) + np.abs(blurred[1] - blurred[2])
    if change.ndim == 3:
        change = change.max(axis=2)
    mask = (change > threshold).astype(np.uint8) * 255
    h, w = mask.shape
    for x1, y1, x2, y2 in (exclude if exclude is not None else _empty()):
        mask[max(int(y1) - margin, 0):int(np.ceil(y2)) + margin, max(int(x1) - margin, 0):int(np.ceil(x2)) + margin] = 0
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    boxes = []
    for c in contours:
        x, y, bw, bh = cv2.boundingRect(c)
        if (bw + 1) * (bh + 1) > min_area and bw / bh < max_aspect and bh / bw < max_aspect:
            boxes.append([max(x - margin, 0), max(y - margin, 0), min(x + bw + margin, w), min(y + bh + margin, h)])
    return np.asarray(boxes, np.float32).reshape(-1, 4)


def video_motion_boxes(frames: np.ndarray, exclude: Sequence[np.ndarray] | None = None, **kw) -> list[np.ndarray]:
    """Motion boxes of every frame, using t-1, t, t+1 with the edge frame repeated at the video ends."""
    last = len(frames) - 1
    return [motion_boxes(frames[max(t - 1, 0)], frames[t], frames[min(t + 1, last)],
                         exclude=None if exclude is None else exclude[t], **kw) for t in range(len(frames))]


def box_areas(boxes: np.ndarray) -> np.ndarray:
    return (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)


def remove_covered(boxes: np.ndarray, cover_thr: float = 0.6) -> np.ndarray:
    """Drop boxes whose intersection with a larger box exceeds ``cover_thr`` of their own area."""
    if len(boxes) < 2:
        return boxes
    boxes = boxes[np.argsort(box_areas(boxes), kind="stable")]
    keep = []
    for i, b in enumerate(boxes):
        later = boxes[i + 1:]
        iw = np.clip(np.minimum(b[2], later[:, 2]) - np.maximum(b[0], later[:, 0]) + 1, 0, None)
        ih = np.clip(np.minimum(b[3], later[:, 3]) - np.maximum(b[1], later[:, 1]) + 1, 0, None)
        if not np.any(iw * ih > cover_thr * box_areas(b[None])[0]):
            keep.append(i)
    return boxes[keep]


def filter_boxes(boxes: np.ndarray, scores: np.ndarray, *, score_thr: float, min_area: float) -> np.ndarray:
    keep = (scores > score_thr) & (box_areas(boxes) >= min_area)
    return boxes[keep].astype(np.float32)


class YoloDetector:
    """Object boxes from an ultralytics YOLO model loaded from a local weights file (never downloaded)."""

    def __init__(self, weights: str | Path, *, score_thr: float = 0.5, min_area: float = 100.0, cover_thr: float = 0.6,
                 classes: list[int] | None = None, imgsz: int = 640, device: str = "cpu", batch: int = 16):
        path = Path(weights)
        if not path.is_file():
            raise RegionError(f"detector weights file not found: {path} (give a local YOLO .pt file)")
        try:
            from ultralytics import YOLO
        except ImportError as err:
            raise RegionError("the detector needs ultralytics: pip install ultralytics") from err
        try:
            self.model = YOLO(str(path))
        except Exception as err:  # ultralytics raises many types for a bad file
            raise RegionError(f"{path} could not be loaded as YOLO weights: {err}") from err
        self.score_thr, self.min_area, self.cover_thr = score_thr, min_area, cover_thr
        self.classes, self.imgsz, self.device, self.batch = classes, imgsz, device, batch

    def detect(self, frames: np.ndarray) -> list[np.ndarray]:
        """Boxes of each frame: (T,H,W) grey or (T,H,W,3) BGR uint8 in, T arrays of (k,4) out."""
        out = []
        for start in range(0, len(frames), self.batch):
            chunk = [np.repeat(f[..., None], 3, 2) if f.ndim == 2 else f for f in frames[start:start + self.batch]]
            results = self.model.predict(chunk, imgsz=self.imgsz, conf=min(self.score_thr, 0.05), device=self.device,
                                         classes=self.classes, verbose=False)
            for r in results:
                b = r.boxes.xyxy.cpu().numpy().astype(np.float32)
                s = r.boxes.conf.cpu().numpy()
                out.append(remove_covered(filter_boxes(b, s, score_thr=self.score_thr, min_area=self.min_area),
                                          self.cover_thr))
        return out


def load_box_file(path: str | Path, video_lengths: Sequence[int]) -> list[list[np.ndarray]]:
    """Per video, per frame boxes from an npz with ``boxes_xyxy``, ``global_frame`` and ``video_lengths``."""
    path = Path(path)
    if not path.is_file():
        raise RegionError(f"box file not found: {path}")
    try:
        data = np.load(path)
        boxes, frame, lengths = data["boxes_xyxy"], data["global_frame"], data["video_lengths"]
    except KeyError as err:
        raise RegionError(f"{path}: missing array {err}; expected boxes_xyxy, global_frame, video_lengths") from None
    except (OSError, ValueError) as err:
        raise RegionError(f"{path}: not a readable npz file ({err})") from None
    if len(boxes) == 0:
        raise RegionError(f"{path}: empty box file (no boxes)")
    if boxes.ndim != 2 or boxes.shape[1] != 4 or len(frame) != len(boxes):
        raise RegionError(f"{path}: boxes_xyxy must be (M,4) with one global_frame each, got {boxes.shape}, {frame.shape}")
    if list(map(int, lengths)) != list(map(int, video_lengths)):
        raise RegionError(f"{path}: video lengths {list(map(int, lengths))} do not match the dataset's "
                          f"{list(map(int, video_lengths))}")
    total = int(np.sum(video_lengths))
    if frame.min() < 0 or frame.max() >= total:
        raise RegionError(f"{path}: global_frame out of range [0, {total})")
    order = np.argsort(frame, kind="stable")
    boxes, frame = boxes[order].astype(np.float32), frame[order]
    cuts = np.searchsorted(frame, np.arange(total + 1))
    per_frame = [boxes[cuts[g]:cuts[g + 1]] for g in range(total)]
    starts = np.concatenate([[0], np.cumsum(video_lengths)])
    return [per_frame[starts[v]:starts[v + 1]] for v in range(len(video_lengths))]


def merge_boxes(*per_frame_lists: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Union of several sources frame by frame (as in VEC, no suppression between sources)."""
    if not per_frame_lists:
        raise ValueError("merge_boxes needs at least one source")
    n = {len(lst) for lst in per_frame_lists}
    if len(n) != 1:
        raise ValueError(f"box sources cover different frame counts: {sorted(n)}")
    return [np.concatenate([np.asarray(lst[t], np.float32).reshape(-1, 4) for lst in per_frame_lists])
            for t in range(n.pop())]
