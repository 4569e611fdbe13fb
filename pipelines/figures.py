"""Matplotlib figures without pyplot (a ``Figure`` draws with Agg itself: no global backend choice)."""
from __future__ import annotations

from matplotlib.figure import Figure


def grid_figure(n: int, max_cols: int, cell_w: float, cell_h: float) -> tuple[Figure, list]:
    """A figure of ``n`` image panels, at most ``max_cols`` a row, each ``cell_w`` x ``cell_h`` inches, axes off;
    returns the figure and the first ``n`` axes in reading order."""
    cols = max(1, min(max_cols, n))
    rows = max(1, -(-n // cols))
    fig = Figure(figsize=(cell_w * cols, cell_h * rows))
    axes = list(fig.subplots(rows, cols, squeeze=False).ravel())
    for ax in axes:
        ax.axis("off")
    return fig, axes[:n]
