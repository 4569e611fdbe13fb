"""Where the anomalies are: abnormal events as runs of frames whose score passes a threshold.

The threshold (``events.threshold``) is a label-free rule over all frame scores of the run, or a fixed value:
``percentile`` (frames above the ``events.percentile`` percentile: alarms at a fixed rate), ``mad`` (above
median + ``events.mad_k`` robust deviations, 1.4826 MAD: alarms only where scores stand out), ``mixture`` (where a
two-component Gaussian mixture's upper component becomes the likelier: the split of a bimodal score
distribution), or a number. Runs shorter than ``min_length`` frames are dropped after runs separated by fewer than
``merge_gap`` normal frames are merged. Each event is located by the box of its most anomalous cube, shown with
its object where it is a part of one (:func:`object_box`).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .regions import host_of
from .scoring import robust_scale

THRESHOLD_RULES = ("percentile", "mad", "mixture")


def event_threshold(frames: Sequence[np.ndarray], settings: Any) -> tuple[float, str]:
    """The alarm threshold of ``settings.threshold`` (a rule of ``THRESHOLD_RULES`` or a number) over every frame
    score, and a description of the rule that made it (``events.json``)."""
    rule = settings.threshold
    x = np.concatenate([np.asarray(f, float) for f in frames])
    if not isinstance(rule, str):
        return float(rule), "fixed"
    if rule == "percentile":
        return float(np.percentile(x, settings.percentile)), f"percentile {settings.percentile:g}"
    if rule == "mad":
        median, spread = robust_scale(x)
        return median + settings.mad_k * spread, f"median + {settings.mad_k:g} MAD"
    if rule == "mixture":
        return mixture_split(x), "two-component mixture split"
    raise ValueError(f"unknown events.threshold rule {rule!r}; expected one of {THRESHOLD_RULES} or a number")


def mixture_split(x: np.ndarray, seed: int = 0) -> float:
    """The score where a two-component Gaussian mixture fitted to ``x`` starts to prefer its upper component (the
    point between the two means where the posteriors cross); the upper mean when they never cross."""
    from sklearn.mixture import GaussianMixture

    x = np.asarray(x, float).reshape(-1, 1)
    if len(x) < 2 or np.ptp(x) == 0:
        return float(x.max()) if len(x) else 0.0
    gmm = GaussianMixture(2, random_state=seed).fit(x)
    low, high = np.argsort(gmm.means_[:, 0])
    grid = np.linspace(gmm.means_[low, 0], gmm.means_[high, 0], 2001).reshape(-1, 1)
    upper = gmm.predict_proba(grid)[:, high] >= 0.5
    return float(grid[np.argmax(upper), 0]) if upper.any() else float(gmm.means_[high, 0])


def find_events(scores: np.ndarray, threshold: float, min_length: int = 1, merge_gap: int = 0) -> list[tuple[int, int]]:
    """(first, last) frame of every run of ``scores > threshold`` (inclusive), gaps shorter than ``merge_gap``
    frames bridged, runs shorter than ``min_length`` frames dropped."""
    above = np.asarray(scores) > threshold
    edges = np.flatnonzero(np.diff(np.concatenate([[0], above.astype(np.int8), [0]])))
    runs = [[int(a), int(b) - 1] for a, b in zip(edges[::2], edges[1::2])]
    merged: list[list[int]] = []
    for run in runs:
        if merged and run[0] - merged[-1][1] - 1 < merge_gap:
            merged[-1][1] = run[1]
        else:
            merged.append(run)
    return [(a, b) for a, b in merged if b - a + 1 >= min_length]


def peak_box(video: np.ndarray, frame: np.ndarray, boxes: np.ndarray, cube_score: np.ndarray, v: int,
             peak: int, first: int, last: int) -> np.ndarray | None:
    """The box (x1, y1, x2, y2) of the highest-scored cube of video ``v`` in its event's ``peak`` frame, the frame a
    report shows (the event's best cube may sit in another frame, where the object was elsewhere); when the peak
    frame has no cube, in the event's frame nearest to it that has one (first..last; None: no cube at all)."""
    inside = np.flatnonzero((video == v) & (frame >= first) & (frame <= last))
    if len(inside) == 0:
        return None
    near = inside[np.lexsort((frame[inside], np.abs(frame[inside] - peak)))[0]]  # equally near: the earlier
    rows = inside[frame[inside] == frame[near]]
    return object_box(boxes[rows], int(np.argmax(cube_score[rows])))


def object_box(boxes: np.ndarray, i: int, gap: float = 4.0, ratio: float = 4.0) -> np.ndarray:
    """Box ``i`` of one frame's ``boxes``, united with the largest box of the frame that it touches (within ``gap``
    pixels) and that has more than ``ratio`` times its area: a part of an object boxed on its own (the motion beside
    a detection that ends short of the feet, a bag in a hand, a bicycle under its rider) is shown with its object.
    Only where the anomaly is shown changes (events.csv, the report), never a score or the localisation metrics."""
    b = np.asarray(boxes, np.float32)
    h = host_of(b[i], b, gap, ratio)
    if h is None:
        return b[i]
    host = b[h]
    return np.concatenate([np.minimum(b[i, :2], host[:2]), np.maximum(b[i, 2:], host[2:])])
