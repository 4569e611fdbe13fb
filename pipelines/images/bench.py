"""``image-od bench``: the paper's image outlier-detection protocol over datasets x methods x ratios x classes x
seeds, one CSV row per cell and method, resumable, with a summary in the layout of the paper's Table 1.

The methods and how they are built from the profile: ``pipelines.images.methods`` (one line each) and
``pipelines.images.profiles``. Each row's ``fit_s`` counts every training its scores needed, so fits shared between
methods of a cell are counted in every row that uses them.

Under ``torchrun`` the cells are shared out between the ranks: each rank fits its own cells alone (no
data-parallel training) and records its rows in ``results.rank<r>.csv``; rank 0 merges them into ``results.csv``
at the end (or the next run does, if a rank was killed first) and writes the summary.
"""
from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from image_od.data.benchmarks import LabelledImages, load_dataset
from image_od.engine import distributed
from image_od.engine.precision import resolve_precision
from image_od.engine.training import resolve_device
from image_od.files.atomic import atomic_path, write_json
from image_od.metrics import mean_std_by_seed, od_metrics
from pipelines.images.methods import METHODS, Cell, detector_settings, load_profile
from pipelines.images.profiles import Profile, save_profile
from pipelines.images.report import write_bench_report
from pipelines.run_env import environment

__all__ = ["COLUMNS", "METHODS", "bench", "comparison_markdown", "load_profile", "summary_markdown"]
RATIO_SYMBOL = {"transductive": "ρ", "polluted": "r_p"}  # what a row's ratio means in each protocol (none in one-class)
COLUMNS = ["dataset", "protocol", "method", "ratio", "class", "seed", "auroc", "aupr_in", "aupr_out", "ap_out", "fit_s",
           "score_s", "n", "n_outliers", "profile", "settings"]


def read_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r["ratio"], r["seed"], r["class"] = float(r["ratio"]), int(r["seed"]), r["class"]
        r["protocol"] = r.get("protocol") or "transductive"  # files written before protocols existed
        r["settings"] = r.get("settings") or ""  # files written before the settings hash: never reused
        for k in ("auroc", "aupr_in", "aupr_out", "ap_out", "fit_s", "score_s"):
            r[k] = float(r[k])
    return rows


def write_rows(path: Path, rows: list[dict]) -> None:
    with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
        w = csv.DictWriter(f, COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{r[k]:.6g}" if isinstance(r[k], float) else r[k]) for k in COLUMNS})


def row_key(r: dict) -> tuple:
    """What identifies a result row: (dataset, protocol, method, ratio, class, seed, settings hash)."""
    return r["dataset"], r["protocol"], r["method"], float(r["ratio"]), str(r["class"]), int(r["seed"]), r["settings"]


def settings_hash(profile: Profile, method: str, colour: bool) -> str:
    """A short hash of everything of the profile that a method's rows depend on: its detector's resolved settings
    (the section over its family, the registry line's fixed settings; the ratio is a key column of its own), the
    profile's ``max_size`` and the outlier-exposure corpus. A rerun into the same folder with another ``--profile``
    or ``--set`` gets other hashes, so its rows are computed, not taken from the earlier run."""
    line = METHODS[method]
    resolved = {"settings": detector_settings(profile, line.section, colour, line.fixed), "max_size": profile.max_size,
                "exposure": profile.exposure_source(colour)}
    blob = json.dumps(resolved, sort_keys=True, default=repr).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def summary_markdown(rows: list[dict]) -> str:
    """Table 1 layout: one block per ratio, a row per method, ROC / PR-I / PR-O in % per dataset (mean over
    classes and seeds, with the std over seeds when there are several), plus the mean minutes per class. A
    protocol other than the transductive one is a dataset column of its own, e.g. ``cifar10 (one-class)``."""
    def label(r: dict) -> str:
        protocol = r.get("protocol", "transductive")
        return r["dataset"] if protocol == "transductive" else f"{r['dataset']} ({protocol})"

    datasets = list(dict.fromkeys(label(r) for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    lines = ["| method | " + " | ".join(f"{d} ROC | {d} PR-I | {d} PR-O | {d} min/class" for d in datasets) + " |",
             "|---|" + "---|" * (4 * len(datasets))]
    protocols = {r.get("protocol", "transductive") for r in rows}
    symbol = RATIO_SYMBOL["polluted"] if protocols == {"polluted"} else \
        "ρ (r_p when polluted)" if "polluted" in protocols else RATIO_SYMBOL["transductive"]
    for ratio in sorted({r["ratio"] for r in rows}):
        block = "no outliers in training (one-class)" if protocols == {"one-class"} else f"{symbol} = {ratio:g}"
        lines.append(f"| **{block}** |" + " |" * (4 * len(datasets)))
        for method in methods:
            cells = []
            for d in datasets:
                sel = [r for r in rows if label(r) == d and r["method"] == method and r["ratio"] == ratio]
                if not sel:
                    cells += ["-"] * 4
                    continue
                for metric in ("auroc", "aupr_in", "aupr_out"):
                    try:
                        mean, std = mean_std_by_seed(sel, metric)
                        n_seeds = len({r["seed"] for r in sel})
                        cells.append(f"{100 * mean:.1f}" + (f" ± {100 * std:.1f}" if n_seeds > 1 else ""))
                    except ValueError:
                        cells.append("incomplete")
                cells.append(f"{np.mean([r['fit_s'] + r['score_s'] for r in sel]) / 60:.2f}")
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def comparison_markdown(rows: list[dict], methods: list[str] | None = None) -> str:
    """Every method side by side over the settings the rows cover (dataset, protocol, ratio: one column group each;
    datasets and protocols in the order they first appear, ratios ascending within them): mean AUROC in %, the
    classes it averages and the mean minutes per class (fit + score), so that methods can be picked by accuracy and
    cost. Rows of several runs may be mixed; a method missing from a setting shows "-". ``methods``: only these
    rows, in this order (default: all, as they appear)."""
    def setting(r: dict) -> tuple:
        return r["dataset"], r["protocol"], r["ratio"]

    if methods is not None:
        rows = [r for r in rows if r["method"] in methods]
    groups = list(dict.fromkeys(setting(r)[:2] for r in rows))
    settings = sorted(set(map(setting, rows)), key=lambda s: (groups.index(s[:2]), s[2]))
    methods = [m for m in (methods or dict.fromkeys(r["method"] for r in rows)) if any(r["method"] == m for r in rows)]
    names = [f"{d} {p}" + (f" {RATIO_SYMBOL[p]}={ratio:g}" if p in RATIO_SYMBOL else "") for d, p, ratio in settings]
    lines = ["| method | " + " | ".join(f"{n} ROC | classes | min/class" for n in names) + " |",
             "|---|" + "---|" * (3 * len(settings))]
    for method in methods:
        cells = []
        for s in settings:
            sel = [r for r in rows if setting(r) == s and r["method"] == method]
            if not sel:
                cells += ["-"] * 3
                continue
            cells += [f"{100 * np.mean([r['auroc'] for r in sel]):.1f}", str(len({r['class'] for r in sel})),
                      f"{np.mean([r['fit_s'] + r['score_s'] for r in sel]) / 60:.2f}"]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def bench(dataset: str, methods: list[str], ratios: list[float], classes: list[str], seeds: list[int],
          profile: Profile, out: Path, *, root: str | None = None, device: str = "auto", progress: bool = True,
          protocol: str = "transductive") -> list[dict]:
    """Run every missing row, appending to ``out/results.csv`` after each cell; return all rows. ``ratios`` are the
    outlier ratios rho (transductive) or the pollution shares r_p (polluted); one-class ignores them."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; known: {sorted(METHODS)}")
    data = load_dataset(dataset, root)
    dataset = data.name  # a ``folders`` set is named after its folder
    class_ids = list(range(len(data.classes))) if classes == ["all"] else [_class_index(data, c) for c in classes]
    out.mkdir(parents=True, exist_ok=True)
    run_device = resolve_device(device)
    if distributed.is_main():
        save_profile(profile, out / f"profile-{profile.name}.yaml")
        precision = resolve_precision(profile.settings("discriminative", data.colour).get(
            "precision", "auto"), run_device)
        write_json(out / "env.json", environment(seeds[0], str(run_device), precision=precision))
        merge_rank_rows(out)
    distributed.sync()
    rows = read_rows(out / "results.csv")
    done = {row_key(r) for r in rows}
    hashes = {m: settings_hash(profile, m, data.colour) for m in methods}
    if protocol == "one-class":
        ratios = [0.0]
    cells = [(ratio, c, seed) for seed in seeds for ratio in ratios for c in class_ids
             if any((dataset, protocol, m, float(ratio), data.classes[c], seed, hashes[m]) not in done
                    for m in methods)]
    sharded = distributed.shard_count() > 1
    mine = [cells[i] for i in distributed.my_share([1.0] * len(cells))]
    results = out / (f"results.rank{distributed.shard_index()}.csv" if sharded else "results.csv")
    written = [] if sharded else rows
    bar = tqdm(mine, desc=f"{dataset} cells", unit="cell", disable=not progress or not distributed.is_main())
    for ratio, c, seed in bar:
        bar.set_postfix(ratio=ratio, cls=data.classes[c], seed=seed)
        cell = Cell(data, ratio, c, seed, profile, device, progress, protocol)
        for method in [m for m in methods
                       if (dataset, protocol, m, float(ratio), data.classes[c], seed, hashes[m]) not in done]:
            scores, fit_s, score_s = METHODS[method](cell)
            row = {"dataset": dataset, "protocol": protocol, "method": method, "ratio": float(ratio),
                   "class": data.classes[c], "seed": seed, **od_metrics(cell.is_outlier, scores), "fit_s": fit_s,
                   "score_s": score_s, "n": len(cell.eval_x), "n_outliers": int(cell.is_outlier.sum()),
                   "profile": profile.name, "settings": hashes[method]}
            written.append(row)
            write_rows(results, written)
            tqdm.write(f"{dataset} {protocol} {method} rho={ratio:g} class={data.classes[c]} seed={seed}: "
                       f"AUROC {100 * row['auroc']:.1f}  fit {fit_s:.0f}s  score {score_s:.0f}s")
    distributed.sync()
    if not distributed.is_main():
        return []
    rows = merge_rank_rows(out) if sharded else written
    rows = [r for r in rows if r["method"] not in hashes or r["settings"] == hashes[r["method"]]]  # this run's
    summary = summary_markdown(rows)
    with atomic_path(out / "summary.md") as tmp:
        tmp.write_text(summary)
    write_bench_report(out, rows, summary, f"image-od bench: {dataset} ({protocol})")
    return rows


def merge_rank_rows(out: Path) -> list[dict]:
    """Fold the ranks' ``results.rank<r>.csv`` into ``results.csv`` (rows of the same cell and method: the later
    wins), remove them, and return all rows."""
    parts = sorted(out.glob("results.rank*.csv"))
    rows = {row_key(r): r for path in (out / "results.csv", *parts) for r in read_rows(path)}
    if parts:
        write_rows(out / "results.csv", list(rows.values()))
        for path in parts:
            path.unlink()
    return list(rows.values())


def _class_index(data: LabelledImages, name: str) -> int:
    if name in data.classes:
        return data.classes.index(name)
    if name.isdigit() and int(name) < len(data.classes):
        return int(name)
    raise ValueError(f"{data.name} has no class {name!r}; classes: {data.classes} (or their indices)")
