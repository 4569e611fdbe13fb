"""What a person looks at after an image run: ``image-od score``'s most anomalous images in a grid and its score
histogram (``plots/``), and ``image-od bench``'s ``report.html`` (the Table-1 layout, every row, minutes per class)."""
from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure  # draws with Agg itself: no pyplot, no global backend choice

from image_od.files.atomic import atomic_path
from pipelines.figures import PAGE_SCRIPT, grid_figure


def plot_top_outliers(images: np.ndarray, names: list[str], scores: np.ndarray, path: Path, top: int = 24) -> Path:
    """A grid of the ``top`` most anomalous images, each titled with its rank, score and name."""
    order = np.argsort(-scores)[:top]
    fig, axes = grid_figure(len(order), 8, 1.6, 1.9)
    for rank, (ax, i) in enumerate(zip(axes, order), 1):
        img = images[i]
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=255)
        ax.set_title(f"#{rank} {scores[i]:.3g}\n{names[i][-18:]}", fontsize=7)
    fig.suptitle(f"the {len(order)} most anomalous of {len(scores)} images (rank, score, name)", fontsize=9)
    fig.tight_layout()
    _save(fig, path)
    return path


def plot_score_histogram(scores: np.ndarray, path: Path) -> Path:
    fig = Figure(figsize=(6, 3))
    ax = fig.subplots()
    ax.hist(scores, bins=min(60, max(10, len(scores) // 10)), color="tab:blue", alpha=0.8)
    ax.set(xlabel="outlier score (higher = more anomalous)", ylabel="images", title=f"{len(scores)} images")
    fig.tight_layout()
    _save(fig, path)
    return path


def _save(fig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")


def _markdown_table_html(markdown: str) -> str:
    """A markdown pipe table (the bench's summaries) as an HTML table."""
    lines = [line for line in markdown.strip().splitlines() if line.startswith("|")]
    cells = [[c.strip().replace("**", "") for c in line.strip("|").split("|")] for line in lines]
    head, body = cells[0], [r for r in cells[2:]]
    return ("<table><thead><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in head) + "</tr></thead><tbody>" +
            "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in body) +
            "</tbody></table>")


def write_bench_report(out: Path, rows: list[dict[str, Any]], summary: str, title: str) -> Path:
    """``out/report.html``: the summary in the Table-1 layout, then every result row (one per class, seed and
    method) with its minutes, sortable by a click on a column."""
    columns = ["dataset", "protocol", "method", "ratio", "class", "seed", "auroc", "aupr_in", "aupr_out", "fit_s",
               "score_s"]
    body = "".join("<tr>" + "".join(
        f"<td>{100 * r[c]:.1f}</td>" if c in ("auroc", "aupr_in", "aupr_out") else
        f"<td>{r[c] / 60:.2f}</td>" if c in ("fit_s", "score_s") else f"<td>{html.escape(str(r[c]))}</td>"
        for c in columns) + "</tr>" for r in rows)
    head = "".join(f"<th>{c.replace('_s', ' min').replace('auroc', 'AUROC %')}</th>" for c in columns)
    page = f"""<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:24px auto;max-width:1100px;color:#222}}
table{{border-collapse:collapse;font-size:.9em;margin:8px 0 24px}} th,td{{padding:3px 8px;border-bottom:1px solid #eee}}
th{{background:#f6f6f6;cursor:pointer;text-align:left}} h2{{font-size:1.15em;border-bottom:1px solid #ddd}}</style>
</head><body><h1>{html.escape(title)}</h1>
<p>AUROC, AUPR-In and AUPR-Out in %, mean over classes (± std over seeds when there are several), minutes per class
(fit + score). Files: <a href="results.csv">results.csv</a> · <a href="summary.md">summary.md</a></p>
<h2>Table 1 layout</h2>{_markdown_table_html(summary)}
<h2>Every row ({len(rows)})</h2><table class="rows sortable"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>
<script>{PAGE_SCRIPT}</script></body></html>"""
    path = out / "report.html"
    with atomic_path(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return path
