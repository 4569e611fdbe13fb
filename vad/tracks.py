"""Objects followed from frame to frame: the cubes of neighbouring frames linked by box overlap, and a cube value
averaged along its object's track.

Why: one flow field measures an object's speed with noise (a flat interior, a flicker, a box that slips); an
object's speed changes slowly, so its mean over the few frames around a cube measures it better than the cube's
own frame, and unlike smoothing frame scores it never mixes two objects (docs/BENCHMARKS.md#track-energy).
"""
from __future__ import annotations

import numpy as np

from vad.regions import pairs_by_iou


def link_tracks(video: np.ndarray, frame: np.ndarray, boxes: np.ndarray, min_iou: float = 0.3) -> np.ndarray:
    """A track id per cube: each cube of frame t continues the track of the cube of frame t-1 (same video) it
    overlaps most, one to one, highest IoU first, IoU at least ``min_iou``; else it starts a new track. A track
    therefore holds one cube per frame over consecutive frames."""
    track = np.full(len(video), -1, np.int64)
    if len(video) == 0:
        return track
    order = np.lexsort((frame, video))
    v, f = video[order], frame[order]
    starts = np.flatnonzero(np.r_[True, (v[1:] != v[:-1]) | (f[1:] != f[:-1])])
    groups = np.split(order, starts[1:])
    next_id, prev = 0, None
    for g, s in zip(groups, starts):
        if prev is not None and v[s] == video[prev[0]] and f[s] == frame[prev[0]] + 1:
            for r, c in pairs_by_iou(boxes[g], boxes[prev], min_iou):
                track[g[r]] = track[prev[c]]
        new = g[track[g] < 0]
        track[new] = np.arange(next_id, next_id + len(new))
        next_id += len(new)
        prev = g
    return track


def track_mean(values: np.ndarray, track: np.ndarray, frame: np.ndarray, window: int) -> np.ndarray:
    """Each cube's value averaged over the cubes of its track within ``window`` frames either side (fewer at the
    track's ends); ``window`` 0 returns the values as they are. ``track`` from :func:`link_tracks`."""
    values = np.asarray(values, np.float64)
    if window <= 0 or len(values) == 0:
        return values
    order = np.lexsort((frame, track))
    t = track[order]
    first = np.r_[True, t[1:] != t[:-1]]
    start = np.maximum.accumulate(np.where(first, np.arange(len(t)), 0))  # each row's track start
    end = np.r_[np.flatnonzero(first)[1:], len(t)][np.cumsum(first) - 1]  # and its end (exclusive)
    i = np.arange(len(t))
    lo, hi = np.maximum(start, i - window), np.minimum(end, i + window + 1)
    csum = np.r_[0.0, np.cumsum(values[order])]
    out = np.empty_like(values)
    out[order] = (csum[hi] - csum[lo]) / (hi - lo)
    return out
