"""Where the anomalies are, measured against pixel masks: RBDC, TBDC and the pixel-level criterion.

RBDC and TBDC are the region- and track-based detection criteria of Ramachandra and Jones (WACV 2020). Ground truth:
the connected components of each frame's anomaly mask, as boxes (regions), linked from frame to frame into tracks.
Detections: the cubes' boxes with their scores. At a threshold t, a region is detected when a detection of its frame
with score >= t overlaps it with IoU >= ``beta`` (0.1); a detection that overlaps no region that much is a false
positive; a track is detected when at least ``alpha`` (10 %) of its regions are. RBDC (TBDC) is the area under the
curve of the region (track) detection rate against false positives per frame, for 0 to 1 false positive per frame,
normalised to 1. Deviations: the official code matches pixel regions and uses annotated tracks; we match boxes of
mask components and link them by box overlap (IoU >= ``beta``, consecutive frames), since only masks exist here.

The pixel-level criterion is the UCSD one (Mahadevan et al. 2010): at threshold t a frame's detected pixels are the
union of its boxes scoring >= t; an abnormal frame is a true positive when they cover at least 40 % of its anomaly
mask; a normal frame is a false positive when any box scores >= t. Its ROC gives the pixel-level AUC.
"""
from __future__ import annotations

import math
from typing import Sequence

import cv2
import numpy as np
from sklearn.metrics import roc_auc_score

from .regions import iou, pairs_by_iou


def mask_regions(mask: np.ndarray, min_pixels: int = 1) -> np.ndarray:
    """Boxes (x1, y1, x2, y2) of the 8-connected components of a binary mask (x2, y2 exclusive), (K, 4)."""
    n, _, stats, _ = cv2.connectedComponentsWithStats((np.asarray(mask) > 0).astype(np.uint8), connectivity=8)
    keep = [i for i in range(1, n) if stats[i, cv2.CC_STAT_AREA] >= min_pixels]
    return np.array([[stats[i, 0], stats[i, 1], stats[i, 0] + stats[i, 2], stats[i, 1] + stats[i, 3]] for i in keep],
                    np.float32).reshape(-1, 4)


def link_tracks(regions: Sequence[np.ndarray], beta: float = 0.1) -> list[np.ndarray]:
    """A track id for every region of every frame of one video: a region continues the track of the best-overlapping
    region (IoU >= ``beta``) of the frame before that no other region continued, else starts a new track."""
    ids, previous, next_id = [], (np.zeros((0, 4)), np.zeros(0, int)), 0
    for boxes in regions:
        mine = np.full(len(boxes), -1)
        for i, j in pairs_by_iou(boxes, previous[0], beta):
            mine[i] = previous[1][j]
        for i in np.flatnonzero(mine < 0):
            mine[i], next_id = next_id, next_id + 1
        ids.append(mine)
        previous = (boxes, mine)
    return ids


def _area_under(fp_per_frame: np.ndarray, rate: np.ndarray, max_fpr: float = 1.0) -> float:
    """Area under the step-free (trapezoid) curve rate(fp) from 0 to ``max_fpr``, normalised by ``max_fpr``; the
    curve starts at (0, 0) and is held at its last rate up to ``max_fpr``."""
    x, y = np.r_[0.0, fp_per_frame], np.r_[0.0, rate]
    if x[-1] < max_fpr:
        x, y = np.r_[x, max_fpr], np.r_[y, y[-1]]
    inside = x <= max_fpr
    cut = np.argmin(inside) if not inside.all() else None
    if cut is not None:  # interpolate the rate at max_fpr
        y_cut = np.interp(max_fpr, x[cut - 1:cut + 1], y[cut - 1:cut + 1])
        x, y = np.r_[x[:cut], max_fpr], np.r_[y[:cut], y_cut]
    return float(np.trapezoid(y, x) / max_fpr)


def rbdc_tbdc(detections: Sequence[tuple[np.ndarray, np.ndarray]], regions: Sequence[np.ndarray],
              tracks: Sequence[np.ndarray], beta: float = 0.1, alpha: float = 0.1,
              max_fpr: float = 1.0) -> dict[str, float]:
    """RBDC and TBDC over frames (all videos concatenated): ``detections`` per frame (boxes (K, 4), scores (K,)),
    ``regions`` per frame (ground-truth boxes (M, 4)), ``tracks`` per frame (a globally unique track id per region)."""
    region_score, region_track, false_scores = [], [], []
    for (boxes, scores), truth, track in zip(detections, regions, tracks):
        scores = np.asarray(scores, float)
        overlap = iou(boxes, truth) >= beta  # (K, M)
        false_scores.append(scores[~overlap.any(1)] if len(truth) else scores)
        for j in range(len(truth)):
            matched = scores[overlap[:, j]]
            region_score.append(matched.max() if len(matched) else -np.inf)
            region_track.append(track[j])
    region_score, region_track = np.asarray(region_score), np.asarray(region_track)
    false_scores = np.concatenate(false_scores) if false_scores else np.zeros(0)
    track_score = []
    for t in np.unique(region_track):
        s = np.sort(region_score[region_track == t])[::-1]
        track_score.append(s[math.ceil(alpha * len(s)) - 1])
    track_score = np.asarray(track_score)
    n_frames = len(detections)
    thresholds = np.unique(np.r_[region_score[np.isfinite(region_score)], false_scores])[::-1]
    fp = np.array([(false_scores >= t).sum() for t in thresholds]) / max(n_frames, 1)
    out = {"n_regions": int(len(region_score)), "n_tracks": int(len(track_score)), "n_frames": n_frames}
    for name, scores in (("rbdc", region_score), ("tbdc", track_score)):
        rate = np.array([(scores >= t).mean() for t in thresholds]) if len(scores) else np.zeros(len(thresholds))
        out[name] = _area_under(fp, rate, max_fpr) if len(scores) else float("nan")
    return out


def pixel_level(detections: Sequence[tuple[np.ndarray, np.ndarray]], masks: Sequence[np.ndarray],
                cover: float = 0.4) -> dict[str, float]:
    """The pixel-level criterion's AUC: every frame gets the threshold up to which it counts as detected (abnormal:
    the highest t at which its boxes scoring >= t cover ``cover`` of the mask; normal: its best box's score, the
    highest t at which it is a false positive), so that one ROC over these per-frame values is the criterion's."""
    values, labels = [], []
    for (boxes, scores), mask in zip(detections, masks):
        mask = np.asarray(mask) > 0
        scores = np.asarray(scores, float)
        if not mask.any():
            values.append(scores.max() if len(scores) else -np.inf)
            labels.append(0)
            continue
        covered, need, value = np.zeros_like(mask), cover * mask.sum(), -np.inf
        for k in np.argsort(-scores):
            x1, y1, x2, y2 = np.round(boxes[k]).astype(int)
            covered[max(y1, 0):max(y2, 0), max(x1, 0):max(x2, 0)] = True
            if (covered & mask).sum() >= need:
                value = scores[k]
                break
        values.append(value)
        labels.append(1)
    values, labels = np.asarray(values), np.asarray(labels)
    finite = values[np.isfinite(values)]
    floor = (finite.min() - 1) if len(finite) else 0.0
    values = np.where(np.isfinite(values), values, floor)
    return {"pixel_auc": float(roc_auc_score(labels, values)) if 0 < labels.sum() < len(labels) else float("nan"),
            "pixel_detected_share": float(np.mean(values[labels == 1] > floor)) if labels.any() else float("nan")}


def localisation_metrics(cubes: dict[str, np.ndarray], scores: np.ndarray,
                         masks: Sequence[Sequence[np.ndarray] | None]) -> dict:
    """RBDC, TBDC and the pixel-level AUC of a run's cube boxes (``cubes``: ``video``, ``frame``, ``boxes``) ranked
    by ``scores``, against per-video lists of per-frame pixel ``masks``; a cube's box counts in its own frame. A
    video whose entry is None has no masks and is left out (UCSD Ped1: 10 of 36 videos have them)."""
    detections, regions, tracks, flat_masks, next_track = [], [], [], [], 0
    order = np.lexsort((cubes["frame"], cubes["video"]))
    video, frame = cubes["video"][order], cubes["frame"][order]
    for v, video_masks in enumerate(masks):
        if video_masks is None:
            continue
        video_regions = [mask_regions(m) for m in video_masks]
        video_tracks = link_tracks(video_regions)
        lo_v, hi_v = np.searchsorted(video, v, "left"), np.searchsorted(video, v, "right")
        bounds = lo_v + np.searchsorted(frame[lo_v:hi_v], np.arange(len(video_masks) + 1), "left")
        for t, (mask, truth, ids) in enumerate(zip(video_masks, video_regions, video_tracks)):
            rows = order[bounds[t]:bounds[t + 1]]
            detections.append((cubes["boxes"][rows], scores[rows]))
            regions.append(truth)
            tracks.append(ids + next_track)
            flat_masks.append(mask)
        next_track += 1 + max((int(i.max()) for i in video_tracks if len(i)), default=-1)
    return {**rbdc_tbdc(detections, regions, tracks), **pixel_level(detections, flat_masks),
            "n_videos": sum(m is not None for m in masks), "n_videos_total": len(masks), "beta": 0.1, "alpha": 0.1}
