"""What the reports draw with: matplotlib figures without pyplot (a ``Figure`` draws with Agg itself: no global
backend choice), and the script the HTML reports share."""
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


# Sorting of every ``table.sortable`` by a click on a column (a cell's ``data-sort`` wins over its text), and, once the
# page is loaded, ``data-images="decoded/total"`` on the body: the browser test reads it to know every image decoded.
PAGE_SCRIPT = """
document.querySelectorAll('table.sortable th').forEach((th, col) => th.addEventListener('click', () => {
  const body = th.closest('table').tBodies[0], rows = Array.from(body.rows);
  const dir = th.dataset.dir === 'asc' ? -1 : 1; th.dataset.dir = dir === 1 ? 'asc' : 'desc';
  const key = r => { const c = r.cells[col]; const v = c.dataset.sort ?? c.textContent; return isNaN(v) ? v : +v; };
  rows.sort((a, b) => (key(a) > key(b) ? 1 : key(a) < key(b) ? -1 : 0) * dir).forEach(r => body.appendChild(r));
}));
window.addEventListener('load', () => {
  const imgs = Array.from(document.images);
  document.body.dataset.images = imgs.filter(i => i.complete && i.naturalWidth > 0).length + '/' + imgs.length;
});
"""
