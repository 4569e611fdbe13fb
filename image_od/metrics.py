"""Outlier-detection metrics as the E3Outlier reference code computes them.

Scores follow the project's convention (higher = more anomalous); ``is_outlier`` is 1 for outliers.
AUPR-in takes the inliers as positives (ranked by normality), AUPR-out the outliers; both are the trapezoidal
area under the precision-recall curve (``sklearn.metrics.auc``), not average precision, which is given apart.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_auc_score


def aupr(positive: np.ndarray, score: np.ndarray) -> float:
    precision, recall, _ = precision_recall_curve(positive, score)
    return float(auc(recall, precision))


def od_metrics(is_outlier: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """AUROC, AUPR-in, AUPR-out and average precision (outliers positive)."""
    y = np.asarray(is_outlier).astype(int)
    s = np.asarray(scores, float)
    return {"auroc": float(roc_auc_score(y, s)), "aupr_in": aupr(1 - y, -s), "aupr_out": aupr(y, s),
            "ap_out": float(average_precision_score(y, s))}


def summarise(values: np.ndarray) -> tuple[float, float]:
    """``values[seed, class]`` -> (mean over classes and seeds, std over seeds of the class-mean), as the paper
    reports a dataset figure."""
    values = np.asarray(values, float)
    per_seed = values.mean(axis=1)
    return float(per_seed.mean()), float(per_seed.std())


def mean_std_by_seed(rows: Sequence[dict], key: str) -> tuple[float, float]:
    """Rows with 'seed', 'class' and ``key`` -> summarise over a complete seed x class grid."""
    seeds = sorted({r["seed"] for r in rows})
    classes = sorted({r["class"] for r in rows})
    grid = {(r["seed"], r["class"]): r[key] for r in rows}
    missing = [(s, c) for s in seeds for c in classes if (s, c) not in grid]
    if missing:
        raise ValueError(f"incomplete results: missing (seed, class) {missing[:5]}")
    return summarise(np.array([[grid[(s, c)] for c in classes] for s in seeds]))
