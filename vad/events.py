"""Where the anomalies are: abnormal events as runs of frames whose score passes a threshold.

The threshold is the user's (``events.threshold``) or, by default, a label-free rule: the given percentile of all
frame scores of the run. Runs shorter than ``min_length`` frames are dropped after runs separated by fewer than
``merge_gap`` normal frames are merged. Each event is located by the box of its most anomalous cube.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def event_threshold(frames: Sequence[np.ndarray], settings: Any) -> float:
    """``settings.threshold`` if set, else the ``settings.percentile`` percentile of every frame score."""
    if settings.threshold is not None:
        return float(settings.threshold)
    return float(np.percentile(np.concatenate([np.asarray(f, float) for f in frames]), settings.percentile))


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
             first: int, last: int) -> np.ndarray | None:
    """The box (x1, y1, x2, y2) of the highest-scored cube of video ``v`` in frames first..last (None: no cube)."""
    inside = np.flatnonzero((video == v) & (frame >= first) & (frame <= last))
    if len(inside) == 0:
        return None
    return boxes[inside[np.argmax(cube_score[inside])]]
