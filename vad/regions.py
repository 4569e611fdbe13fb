"""Foreground regions of interest: motion boxes, an object detector, precomputed box files.

Boxes are float32 (M,4) arrays ``[x1, y1, x2, y2]`` in original frame pixels, one array per frame. The motion
recipe, the detector filters and the covered-box removal follow the cloze-test (VEC) reference code, except that
the frame-difference sum is computed without the reference's uint8 wrap-around.
"""
from __future__ import annotations

import os
import sys
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Sequence

import cv2
import numpy as np

BOX_FILE_KEYS = ("boxes_xyxy", "global_frame", "video_lengths")
BOX_TOLERANCE = (2.0, 0.02)  # a box may exceed the frame by max(2 px, 2% of the side); it is then clipped to it


class RegionError(ValueError):
    """A bad box file or detector setting; the message names the file and what is wrong."""


def _as_boxes(boxes: np.ndarray | Sequence) -> np.ndarray:
    return np.asarray(boxes, np.float32).reshape(-1, 4)


def box_areas(boxes: np.ndarray) -> np.ndarray:
    """Areas with the inclusive-pixel convention of the reference code: (x2-x1+1)*(y2-y1+1)."""
    return (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of boxes (N, 4) and (M, 4) -> (N, M)."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    x1, y1 = np.maximum(a[:, None, 0], b[None, :, 0]), np.maximum(a[:, None, 1], b[None, :, 1])
    x2, y2 = np.minimum(a[:, None, 2], b[None, :, 2]), np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = lambda r: (r[:, 2] - r[:, 0]) * (r[:, 3] - r[:, 1])  # noqa: E731
    union = area(a)[:, None] + area(b)[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


# ------------------------------------------------------------------------------------------ motion boxes

def _blur(frame: np.ndarray, ksize: int) -> np.ndarray:
    """Gaussian-blurred frame as int16, so that differences and their sums cannot wrap around."""
    return cv2.GaussianBlur(frame, (ksize, ksize), 0).astype(np.int16)


def _change_boxes(change: np.ndarray, *, threshold: int, min_area: int, max_aspect: float, margin: int,
                  exclude: np.ndarray | None) -> np.ndarray:
    """Boxes around the connected regions of ``change > threshold`` (any channel), outside the ``exclude`` boxes."""
    if change.ndim == 3:  # the reference thresholds each BGR channel, then a pixel counts if any channel fired
        change = change.max(axis=2)
    mask = (change > threshold).astype(np.uint8) * 255
    h, w = mask.shape
    for x1, y1, x2, y2 in _as_boxes(exclude if exclude is not None else []).astype(np.int32):
        mask[max(y1 - margin, 0):max(y2 + margin + 1, 0), max(x1 - margin, 0):max(x2 + margin + 1, 0)] = 0
    boxes = []
    for contour in cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)[0]:
        x, y, bw, bh = cv2.boundingRect(contour)
        if (bw + 1) * (bh + 1) > min_area and bw / bh < max_aspect and bh / bw < max_aspect:
            boxes.append([max(x - margin, 0), max(y - margin, 0), min(x + bw + margin, w), min(y + bh + margin, h)])
    return _as_boxes(boxes)


def motion_boxes(prev: np.ndarray, cur: np.ndarray, nxt: np.ndarray, *, blur_ksize: int = 3, threshold: int = 18,
                 min_area: int = 100, max_aspect: float = 10.0, margin: int = 2,
                 exclude: np.ndarray | None = None) -> np.ndarray:
    """Boxes of frame ``cur`` around pixels where |I(t-1)-I(t)| + |I(t)-I(t+1)| > threshold, after a blur.

    Frames are grey (H,W) or BGR (H,W,3) uint8. ``exclude`` boxes (e.g. detector boxes), each enlarged by
    ``margin``, are blanked first, so motion boxes only add what the detector missed. A region is kept when
    (w+1)*(h+1) > min_area and both side ratios are below ``max_aspect``; its box gets ``margin`` px on each side.
    """
    a, b, c = (_blur(f, blur_ksize) for f in (prev, cur, nxt))
    return _change_boxes(np.abs(a - b) + np.abs(b - c), threshold=threshold, min_area=min_area,
                         max_aspect=max_aspect, margin=margin, exclude=exclude)


def video_motion_boxes(frames: np.ndarray, *, blur_ksize: int = 3, threshold: int = 18, min_area: int = 100,
                       max_aspect: float = 10.0, margin: int = 2, exclude: Sequence[np.ndarray] | None = None,
                       start: int = 0, stop: int | None = None) -> list[np.ndarray]:
    """``motion_boxes`` of frames ``start..stop-1`` (default: all) from frames t-1, t, t+1, the end frames of
    ``frames`` repeated at its borders; a window of a longer video thus needs one frame more on each side.

    ``exclude`` is an optional list of boxes to blank, one per frame start..stop-1. Each frame is blurred and
    differenced only once.
    """
    stop = len(frames) if stop is None else stop
    if stop <= start:
        return []
    settings = dict(threshold=threshold, min_area=min_area, max_aspect=max_aspect, margin=margin)
    out = []
    cur = _blur(frames[start], blur_ksize)
    diff_before = np.abs(_blur(frames[start - 1], blur_ksize) - cur) if start > 0 else np.zeros_like(cur)
    for t in range(start, stop):
        nxt = _blur(frames[t + 1], blur_ksize) if t + 1 < len(frames) else cur
        diff_after = np.abs(cur - nxt)
        out.append(_change_boxes(diff_before + diff_after, exclude=None if exclude is None else exclude[t - start],
                                 **settings))
        diff_before, cur = diff_after, nxt
    return out


# ------------------------------------------------------------------------------------------ object boxes

def remove_covered(boxes: np.ndarray, cover_thr: float = 0.6) -> np.ndarray:
    """Drop each box whose intersection with a larger one exceeds ``cover_thr`` of its own area.

    As in the reference: boxes sorted by area, ascending; box i is compared with every later box (equal areas
    included, so of two identical boxes one survives). The kept boxes are returned in that order.
    """
    boxes = _as_boxes(boxes)
    boxes = boxes[np.argsort(box_areas(boxes), kind="stable")]
    areas = box_areas(boxes)
    keep = []
    for i, b in enumerate(boxes):
        later = boxes[i + 1:]
        iw = np.clip(np.minimum(b[2], later[:, 2]) - np.maximum(b[0], later[:, 0]) + 1, 0, None)
        ih = np.clip(np.minimum(b[3], later[:, 3]) - np.maximum(b[1], later[:, 1]) + 1, 0, None)
        if not np.any(iw * ih > cover_thr * areas[i]):
            keep.append(i)
    return boxes[keep]


def filter_boxes(boxes: np.ndarray, scores: np.ndarray, *, score_thr: float, min_area: float) -> np.ndarray:
    """Detector boxes with score > ``score_thr`` and area (x2-x1+1)*(y2-y1+1) >= ``min_area``."""
    boxes = _as_boxes(boxes)
    return boxes[(np.asarray(scores) > score_thr) & (box_areas(boxes) >= min_area)]


@contextmanager
def _ultralytics_offline() -> Iterator[None]:
    """``YOLO_OFFLINE=1`` while ultralytics runs (it never reaches for the network), the caller's environment
    restored afterwards."""
    before = os.environ.get("YOLO_OFFLINE")
    os.environ["YOLO_OFFLINE"] = "1"
    try:
        yield
    finally:
        if before is None:
            del os.environ["YOLO_OFFLINE"]
        else:
            os.environ["YOLO_OFFLINE"] = before


class YoloDetector:
    """Object boxes via ultralytics YOLO from a LOCAL ``.pt`` weights file the user gives (never downloads).

    A ``.pt`` file of ultralytics is a Python pickle of the whole model: loading it can run code stored in the file.
    It is therefore refused unless ``allow_pickle`` (the setting ``regions.unsafe_pickle``) says that the user trusts
    the file; the Darknet reader (``vad.darknet``) loads plain arrays and needs no such trust.

    Per frame: detections of the chosen ``classes`` (all by default, as VEC) -> ``filter_boxes`` ->
    ``remove_covered``. ``YOLO_OFFLINE`` is set (unless already set) before ultralytics is first imported, which
    turns off its update checks and usage reporting; a local file needs no network.
    """

    def __init__(self, weights: str | Path, *, score_thr: float = 0.5, min_area: float = 100.0, cover_thr: float = 0.6,
                 classes: list[int] | None = None, imgsz: int = 640, device: str = "cpu", batch: int = 16,
                 allow_pickle: bool = False):
        path = Path(weights)
        if not path.is_file():
            raise RegionError(f"detector weights file not found: {path} (give Darknet .weights with its .cfg "
                              "beside it, or an ultralytics YOLO .pt file)")
        if path.suffix.lower() in (".yaml", ".yml"):  # ultralytics would silently build an untrained model
            raise RegionError(f"{path} is a model definition, not trained weights: give a YOLO .pt file")
        if not allow_pickle:
            raise RegionError(
                f"{path}: refusing to load an ultralytics .pt file: it is a Python pickle, and loading it runs any "
                "code stored in it. Use Darknet weights (.weights with its .cfg), or, only for a file from a source "
                "you trust, set regions.unsafe_pickle=true")
        print(f"warning: loading {path} by unpickling it (regions.unsafe_pickle=true): code stored in the file runs",
              file=sys.stderr)
        with _ultralytics_offline():
            try:
                from ultralytics import YOLO
            except ImportError as err:
                raise RegionError(f"the detector ({path}) needs ultralytics: pip install ultralytics") from err
            try:
                self.model = YOLO(str(path))
            except Exception as err:  # ultralytics raises many exception types for a bad file
                raise RegionError(f"{path}: cannot be loaded as YOLO weights ({err})") from err
        self.score_thr, self.min_area, self.cover_thr = score_thr, min_area, cover_thr
        self.classes, self.imgsz, self.device, self.batch = classes, imgsz, device, batch

    def detect(self, frames: np.ndarray) -> list[np.ndarray]:
        """Boxes of each frame: (T,H,W) grey or (T,H,W,3) BGR uint8 in, T float32 (k,4) arrays out."""
        out = []
        for start in range(0, len(frames), self.batch):
            chunk = [np.repeat(f[..., None], 3, axis=2) if f.ndim == 2 else f for f in frames[start:start + self.batch]]
            with _ultralytics_offline():
                results = self.model.predict(chunk, imgsz=self.imgsz, conf=self.score_thr, classes=self.classes,
                                             device=self.device, verbose=False)
            for r in results:
                boxes = filter_boxes(r.boxes.xyxy.cpu().numpy(), r.boxes.conf.cpu().numpy(),
                                     score_thr=self.score_thr, min_area=self.min_area)
                out.append(remove_covered(boxes, self.cover_thr))
        return out


def network_size(frame_hw: tuple[int, int], longest: int, stride: int = 32) -> tuple[int, int]:
    """(width, height) of a detector input for frames of ``frame_hw``: the frame scaled so that its longer side is
    ``longest``, each side rounded to the nearest multiple of ``stride`` (e.g. 360x240 at 416 -> 416x288)."""
    h, w = frame_hw
    scale = longest / max(h, w)
    return tuple(max(stride, int(round(side * scale / stride)) * stride) for side in (w, h))


class DarknetBoxes:
    """Object boxes from a Darknet YOLO model (``vad.darknet``): detections of ``classes`` above ``score_thr`` after
    non-maximum suppression, at an input of longer side ``imgsz`` -> ``filter_boxes`` (min area) -> ``remove_covered``,
    the VEC recipe's filters. The weights are plain float arrays: loading them runs no code."""

    def __init__(self, weights: str | Path, *, score_thr: float = 0.5, nms_iou: float = 0.45, min_area: float = 100.0,
                 cover_thr: float = 0.6, classes: list[int] | None = None, imgsz: int = 416, device: str = "cpu",
                 precision: str = "fp32", runtime: str = "torch", batch: int = 2):
        # batch 2: on a 2-core AVX2 CPU at 640 px, 1.1-1.3x the frames per second of 4 in either runtime, and 4 gave
        # 2-3x those of 16 (larger batches fall out of cache; tools/bench_detector.py --speed --batch 4 2)
        from .darknet import DarknetDetector, DarknetError

        try:
            self.detector = DarknetDetector(weights, classes=classes, score_thr=score_thr, nms_iou=nms_iou,
                                            batch=batch, device=device, precision=precision, runtime=runtime)
        except DarknetError as err:
            raise RegionError(str(err)) from None
        self.min_area, self.cover_thr, self.imgsz = min_area, cover_thr, imgsz

    def detect(self, frames: np.ndarray) -> list[np.ndarray]:
        """Boxes of each frame: (T,H,W) grey or (T,H,W,3) BGR uint8 in, T float32 (k,4) arrays out."""
        if len(frames) == 0:
            return []
        size = network_size(frames.shape[1:3], self.imgsz)
        # the score threshold was applied before the detector's NMS; VEC's area floor and covered-box removal remain
        return [remove_covered(boxes[box_areas(boxes) >= self.min_area], self.cover_thr)
                for boxes in self.detector.detect(frames, input_size=size)]


def resolve_detector_precision(precision: str, device: str) -> str:
    """The detector's precision: ``auto`` is fp32 on a CPU even where bf16 is native, since ONNX Runtime's fp32 ran
    1.8x PyTorch's native bf16 there (Yolo-Fastest-XL at 640, an AMX Xeon, 2 threads) and gives the same boxes on
    every CPU; on an accelerator it is bf16 where native (``image_od.engine.precision.resolve_precision``)."""
    from image_od.engine.precision import resolve_precision

    if precision == "auto" and str(device).split(":")[0] == "cpu":
        return "fp32"
    return resolve_precision(precision, device)


def resolve_runtime(runtime: str, device: str, precision: str) -> str:
    """What runs a Darknet model: ``auto`` is ONNX Runtime for fp32 on a CPU (about 1.6x PyTorch's eager speed
    there), PyTorch otherwise (accelerators, and bf16 autocast where the CPU runs bf16 natively)."""
    if runtime != "auto":
        return runtime
    return "onnxruntime" if str(device).split(":")[0] == "cpu" and precision == "fp32" else "torch"


def make_detector(weights: str | Path, *, classes: list[int] | None, score_thr: float, nms_iou: float,
                  min_area: float, cover_thr: float, imgsz: int, device: str, precision: str, runtime: str = "torch",
                  allow_pickle: bool) -> DarknetBoxes | YoloDetector:
    """The detector a weights file names: Darknet ``.weights`` (its ``.cfg`` beside it) or an ultralytics ``.pt``
    (``runtime`` applies to Darknet models only)."""
    path = Path(weights)
    if path.suffix.lower() == ".weights":
        return DarknetBoxes(path, score_thr=score_thr, nms_iou=nms_iou, min_area=min_area, cover_thr=cover_thr,
                            classes=classes, imgsz=imgsz, device=device, precision=precision, runtime=runtime)
    if path.suffix.lower() == ".pt":
        return YoloDetector(path, score_thr=score_thr, min_area=min_area, cover_thr=cover_thr, classes=classes,
                            imgsz=imgsz, device=device, allow_pickle=allow_pickle)
    raise RegionError(f"{path}: detector weights must be Darknet .weights (with the .cfg of the same name beside "
                      "it) or an ultralytics .pt file")


# ------------------------------------------------------------------------------------------ box files

def _read_box_file(path: Path) -> dict[str, np.ndarray]:
    """The arrays of an npz box file, after checking it exists, is an npz archive and has every key."""
    if not path.is_file():
        raise RegionError(f"box file not found: {path}")
    try:
        data = np.load(path)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ValueError("a single .npy array, not an npz archive")
        with data:
            arrays = {k: data[k] for k in BOX_FILE_KEYS if k in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        what = "empty file" if path.stat().st_size == 0 else str(err) or type(err).__name__
        raise RegionError(f"{path}: not a readable npz box file ({what})") from None
    missing = [k for k in BOX_FILE_KEYS if k not in arrays]
    if missing:
        raise RegionError(f"{path}: missing arrays {missing}; a box file holds {list(BOX_FILE_KEYS)}")
    return arrays


def _bad_rows_error(path: Path, what: str, rows: np.ndarray, boxes: np.ndarray, frame: np.ndarray,
                    lengths: list[int], names: Sequence[str] | None) -> RegionError:
    """An error naming the file, the first offending row, its video and frame, and how many rows are affected."""
    row = int(rows[0])
    starts = np.cumsum([0, *lengths])
    g = int(frame[row])
    v = int(np.searchsorted(starts, g, side="right") - 1) if 0 <= g < starts[-1] else None
    where = f"global frame {g}" if v is None else (
        f"video {names[v] if names is not None else v + 1}, frame {g - starts[v]} of the video")
    more = f" (and {len(rows) - 1} more rows)" if len(rows) > 1 else ""
    return RegionError(f"{path}: row {row} of boxes_xyxy ({where}): {what}: {boxes[row].tolist()}{more}")


def _check_boxes(path: Path, boxes: np.ndarray, frame: np.ndarray, lengths: list[int],
                 frame_shapes: Sequence[tuple[int, int]] | None, names: Sequence[str] | None) -> np.ndarray:
    """Refuse NaN/inf, inverted (x2 < x1 or y2 < y1) and out-of-frame boxes; clip those that exceed their frame by
    at most the tolerance (``BOX_TOLERANCE``). Returns the (clipped) boxes."""
    bad = np.flatnonzero(~np.isfinite(boxes).all(1))
    if len(bad):
        raise _bad_rows_error(path, "coordinates are NaN or infinite", bad, boxes, frame, lengths, names)
    bad = np.flatnonzero((boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1]))
    if len(bad):
        raise _bad_rows_error(path, "inverted box (x2 < x1 or y2 < y1; expected [x1, y1, x2, y2])", bad, boxes,
                              frame, lengths, names)
    if frame_shapes is None:
        return boxes
    video = np.repeat(np.arange(len(lengths)), lengths)[frame]
    shapes = np.array(frame_shapes, np.float32).reshape(-1, 2)[video]
    h, w = shapes[:, 0], shapes[:, 1]
    tol_x, tol_y = (np.maximum(BOX_TOLERANCE[0], BOX_TOLERANCE[1] * side) for side in (w, h))
    outside = ((boxes[:, 0] < -tol_x) | (boxes[:, 1] < -tol_y) | (boxes[:, 2] > w + tol_x) | (boxes[:, 3] > h + tol_y))
    bad = np.flatnonzero(outside)
    if len(bad):
        r = int(bad[0])
        raise _bad_rows_error(path, f"box lies outside the {int(w[r])}x{int(h[r])} frame (boxes of another "
                              "resolution or dataset?)", bad, boxes, frame, lengths, names)
    limits = np.stack([w, h, w, h], 1)
    return np.clip(boxes, 0, limits).astype(np.float32)


def load_box_file(path: str | Path, video_lengths: Sequence[int],
                  frame_shapes: Sequence[tuple[int, int]] | None = None,
                  video_names: Sequence[str] | None = None) -> list[list[np.ndarray]]:
    """Per video, per frame (k,4) float32 boxes from an npz (``boxes_xyxy``, ``global_frame``, ``video_lengths``).

    ``global_frame`` indexes the concatenation of the split's videos; the file's ``video_lengths`` must equal the
    dataset's, which catches a box file of another split or dataset. Boxes with NaN/inf or inverted coordinates
    are refused, and, when ``frame_shapes`` (each video's (height, width)) is given, boxes outside their frame by
    more than ``BOX_TOLERANCE``; boxes within the tolerance are clipped to the frame. Errors name the file, the
    row, and the video (by ``video_names`` if given) and frame.
    """
    path = Path(path)
    data = _read_box_file(path)
    boxes, frame = data["boxes_xyxy"], data["global_frame"]
    if len(boxes) == 0:
        raise RegionError(f"{path}: empty box file (no boxes)")
    if boxes.ndim != 2 or boxes.shape[1] != 4 or frame.shape != (len(boxes),):
        raise RegionError(f"{path}: boxes_xyxy must be (M,4) with one global_frame each; got {boxes.shape} and "
                          f"{frame.shape}")
    if not np.issubdtype(frame.dtype, np.integer):
        raise RegionError(f"{path}: global_frame must hold integer frame indices, not {frame.dtype}")
    file_lengths, lengths = [int(n) for n in data["video_lengths"]], [int(n) for n in video_lengths]
    if file_lengths != lengths:
        raise RegionError(f"{path}: video lengths in the file {file_lengths} do not match the dataset's {lengths}")
    total = sum(lengths)
    if frame.min() < 0 or frame.max() >= total:
        raise RegionError(f"{path}: global_frame out of range: {int(frame.min())}..{int(frame.max())} for "
                          f"{total} frames")
    boxes = _check_boxes(path, boxes.astype(np.float32), frame, lengths, frame_shapes, video_names)
    order = np.argsort(frame, kind="stable")
    boxes, frame = boxes[order], frame[order]
    cuts = np.searchsorted(frame, np.arange(total + 1))
    per_frame = [boxes[cuts[g]:cuts[g + 1]] for g in range(total)]
    starts = np.cumsum([0, *lengths])
    return [per_frame[starts[v]:starts[v + 1]] for v in range(len(lengths))]


def pairs_by_iou(a: np.ndarray, b: np.ndarray, min_iou: float) -> list[tuple[int, int]]:
    """Greedy one-to-one pairs (i, j) of boxes ``a[i]``, ``b[j]``, highest IoU first, each at least ``min_iou``,
    in the order of ``a``."""
    if not len(a) or not len(b):
        return []
    overlap = iou(a, b)
    pairs, used_a, used_b = [], set(), set()
    for flat in np.argsort(-overlap, axis=None, kind="stable"):
        i, j = divmod(int(flat), len(b))
        if overlap[i, j] < min_iou:
            break
        if i not in used_a and j not in used_b:
            pairs.append((i, j))
            used_a.add(i)
            used_b.add(j)
    return sorted(pairs)


def key_frames(n: int, every: int) -> list[int]:
    """The frames among ``n`` that ``keyframe_detections`` runs the detector on: 0, every, 2 * every, ... and the
    last."""
    return list(range(n)) if every == 1 or n <= 2 else sorted(set(range(0, n, every)) | {n - 1})


def keyframe_detections(detect: Callable[[np.ndarray], list[np.ndarray]], frames: np.ndarray, every: int = 1,
                        min_iou: float = 0.1) -> list[np.ndarray]:
    """``detect`` on the key frames of ``frames`` (``key_frames``); the frames between two key frames get their
    boxes: a box paired with one of the next key frame (greedy, highest IoU first, IoU >= ``min_iou``) moves
    linearly from one to the other, a box without a partner (an object appearing or leaving, a detection that
    flickers) stays on the frames nearer its own key frame. The detector's cost falls about ``every`` times."""
    n = len(frames)
    keys = key_frames(n, every)
    found = [_as_boxes(b) for b in detect(frames[keys])]
    out = dict(zip(keys, found))
    for k, (a, b) in enumerate(zip(keys, keys[1:])):
        if b - a < 2:  # neighbouring key frames: no frame between
            continue
        first, second = found[k], found[k + 1]
        pairs = pairs_by_iou(first, second, min_iou)
        i = np.array([p[0] for p in pairs], np.int64)
        j = np.array([p[1] for p in pairs], np.int64)
        alone_first, alone_second = np.delete(first, i, axis=0), np.delete(second, j, axis=0)
        for t in range(a + 1, b):
            w = (t - a) / (b - a)
            moving = (1 - w) * first[i] + w * second[j]
            out[t] = np.concatenate([moving, alone_first if w <= 0.5 else alone_second]).astype(np.float32)
    return [out[t] for t in range(n)]


def host_of(box: np.ndarray, boxes: np.ndarray, gap: float = 4.0, ratio: float = 4.0) -> int | None:
    """Index of the largest of the ``boxes`` that ``box`` touches (within ``gap`` pixels) and that has more than
    ``ratio`` times its area: the object a smaller box may be a part of; None if there is none."""
    b = _as_boxes(boxes)
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    dx = np.maximum(0, np.maximum(b[:, 0] - box[2], box[0] - b[:, 2]))
    dy = np.maximum(0, np.maximum(b[:, 1] - box[3], box[1] - b[:, 3]))
    hosts = np.flatnonzero((dx <= gap) & (dy <= gap) & (area > ratio * (box[2] - box[0]) * (box[3] - box[1])))
    return int(hosts[np.argmax(area[hosts])]) if len(hosts) else None


def join_fragments(detections: Sequence[np.ndarray], motion: Sequence[np.ndarray], gap: float = 4.0,
                   ratio: float = 4.0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Frame by frame, each motion box that touches a detection with more than ``ratio`` times its area
    (``host_of``) is joined into the largest such detection, which becomes their union, and dropped; the
    other motion boxes are kept. A person's legs, shadow or swinging arm boxed by the frame differences beside its
    detection then move with the person instead of standing out as small, fast objects of their own (in a crowd the
    learned score's commonest false alarms; docs/BENCHMARKS.md#join-fragments). Returns (detections, motion)."""
    joined, kept = [], []
    for frame_detections, frame_motion in zip(detections, motion):
        d, m = _as_boxes(frame_detections).copy(), _as_boxes(frame_motion)
        keep = np.ones(len(m), bool)
        for i, box in enumerate(m):
            host = host_of(box, d, gap, ratio)
            if host is not None:
                d[host, :2], d[host, 2:] = np.minimum(d[host, :2], box[:2]), np.maximum(d[host, 2:], box[2:])
                keep[i] = False
        joined.append(d)
        kept.append(m[keep])
    return joined, kept


def merge_boxes(*per_frame_lists: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Union of several box sources, frame by frame (as VEC: no suppression between sources)."""
    if not per_frame_lists:
        raise ValueError("merge_boxes needs at least one box source")
    counts = {len(boxes) for boxes in per_frame_lists}
    if len(counts) != 1:
        raise ValueError(f"box sources cover different numbers of frames: {sorted(counts)}")
    return [np.concatenate([_as_boxes(boxes[t]) for boxes in per_frame_lists]) for t in range(counts.pop())]
