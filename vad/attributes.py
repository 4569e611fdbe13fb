"""Per-object attributes of the cached cubes, and their rarity: the object-attribute density scorer.

Attributes (one row per cube): the velocity of the object, as the magnitude-weighted histogram of flow orientations
inside its box (Reiss & Hoshen's velocity feature), and its size (box height, aspect). With ``scale_aware`` the
velocity is divided by the box height, so that a near and a far object walking at the same pace compare (a fixed
camera sees near objects move more pixels).

Rarity (:class:`AttributeKNN`): the mean distance to the k nearest cubes of a bank, on standardised attributes,
the velocity histogram's columns with one pooled scale (per-column scales would blow up the rare directions' nearly
empty bins, so that direction noise outweighs speed). Fitted transductively on the very cubes it scores, two rules
keep it honest: a cube's neighbours never come from the same video within ``exclude_frames`` frames, nor from its
own track at any frame (an anomaly's copies in the next frames, or an object that stays anomalous for hundreds of
frames, must not vouch for themselves), and the bank is cleansed (fit, score, drop the ``cleanse`` share of most
distant cubes, score again against what is left), as CKNN does.
"""
from __future__ import annotations

import numpy as np
import torch

from image_od.detector import OutlierDetector

from .scoring import flow_magnitude

ORIENTATION_BINS = 8
VELOCITY_COLUMNS = ORIENTATION_BINS + 1  # the first columns of cube_attributes: histogram and speed


def velocity_histogram(flow: np.ndarray, bins: int = ORIENTATION_BINS) -> np.ndarray:
    """(N, 2, H, W) flow patches -> (N, bins): per orientation bin, the sum of flow magnitudes of its pixels divided
    by the patch's pixel count (frame pixels per frame; the bins sum to the mean flow magnitude)."""
    f = flow.astype(np.float32)
    pixels = int(np.prod(f.shape[2:]))
    magnitude = flow_magnitude(f).reshape(len(f), pixels)
    angle = np.arctan2(f[:, 1], f[:, 0]).reshape(len(f), pixels)
    index = np.minimum(((angle + np.pi) / (2 * np.pi) * bins).astype(np.int64), bins - 1)
    rows = np.repeat(np.arange(len(f)), magnitude.shape[1])
    hist = np.zeros((len(f), bins), np.float32)
    np.add.at(hist, (rows, index.ravel()), magnitude.ravel())
    return hist / magnitude.shape[1]


def box_heights(boxes: np.ndarray) -> np.ndarray:
    """Box heights in pixels (at least 1)."""
    return np.maximum(boxes[:, 3] - boxes[:, 1], 1.0).astype(np.float32)


def cube_attributes(flow: np.ndarray, boxes: np.ndarray, scale_aware: bool = True,
                    bins: int = ORIENTATION_BINS) -> np.ndarray:
    """(N, bins + 3) attributes: velocity histogram (per box height if ``scale_aware``), speed (its sum), log box
    height and log aspect (width / height)."""
    return attribute_rows(velocity_histogram(flow, bins), boxes, scale_aware)


def attribute_rows(hist: np.ndarray, boxes: np.ndarray, scale_aware: bool = True) -> np.ndarray:
    """``cube_attributes`` from the cubes' velocity histograms (``velocity_histogram``) and boxes."""
    h = box_heights(boxes)
    w = np.maximum(boxes[:, 2] - boxes[:, 0], 1.0)
    if scale_aware:
        hist = hist / h[:, None]
    return np.column_stack([hist, hist.sum(1), np.log(h), np.log(w / h)]).astype(np.float32)


def mirrored_rows(X: np.ndarray, bins: int = ORIENTATION_BINS) -> np.ndarray:
    """Attribute rows (``attribute_rows``) of the same objects seen in a left-right mirror: flow x -> -x sends
    orientation bin j to bin (bins / 2 - 1 - j) mod bins; speed and size are unchanged."""
    if bins % 2:
        raise ValueError(f"mirrored_rows needs an even number of orientation bins, got {bins}")
    out = np.array(X, np.float32, copy=True)
    out[:, :bins] = X[:, [(bins // 2 - 1 - j) % bins for j in range(bins)]]
    return out


def place_corrected_rows(X: np.ndarray, velocity_factor: np.ndarray, height_factor: np.ndarray) -> np.ndarray:
    """Attribute rows (``attribute_rows``) with a camera's perspective taken out: each row's velocity columns times
    its ``velocity_factor`` and its log box height plus log ``height_factor`` (per row: the factors that take the
    trend over image position out of the motion energy and of the box height, ``vad.scoring.position_trend``), so
    that a far runner and a near walker of the same pixel speed no longer look alike."""
    out = np.array(X, np.float32, copy=True)
    out[:, :VELOCITY_COLUMNS] *= np.asarray(velocity_factor, np.float32)[:, None]
    out[:, VELOCITY_COLUMNS] += np.log(np.asarray(height_factor, np.float32))
    return out


def relative_speed(flow: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Mean flow magnitude inside the box per box height: the scale-aware motion heuristic."""
    return velocity_histogram(flow, 1)[:, 0] / box_heights(boxes)


class AttributeKNN(OutlierDetector):
    """Rarity of attribute rows: mean distance to the ``k`` nearest rows of the (cleansed) bank; higher = rarer.

    ``fit(X, groups, times, tracks)`` scores the fitted rows themselves (``decision_scores_``) with the temporal
    exclusion (rows of the same group within ``exclude_frames`` of each other, rows of the same track at any time,
    and the row itself, are never neighbours) and the cleansing; ``decision_function(X)`` scores new rows against
    the bank, with no exclusion. ``max_bank`` bounds the bank (a seeded sample), so that hours of footage cost
    linear time. Columns are centred on their
    median and divided by their standard deviation; the first ``pooled`` columns share one (pooled) scale.
    Distances are computed ``block`` (query rows x bank rows) at a time, so memory does not grow with the bank.
    """

    def __init__(self, k: int = 40, exclude_frames: int = 10, cleanse: float = 0.1, max_bank: int = 50000,
                 pooled: int = 0, seed: int = 0, block: int = 1 << 22):
        self.k, self.exclude_frames, self.cleanse, self.max_bank = k, exclude_frames, cleanse, max_bank
        self.pooled, self.seed, self.block = pooled, seed, block

    def _standardise(self, X: np.ndarray) -> np.ndarray:
        return (np.asarray(X, np.float32) - self.centre_) / self.scale_

    def _knn(self, query: np.ndarray, bank: np.ndarray, q_groups: np.ndarray | None = None,
             q_times: np.ndarray | None = None, q_tracks: np.ndarray | None = None) -> np.ndarray:
        """Mean distance of each query row to its k nearest bank rows; with groups, times and tracks given, bank
        rows of the same group within ``exclude_frames`` (the query row itself included) or of the same track are
        excluded."""
        bank_t = torch.from_numpy(bank)
        k = min(self.k, len(bank))
        out = np.empty(len(query), np.float32)
        rows = max(1, self.block // max(len(bank), 1))  # about 16 MB of distances (and a few of masks) per step
        if q_groups is not None:
            bank_groups = torch.from_numpy(self.bank_groups_)[None]
            bank_times = torch.from_numpy(self.bank_times_.astype(np.int32))[None]
            bank_tracks = None if q_tracks is None else torch.from_numpy(self.bank_tracks_)[None]
        for start in range(0, len(query), rows):
            q = torch.from_numpy(query[start:start + rows])
            d = torch.cdist(q, bank_t)
            if q_groups is not None:
                g = torch.from_numpy(q_groups[start:start + rows])[:, None]
                t = torch.from_numpy(q_times[start:start + rows].astype(np.int32))[:, None]
                near = (g == bank_groups) & ((t - bank_times).abs() <= self.exclude_frames)
                if bank_tracks is not None:
                    near |= torch.from_numpy(q_tracks[start:start + rows])[:, None] == bank_tracks
                d.masked_fill_(near, float("inf"))
            nearest = torch.topk(d, k, dim=1, largest=False).values
            finite = torch.isfinite(nearest)
            # a row whose every candidate is excluded (tiny data) gets the largest finite distance seen
            out[start:start + len(q)] = torch.where(finite, nearest, torch.zeros(())).sum(1).div(
                finite.sum(1).clamp(min=1)).numpy()
        return out

    def fit(self, X: np.ndarray, groups: np.ndarray | None = None, times: np.ndarray | None = None,
            tracks: np.ndarray | None = None) -> "AttributeKNN":
        """``groups`` (videos), ``times`` (frames) and ``tracks`` (object ids, unique over groups) say which rows
        never vouch for each other; None: one group, times ``exclude_frames`` apart, no tracks."""
        X = np.asarray(X, np.float32)
        if X.ndim != 2 or len(X) < 2:
            raise ValueError(f"AttributeKNN needs a (N, D) attribute array with N >= 2, got shape {X.shape}")
        groups = np.zeros(len(X), np.int64) if groups is None else np.asarray(groups, np.int64)
        times = np.arange(len(X), dtype=np.int64) * (self.exclude_frames + 1) if times is None \
            else np.asarray(times, np.int64)
        tracks = None if tracks is None else np.asarray(tracks, np.int64)
        if not len(groups) == len(times) == len(X) or (tracks is not None and len(tracks) != len(X)):
            raise ValueError(f"AttributeKNN.fit: {len(X)} rows but {len(groups)} groups, {len(times)} times"
                             + ("" if tracks is None else f" and {len(tracks)} tracks"))
        self.centre_ = np.median(X, 0)
        scale = np.maximum(X.std(0), 1e-6)
        if self.pooled:  # one scale for a histogram's columns keeps its geometry: rare bins are not blown up
            scale[:self.pooled] = max(float(X[:, :self.pooled].std()), 1e-6)
        self.scale_ = scale.astype(np.float32)
        Z = self._standardise(X)
        rng = np.random.default_rng(self.seed)
        members = np.arange(len(Z)) if len(Z) <= self.max_bank else np.sort(rng.choice(len(Z), self.max_bank,
                                                                                          replace=False))
        scores = self._score_with_bank(Z, groups, times, tracks, members)
        if self.cleanse > 0:
            keep = members[scores[members] <= np.quantile(scores[members], 1 - self.cleanse)]
            scores = self._score_with_bank(Z, groups, times, tracks, keep)
        self.decision_scores_ = scores
        return self

    def _score_with_bank(self, Z: np.ndarray, groups: np.ndarray, times: np.ndarray, tracks: np.ndarray | None,
                         members: np.ndarray) -> np.ndarray:
        self.bank_, self.bank_groups_, self.bank_times_ = Z[members], groups[members], times[members]
        self.bank_tracks_ = None if tracks is None else tracks[members]
        return self._knn(Z, self.bank_, groups, times, tracks)

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        self._check_fitted("bank_")
        return self._knn(self._standardise(X), self.bank_)
