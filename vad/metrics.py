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


def auc_macro(scores: Sequence[np.ndarray], labels: Sequence[np.ndarray]) -> float:
    """Mean of per-video AUCs over the videos that have both normal and abnormal frames."""
    aucs = [roc_auc_score(y, s) for s, y in zip(scores, labels) if 0 < np.sum(y) < len(y)]
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
