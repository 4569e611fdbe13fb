"""Plots a person would rather look at than read: per-video score curves with abnormal frames shaded, ROC, and the
most anomalous frames with their boxes (``render.plot_top_events``)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure  # a Figure draws with Agg itself: no pyplot, no global backend choice
from sklearn.metrics import roc_auc_score, roc_curve

from pipelines.video import run_folder


def _shade(ax, labels: np.ndarray) -> None:
    """Shade runs of abnormal frames."""
    edges = np.flatnonzero(np.diff(np.r_[0, labels.astype(int), 0]))
    for start, stop in zip(edges[::2], edges[1::2]):
        ax.axvspan(start - 0.5, stop - 0.5, color="tab:red", alpha=0.18, lw=0)


def _normalise(x: np.ndarray) -> np.ndarray:
    span = x.max() - x.min()
    return (x - x.min()) / span if span > 0 else np.zeros_like(x)


def plot_video(name: str, score: np.ndarray, heuristic: np.ndarray, labels: np.ndarray | None, path: Path,
               model: np.ndarray | None = None) -> None:
    fig = Figure(figsize=(9, 2.8))
    ax = fig.subplots()
    if labels is not None:
        _shade(ax, labels)
    ax.plot(_normalise(score), color="tab:blue", lw=1.4, label="final score")
    if model is not None and not np.allclose(model, score):
        ax.plot(_normalise(model), color="tab:green", lw=0.9, label="learned score alone")
    ax.plot(_normalise(heuristic), color="tab:gray", lw=0.9, ls="--", label="motion energy")
    title = f"video {name}"
    if labels is not None and 0 < labels.sum() < len(labels):
        title += f"  (AUC {roc_auc_score(labels, score):.3f}; shaded = abnormal)"
    ax.set(title=title, xlabel="frame", ylabel="score (min-max per video)", xlim=(0, len(score) - 1))
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot_roc(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Path) -> None:
    fig = Figure(figsize=(4.5, 4.5))
    ax = fig.subplots()
    for label, (score, y) in curves.items():
        fpr, tpr, _ = roc_curve(y, score)
        ax.plot(fpr, tpr, label=f"{label} (AUC {roc_auc_score(y, score):.3f})")
    ax.plot([0, 1], [0, 1], color="k", lw=0.6, ls=":")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="frame-level ROC (all frames)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot_run(out: str | Path) -> Path:
    """Write plots/<video>.png for every video and plots/roc.png when labels exist; return the folder."""
    from pipelines.video.render import plot_top_events
    from vad.config import load_config

    out = Path(out)
    folder = out / "plots"
    scores = run_folder.read_frame_scores(out)
    run_folder.record(out, *(folder / f"{name}.png" for name in [*scores, "roc", "top_events"]))
    folder.mkdir(exist_ok=True)
    for name, d in scores.items():
        plot_video(name, d["score"], d["heuristic"], d["label"], folder / f"{name}.png", d["model"])
    if all(d["label"] is not None for d in scores.values()):
        y = np.concatenate([d["label"] for d in scores.values()])
        if 0 < y.sum() < len(y):
            plot_roc({label: (np.concatenate([d[key] for d in scores.values()]), y)
                      for label, key in (("final", "score"), ("learned alone", "model"),
                                         ("motion energy", "heuristic"))}, folder / "roc.png")
    plot_top_events(out, load_config(out / "config.yaml").events.top)
    return folder
