"""Frame-level video metrics: micro AUC (all frames concatenated, the standard), macro AUC, EER."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve


def auc_micro(scores: Sequence[np.ndarray], labels: Sequence[np.ndarray]) -> float:
    """One ROC over every frame of every video (anomaly = positive, higher score = more anomalous)."""
    y = np.concatenate(labels)
    if y.min() == y.max():
        return float("nan")
    return float(roc_auc_score(y, np.concatenate(scores)))


def video_aucs(scores: Sequence[np.ndarray], labels: Sequence[np.ndarray]) -> list[float | None]:
    """Each video's own frame AUC; None for a video whose frames are all normal or all abnormal."""
    return [float(roc_auc_score(y, s)) if 0 < np.sum(y) < len(y) else None for s, y in zip(scores, labels)]


def auc_macro(scores: Sequence[np.ndarray], labels: Sequence[np.ndarray]) -> float:
    """Mean of per-video AUCs over the videos that have both normal and abnormal frames."""
    aucs = [a for a in video_aucs(scores, labels) if a is not None]
    return float(np.mean(aucs)) if aucs else float("nan")


def eer(scores: Sequence[np.ndarray], labels: Sequence[np.ndarray]) -> float:
    """Equal error rate of the micro ROC: where the false-positive and false-negative rates meet."""
    y = np.concatenate(labels)
    if y.min() == y.max():
        return float("nan")
    fpr, tpr, _ = roc_curve(y, np.concatenate(scores))
    fnr = 1 - tpr
    i = int(np.nanargmin(np.abs(fnr - fpr)))
    return float((fpr[i] + fnr[i]) / 2)


def frame_metrics(scores: Sequence[np.ndarray], labels: Sequence[np.ndarray]) -> dict[str, float]:
    return {"auc_micro": auc_micro(scores, labels), "auc_macro": auc_macro(scores, labels),
            "eer": eer(scores, labels), "n_frames": int(sum(len(s) for s in scores))}


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(first, last) frame of every run of true values (inclusive)."""
    edges = np.flatnonzero(np.diff(np.r_[0, np.asarray(mask, np.int8), 0]))
    return [(int(a), int(b) - 1) for a, b in zip(edges[::2], edges[1::2])]


def alarm_metrics(events: Sequence[Sequence[tuple[int, int]]], labels: Sequence[np.ndarray],
                  fps: float) -> dict[str, float]:
    """How a run's alarms (``events``: per video, (first, last) frames, as ``events.csv``) meet the labels.

    Frame level: the frames inside an event are the alarmed ones; precision, recall and F1 over every frame.
    Event level: ``hits`` = the share of abnormal intervals (runs of abnormal frames) that some event overlaps;
    ``false_alarms`` = events that overlap no abnormal frame, also per minute of footage at ``fps``."""
    alarmed = [np.zeros(len(y), bool) for y in labels]
    for a, evs in zip(alarmed, events):
        for first, last in evs:
            a[first:last + 1] = True
    a, y = np.concatenate(alarmed), np.concatenate(labels).astype(bool)
    tp = int((a & y).sum())
    precision = tp / a.sum() if a.sum() else float("nan")
    recall = tp / y.sum() if y.sum() else float("nan")
    f1 = 2 * precision * recall / (precision + recall) if tp else 0.0
    intervals = hit = false = n_events = 0
    for evs, lab in zip(events, labels):
        lab = np.asarray(lab).astype(bool)
        for first, last in runs(lab):
            intervals += 1
            hit += any(e0 <= last and e1 >= first for e0, e1 in evs)
        for e0, e1 in evs:
            n_events += 1
            false += not lab[e0:e1 + 1].any()
    minutes = len(y) / fps / 60
    return {"precision": float(precision), "recall": float(recall), "f1": float(f1), "events": n_events,
            "abnormal_intervals": intervals, "hits": hit / intervals if intervals else float("nan"),
            "false_alarms": false, "false_alarms_per_min": false / minutes if minutes else float("nan")}
