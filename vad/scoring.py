"""From cube scores to frame scores, and the motion-energy baseline.

Convention everywhere: higher = more anomalous. A frame's score is its most anomalous cube (the paper's
"minimum of the normality scores"); a frame without any cube gets the least anomalous score seen.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def motion_energy(flow: np.ndarray) -> np.ndarray:
    """Mean optical-flow magnitude inside each cube's box: flow (N,2,H,W) -> (N,)."""
    f = flow.astype(np.float32)
    return np.sqrt(f[:, 0] ** 2 + f[:, 1] ** 2).mean(axis=(1, 2))


def zscore(x: np.ndarray) -> np.ndarray:
    sd = x.std()
    return (x - x.mean()) / (sd if sd > 0 else 1.0)


def frame_scores(cube_scores: np.ndarray, video: np.ndarray, frame: np.ndarray,
                 n_frames: Sequence[int]) -> list[np.ndarray]:
    """Max cube score of every frame of every video; frames without cubes get the global minimum."""
    floor = float(cube_scores.min()) if len(cube_scores) else 0.0
    out = []
    for v, n in enumerate(n_frames):
        s = np.full(n, -np.inf)
        mask = video == v
        np.maximum.at(s, frame[mask], cube_scores[mask])
        s[~np.isfinite(s)] = floor
        out.append(s)
    return out


def smooth(scores: Sequence[np.ndarray], window: int) -> list[np.ndarray]:
    """Centred moving average within each video (never across videos); window <= 1 leaves scores as they are."""
    if window <= 1:
        return [np.asarray(s, float) for s in scores]
    kernel = np.ones(window) / window
    out = []
    for s in scores:
        padded = np.pad(np.asarray(s, float), (window // 2, window - 1 - window // 2), mode="edge")
        out.append(np.convolve(padded, kernel, mode="valid"))
    return out
