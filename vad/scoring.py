"""From cube scores to frame scores, and the motion-energy baseline.

Convention everywhere: higher = more anomalous. A frame's score is its most anomalous cube (the paper's
"minimum of the normality scores"); a frame without any cube gets the least anomalous score seen.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .regions import host_of


def flow_magnitude(flow: np.ndarray) -> np.ndarray:
    """Per-pixel optical-flow magnitude in float32: flow (N,2,H,W) -> (N,H,W)."""
    f = flow.astype(np.float32)
    return np.sqrt(f[:, 0] ** 2 + f[:, 1] ** 2)


def motion_energy(flow: np.ndarray) -> np.ndarray:
    """Mean optical-flow magnitude inside each cube's box: flow (N,2,H,W) -> (N,)."""
    return flow_magnitude(flow).mean(axis=(1, 2))


def window_energy(flow: np.ndarray, boxes: np.ndarray, aspect: float) -> np.ndarray:
    """Each cube's motion energy as the largest mean flow magnitude over the windows of width/height ``aspect`` in
    its box: the largest window of that shape inside the box, slid along the box's longer side (flow patches
    (N,2,H,W) resampled from ``boxes`` (N,4) -> (N,)). A box of about one object's shape keeps its mean; a box
    whose frame-difference blob merged two neighbours gets its faster one's. ``aspect`` 0: the box mean."""
    if aspect <= 0 or len(flow) == 0:
        return motion_energy(flow)
    mag = flow_magnitude(flow)
    n, rows, cols = mag.shape
    w = np.maximum(boxes[:, 2] - boxes[:, 0], 1.0)
    h = np.maximum(boxes[:, 3] - boxes[:, 1], 1.0)
    win_cols = np.clip(np.rint(cols * np.minimum(1.0, aspect * h / w)), 1, cols).astype(int)
    win_rows = np.clip(np.rint(rows * np.minimum(1.0, w / (aspect * h))), 1, rows).astype(int)
    integral = np.zeros((n, rows + 1, cols + 1))
    integral[:, 1:, 1:] = mag.cumsum(1).cumsum(2)
    out = np.empty(n, np.float32)
    for a, b in set(zip(win_cols.tolist(), win_rows.tolist())):
        sel = (win_cols == a) & (win_rows == b)
        ii = integral[sel]
        sums = ii[:, b:, a:] - ii[:, :-b, a:] - ii[:, b:, :-a] + ii[:, :-b, :-a]
        out[sel] = sums.reshape(len(ii), -1).max(axis=1) / (a * b)
    return out


def robust_scale(x: np.ndarray) -> tuple[float, float]:
    """Median and robust deviation (1.4826 MAD, the standard deviation for normal data) of ``x``."""
    median = float(np.median(x))
    return median, 1.4826 * float(np.median(np.abs(x - median)))


def zscore(x: np.ndarray) -> np.ndarray:
    sd = x.std()
    return (x - x.mean()) / (sd if sd > 0 else 1.0)


def frame_scores(cube_scores: np.ndarray, video: np.ndarray, frame: np.ndarray,
                 n_frames: Sequence[int]) -> list[np.ndarray]:
    """Max cube score of every frame of every video; frames without cubes get the global minimum."""
    floor = float(cube_scores.min()) if len(cube_scores) else 0.0
    order = np.argsort(video, kind="stable")  # cubes grouped by video (they usually are already)
    bounds = np.searchsorted(video[order], np.arange(len(n_frames) + 1))
    out = []
    for v, n in enumerate(n_frames):
        s = np.full(n, -np.inf)
        rows = order[bounds[v]:bounds[v + 1]]
        np.maximum.at(s, frame[rows], cube_scores[rows])
        s[~np.isfinite(s)] = floor
        out.append(s)
    return out


SMOOTHING = ("none", "mean", "gaussian")


def smooth(scores: Sequence[np.ndarray], window: int | float, kind: str = "mean") -> list[np.ndarray]:
    """Temporal smoothing within each video (never across videos), edges padded by repetition.

    ``kind="mean"``: centred moving average over ``window`` frames (window <= 1 leaves scores as they are);
    ``kind="gaussian"``: Gaussian of standard deviation ``window`` frames (<= 0 leaves them); ``"none"``: off.
    """
    if kind not in SMOOTHING:
        raise ValueError(f"unknown smoothing {kind!r}; expected one of {SMOOTHING}")
    if kind == "none" or (kind == "mean" and window <= 1) or (kind == "gaussian" and window <= 0):
        return [np.asarray(s, float) for s in scores]
    if kind == "mean":
        window = int(window)
        kernel = np.ones(window) / window
        left, right = window // 2, window - 1 - window // 2
    else:
        half = int(np.ceil(3 * window))
        x = np.arange(-half, half + 1)
        kernel = np.exp(-0.5 * (x / window) ** 2)
        kernel /= kernel.sum()
        left = right = half
    return [np.convolve(np.pad(np.asarray(s, float), (left, right), mode="edge"), kernel, mode="valid")
            for s in scores]


def per_video_zscore(scores: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Each video's frame scores z-scored on their own: removes differences in level between videos (cameras,
    crowd density), and with them part of what micro AUC compares across videos."""
    return [zscore(np.asarray(s, float)) for s in scores]


def _weighted_z(model: Sequence[np.ndarray], heuristic: Sequence[np.ndarray], w_model: float,
                w_heuristic: float) -> list[np.ndarray]:
    """w_model z(model) + w_heuristic z(heuristic), z over all frames, split back into videos."""
    cuts = np.cumsum([len(m) for m in model])[:-1]
    return np.split(w_model * zscore(np.concatenate(model)) + w_heuristic * zscore(np.concatenate(heuristic)), cuts)


def fuse(model: Sequence[np.ndarray], heuristic: Sequence[np.ndarray], weight: float) -> list[np.ndarray]:
    """Frame scores z(model) + weight * z(motion energy), z over all frames; weight 0 leaves the model's as they are."""
    if weight == 0:
        return [np.asarray(m, float) for m in model]
    return _weighted_z(model, heuristic, 1.0, weight)


def moving(cube_speed: np.ndarray, floor: float) -> np.ndarray:
    """The cubes faster than ``floor`` (pixels per frame): the moving ones. Static cubes (a detector also boxes
    standing people) are left out of every speed reference, so they do not lower its median and with it the bar
    for "fast"."""
    return np.asarray(cube_speed) > floor


def fast_bar(cube_speed: np.ndarray, mads: float = 3.0, floor: float = 0.0) -> float | None:
    """Median + ``mads`` robust deviations (1.4826 MAD) of the speed of the cubes ``moving`` faster than ``floor``:
    what "clearly fast" means in this footage; None when no cube moves."""
    mask = moving(cube_speed, floor)
    if not mask.any():
        return None
    median, mad = robust_scale(cube_speed[mask])
    return median + mads * max(mad, 1e-9)


def fast_share(cube_speed: np.ndarray, video: np.ndarray, frame: np.ndarray, n_frames: Sequence[int],
               mads: float = 3.0, floor: float = 0.0) -> float:
    """The share of frames holding a cube above the ``fast_bar``: how common clearly fast objects are. When they
    are in a large share of the frames, they are not rare in the data, so rarity cannot find them and the motion
    prior is what does (label-free evidence).

    Cubes not ``moving`` faster than ``floor`` are left out of the reference."""
    bar = fast_bar(cube_speed, mads, floor)
    if bar is None:
        return 0.0
    fastest = np.concatenate(frame_scores(cube_speed, video, frame, n_frames))
    return float(np.mean(fastest > bar))


def slow_slivers(boxes: np.ndarray, video: np.ndarray, frame: np.ndarray, cube_speed: np.ndarray,
                 bar: float | None) -> np.ndarray:
    """The cubes that are slivers of slow objects: each touches (within 4 px) a cube of the same frame with more
    than 4 times its area, and the largest such cube (``vad.regions.host_of``) is not faster than ``bar``
    (a walker's foot, hand or shadow boxed beside its detection; a runner's or a rider's are not slivers of a slow
    object). The largest cube of a frame is never a sliver. ``bar`` None: no object is fast."""
    out = np.zeros(len(boxes), bool)
    key = _frame_keys(video, frame)
    order = np.argsort(key, kind="stable")
    for rows in np.split(order, np.flatnonzero(np.diff(key[order])) + 1):
        for i, row in enumerate(rows):
            host = host_of(boxes[row], boxes[rows])
            if host is not None:
                out[row] = bar is None or cube_speed[rows[host]] <= bar
    return out


def _frame_keys(video: np.ndarray, frame: np.ndarray) -> np.ndarray:
    """One integer per (video, frame) pair."""
    return np.asarray(video, np.int64) * (int(np.max(frame, initial=0)) + 1) + np.asarray(frame, np.int64)


def frame_max_share(cube_scores: np.ndarray, mask: np.ndarray, video: np.ndarray, frame: np.ndarray) -> float:
    """The share of the frames holding a cube whose highest-scoring cube is in ``mask``."""
    if len(cube_scores) == 0:
        return 0.0
    key = _frame_keys(video, frame)
    order = np.lexsort((-np.asarray(cube_scores, np.float64), key))
    tops = order[np.r_[True, np.diff(key[order]) != 0]]
    return float(np.mean(mask[tops]))


def without_slivers(cube_scores: np.ndarray, slivers: np.ndarray) -> np.ndarray:
    """``cube_scores`` with the ``slivers`` set to the lowest score of the other cubes, so that they never hold a
    frame's maximum beside another cube."""
    out = np.asarray(cube_scores, np.float64).copy()
    if slivers.any() and not slivers.all():
        out[slivers] = out[~slivers].min()
    return out


def tail_share(frames: Sequence[np.ndarray], reference: Sequence[np.ndarray], percentile: float = 99.0) -> float:
    """The share of ``frames`` (frame scores, per video) above the ``percentile`` of the ``reference`` frame scores:
    in the semi-supervised mode, how often the scored videos go beyond what the normal training videos show. The
    bar comes from the training frames' own scores, so a noisy score (one whose normal frames already reach high
    values) sets itself a high bar."""
    bar = float(np.percentile(np.concatenate(list(reference)), percentile))
    return float(np.mean(np.concatenate(list(frames)) > bar))


def position_normalise(cube_scores: np.ndarray, boxes: np.ndarray, video: np.ndarray, grid: int = 4,
                       min_cubes: int = 30,
                       reference: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Each cube's score against the cubes near the same image position: (score - median) / (1.4826 MAD) within its
    cell of a ``grid`` x ``grid`` partition of each video's box centres (cut at the centres' quantiles, so every
    cell holds cubes); a cell with fewer than ``min_cubes`` cubes uses its video's statistics. Label-free: a fixed
    camera sees normal speed and size change with the image row, so a fast object far away stands out from its
    neighbours, not from the near ones.

    ``reference`` = (scores, boxes) of cubes known to be normal (the training videos' in the semi-supervised mode):
    every cube is then measured against the reference cubes of its cell, the cells cut at the reference centres'
    quantiles, and ``video`` is not used."""
    centres = _box_centres(boxes)
    if reference is not None:
        ref_scores, ref_centres = np.asarray(reference[0], np.float64), _box_centres(reference[1])
        return _against_cells(cube_scores, _grid_cells(centres, ref_centres, grid), ref_scores,
                              _grid_cells(ref_centres, ref_centres, grid), min_cubes)
    out = np.empty(len(cube_scores), np.float64)
    for v in np.unique(video):
        rows = np.flatnonzero(video == v)
        cells = _grid_cells(centres[rows], centres[rows], grid)
        out[rows] = _against_cells(cube_scores[rows], cells, cube_scores[rows], cells, min_cubes)
    return out


def position_trend(energy: np.ndarray, boxes: np.ndarray, moving_mask: np.ndarray, grid: int = 4,
                   min_cubes: int = 30, clamp: float = 4.0) -> tuple[np.ndarray, dict[str, float]]:
    """Per cube, the factor that takes the camera's perspective out of its motion energy (near objects move more
    pixels), and what was fitted. A plane log e = a + b x + c y (position = box centre x, box bottom y) is fitted by
    least squares through the medians of the cells of a ``grid`` x ``grid`` partition cut at the ``moving_mask``
    cubes' position quantiles, each cell with at least ``min_cubes`` of them; the factor is exp(-(b (x - x_m) +
    c (y - y_m))) about the moving cubes' median position, clamped to [1/clamp, clamp]. Three parameters cannot learn
    one cell's anomalies as its normal, as a per-cell normalisation does. With fewer than three such cells, or no
    moving cube, every factor is 1. The record: ``slope_x``, ``slope_y`` (per pixel, of log energy) and ``spread``,
    the 90th over the 10th percentile of the moving cubes' factors."""
    factor, fit = np.ones(len(energy), np.float64), {"slope_x": 0.0, "slope_y": 0.0, "spread": 1.0}
    if not np.any(moving_mask):
        return factor, fit
    position = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, boxes[:, 3]], 1).astype(np.float64)
    mine, log_e = position[moving_mask], np.log(np.asarray(energy, np.float64)[moving_mask])
    cells = _grid_cells(mine, mine, grid)
    rows = np.asarray([(*np.median(mine[cells == c], 0), np.median(log_e[cells == c]))
                       for c in np.unique(cells) if np.sum(cells == c) >= min_cubes])
    if len(rows) < 3:
        return factor, fit
    design = np.column_stack([np.ones(len(rows)), rows[:, 0], rows[:, 1]])
    (_, b, c), *_ = np.linalg.lstsq(design, rows[:, 2], rcond=None)
    centre = np.median(mine, 0)
    factor = np.clip(np.exp(-(b * (position[:, 0] - centre[0]) + c * (position[:, 1] - centre[1]))), 1 / clamp, clamp)
    low, high = np.percentile(factor[moving_mask], [10, 90])
    return factor, {"slope_x": float(b), "slope_y": float(c), "spread": float(high / low)}


def _box_centres(boxes: np.ndarray) -> np.ndarray:
    return np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], 1)


def _grid_cells(centres: np.ndarray, cut_by: np.ndarray, grid: int) -> np.ndarray:
    """Each centre's cell in the ``grid`` x ``grid`` partition cut at the quantiles of the centres ``cut_by``."""
    cells = np.zeros(len(centres), np.int64)
    for axis in (0, 1):
        edges = np.quantile(cut_by[:, axis], np.linspace(0, 1, grid + 1)[1:-1])
        cells = cells * grid + np.searchsorted(edges, centres[:, axis])
    return cells


def _robust(x: np.ndarray) -> tuple[float, float]:
    median, spread = robust_scale(x)
    return median, max(spread, 1e-9)


def _against_cells(x: np.ndarray, cells: np.ndarray, ref: np.ndarray, ref_cells: np.ndarray,
                   min_cubes: int) -> np.ndarray:
    """``x`` as robust z-scores against the ``ref`` values of the same cell (all of ``ref`` where a cell holds
    fewer than ``min_cubes`` of them)."""
    whole, out = _robust(ref), np.empty(len(x), np.float64)
    for c in np.unique(cells):
        mine, theirs = cells == c, ref[ref_cells == c]
        median, spread = _robust(theirs) if len(theirs) >= min_cubes else whole
        out[mine] = (x[mine] - median) / spread
    return out


def blend(model: Sequence[np.ndarray], heuristic: Sequence[np.ndarray], a: float) -> list[np.ndarray]:
    """Frame scores (1 - a) z(model) + a z(motion energy), z over all frames: a = 0 the model's, a = 1 the
    heuristic's."""
    return _weighted_z(model, heuristic, 1 - a, a)


def apply_fusion(model: Sequence[np.ndarray], heuristic: Sequence[np.ndarray], fusion: dict) -> list[np.ndarray]:
    """``model`` and ``heuristic`` (per video, or one array of cubes) combined as a fusion record says
    (``fusion.json``): ``fixed`` with its ``motion_weight`` (:func:`fuse`), else ``blend`` with its
    ``heuristic_weight``. Frames and cubes go through the same rule."""
    if fusion["rule"] == "fixed":
        return fuse(model, heuristic, fusion["motion_weight"])
    return blend(model, heuristic, fusion["heuristic_weight"])


def postprocess(scores: Sequence[np.ndarray], settings) -> list[np.ndarray]:
    """The configured temporal smoothing (``settings.smoothing``, ``smooth_window``), then, if
    ``settings.per_video``, each video z-scored on its own."""
    out = smooth(scores, settings.smooth_window, settings.smoothing)
    return per_video_zscore(out) if settings.per_video else out
