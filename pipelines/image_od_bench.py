"""``image-od bench``: the paper's image outlier-detection protocol over datasets x methods x ratios x classes x
seeds, one CSV row per cell, resumable, with a summary in the layout of the paper's Table 1.

Methods that share trained networks are computed from one fit per (dataset, ratio, class, seed) cell: the
``e3outlier`` network also gives the GTP, MP and SSD+IF rows, and the refinement rows reuse it (BAS is
``e3outlier``); each row's ``fit_s`` counts every training its scores needed, so shared fits are counted in
every row that uses them.

Under ``torchrun`` the cells are shared out between the ranks: each rank fits its own cells alone (no
data-parallel training) and records its rows in ``results.rank<r>.csv``; rank 0 merges them into ``results.csv``
at the end (or the next run does, if a rank was killed first) and writes the summary.
"""
from __future__ import annotations

import csv
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm.auto import tqdm

from image_od import distributed
from image_od.atomic import atomic_path, write_json
from image_od.data import ArrayData
from image_od.datasets import LabelledImages, load_dataset
from image_od.discriminative import DiscriminativeE3Outlier
from image_od.refinement import weights_from_scores
from image_od.generative import GenerativeE3Outlier
from image_od.metrics import mean_std_by_seed, od_metrics
from image_od.operations import image_tasks
from image_od.precision import resolve_precision
from image_od.protocol import contaminated_set, to_model_input
from image_od.training import TrainSettings, resolve_device

from .config import load_config, save_config
from .run_env import environment

PROFILE_DIR = Path(__file__).resolve().parent.parent / "configs" / "image_od"
GREY = {"mnist", "fashion-mnist", "digits"}
COLUMNS = ["dataset", "method", "ratio", "class", "seed", "auroc", "aupr_in", "aupr_out", "ap_out", "fit_s",
           "score_s", "n", "n_outliers", "profile"]


@dataclass
class DiscriminativeProfile:
    """Settings of discriminative E3Outlier (see ``DiscriminativeE3Outlier``); the optimizer depends on whether
    the dataset is grey or colour, as in the supplement."""

    backbone: str = "wrn-10-4"
    operations: str = "RA+IA+PR"
    epochs: int | None = None
    ops_per_image: int | None = None
    score_ops: int | None = None
    batch_size: int = 128
    optimizer_grey: str = "sgd"
    optimizer_colour: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 5e-4
    precision: str = "auto"  # bf16 where the hardware runs it natively, else fp32 (image_od.precision)
    mc_dropout: float = 0.05  # the dropout net used for the MCD score only
    mc_passes: int = 5
    ensemble: int = 5  # networks of ENS and JSR


@dataclass
class GenerativeProfile:
    widths: list[int] = field(default_factory=lambda: [32, 64, 128])
    epochs: int = 20
    batch_size: int = 64


@dataclass
class Profile:
    name: str = "paper"
    max_size: int = 12000
    discriminative: DiscriminativeProfile = field(default_factory=DiscriminativeProfile)
    generative: GenerativeProfile = field(default_factory=GenerativeProfile)


def load_profile(name_or_path: str, overrides: list[str] | None = None) -> Profile:
    """``paper``, ``cpu`` (files in configs/image_od/) or a YAML path; then ``key=value`` overrides."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PROFILE_DIR / f"{name_or_path}.yaml"
    return load_config(path, overrides, cls=Profile)


def timed(fn: Callable[[], object]) -> tuple[object, float]:
    """``fn()`` and the wall seconds it took."""
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


class Cell:
    """One (dataset, ratio, class, seed) contaminated set and the fits its methods share (each made once)."""

    def __init__(self, data: LabelledImages, ratio: float, inlier: int, seed: int, profile: Profile, device: str,
                 progress: bool):
        images, labels = data.merged()
        self.set = contaminated_set(images, labels, inlier, ratio, seed, profile.max_size)
        self.x = to_model_input(self.set.images)
        self.grey = data.name in GREY
        self.profile, self.seed, self.device, self.progress = profile, seed, device, progress
        self._fits: dict[str, tuple[object, float]] = {}
        self._scores: dict[str, tuple[dict[str, np.ndarray], float]] = {}

    def discriminative(self, **settings) -> DiscriminativeE3Outlier:
        p = self.profile.discriminative
        base = dict(operations=p.operations, backbone=p.backbone, epochs=p.epochs, ops_per_image=p.ops_per_image,
                    score_ops=p.score_ops, batch_size=p.batch_size, lr=p.lr, weight_decay=p.weight_decay,
                    optimizer=p.optimizer_grey if self.grey else p.optimizer_colour, precision=p.precision,
                    mc_passes=p.mc_passes, device=self.device, seed=self.seed, progress=self.progress)
        return DiscriminativeE3Outlier(**{**base, **settings})

    def fit(self, key: str, make: Callable[[], tuple[object, float]]) -> tuple[object, float]:
        """The fitted model ``key`` and its own fit seconds, made by ``make`` on first use."""
        if key not in self._fits:
            self._fits[key] = make()
        return self._fits[key]

    def timed_fit(self, model, **fit_args) -> tuple[object, float]:
        return timed(lambda: model.fit(self.x, **fit_args))

    def scores(self, key: str, model: DiscriminativeE3Outlier) -> tuple[dict[str, np.ndarray], float]:
        """All normality scores of a discriminative model and the seconds they took (computed once)."""
        if key not in self._scores:
            self._scores[key] = timed(lambda: model.normality_scores(self.x))
        return self._scores[key]

    # the networks the methods share
    def base(self):
        return self.fit("base", lambda: self.timed_fit(self.discriminative()))

    def base_weights(self) -> np.ndarray:
        return weights_from_scores(self.scores("base", self.base()[0])[0]["ne"])

    def weighted(self, j: int):
        """The j-th network trained with the base network's scores as weights (reboot re-weighting)."""
        return self.fit(f"weighted{j}", lambda: self.timed_fit(self.discriminative(seed=self.seed + j),
                                                               sample_weight=self.base_weights()))

    def member(self, j: int):
        return self.base() if j == 0 else self.fit(f"member{j}", lambda: self.timed_fit(
            self.discriminative(seed=self.seed + j)))


Result = tuple[np.ndarray, float, float]  # outlier scores (higher = more anomalous), fit_s, score_s


def _base_score(name: str) -> Callable[[Cell], Result]:
    def run(cell: Cell) -> Result:
        model, fit_s = cell.base()
        scores, score_s = cell.scores("base", model)
        return -scores[name], fit_s, score_s
    return run


def _single(key: str, score: str, **settings) -> Callable[[Cell], Result]:
    """A method with its own network (settings that change training)."""
    def run(cell: Cell) -> Result:
        model, fit_s = cell.fit(key, lambda: cell.timed_fit(cell.discriminative(**settings)))
        scores, score_s = cell.scores(key, model)
        return -scores[score], fit_s, score_s
    return run


def _mcd(cell: Cell) -> Result:
    return _single("mcd", "mcd", dropout=cell.profile.discriminative.mc_dropout)(cell)


def _rrw(cell: Cell) -> Result:
    model, fit_s = cell.weighted(0)
    scores, score_s = cell.scores("weighted0", model)
    return -scores["ne"], cell.base()[1] + fit_s, score_s


def _ensemble(cell: Cell, member: Callable[[int], tuple[object, float]], extra_fit_s: float) -> Result:
    fits = [member(j) for j in range(cell.profile.discriminative.ensemble)]
    merged = DiscriminativeE3Outlier.merged([m for m, _ in fits])
    scores, score_s = timed(lambda: merged.normality_scores(cell.x, ssd_if=False)["ne"])
    return -scores, extra_fit_s + sum(s for _, s in fits), score_s


def _ens(cell: Cell) -> Result:
    return _ensemble(cell, cell.member, 0.0)


def _jsr(cell: Cell) -> Result:
    return _ensemble(cell, cell.weighted, cell.base()[1])


def _generative(cell: Cell) -> Result:
    g = cell.profile.generative
    model = GenerativeE3Outlier(image_tasks(), widths=g.widths, seed=cell.seed, device=cell.device,
                                train_settings=TrainSettings(epochs=g.epochs, batch_size=g.batch_size,
                                                             progress=cell.progress))
    data = ArrayData({"image": cell.x})
    _, fit_s = timed(lambda: model.fit(data))
    scores, score_s = timed(lambda: model.decision_function(data))
    return scores, fit_s, score_s


def _iforest(cell: Cell) -> Result:
    """The simplest honest baseline: an Isolation Forest on raw pixels."""
    from sklearn.ensemble import IsolationForest

    flat = cell.x.reshape(len(cell.x), -1)
    forest, fit_s = timed(lambda: IsolationForest(n_estimators=100, random_state=cell.seed).fit(flat))
    scores, score_s = timed(lambda: forest.decision_function(flat))
    return -scores, fit_s, score_s


METHODS: dict[str, Callable[[Cell], Result]] = {
    "e3outlier": _base_score("ne"),  # discriminative E3Outlier with the paper's default NE score (BAS)
    "e3outlier-gtp": _base_score("gtp"),
    "e3outlier-mp": _base_score("mp"),
    "e3outlier-mcd": _mcd,
    "ssd-if": _base_score("ssd_if"),
    "e3outlier-orw": _single("orw", "ne", reweight="online"),
    "e3outlier-rrw": _rrw,
    "e3outlier-ens": _ens,
    "e3outlier-jsr": _jsr,
    "e3outlier-ml": _single("ml", "ne", multi_label=True),
    "e3outlier-g": _generative,
    "iforest": _iforest,
}


def read_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r["ratio"], r["seed"], r["class"] = float(r["ratio"]), int(r["seed"]), r["class"]
        for k in ("auroc", "aupr_in", "aupr_out", "ap_out", "fit_s", "score_s"):
            r[k] = float(r[k])
    return rows


def write_rows(path: Path, rows: list[dict]) -> None:
    with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
        w = csv.DictWriter(f, COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{r[k]:.6g}" if isinstance(r[k], float) else r[k]) for k in COLUMNS})


def _key(r: dict) -> tuple:
    return r["dataset"], r["method"], float(r["ratio"]), str(r["class"]), int(r["seed"])


def summary_markdown(rows: list[dict]) -> str:
    """Table 1 layout: one block per ratio, a row per method, ROC / PR-I / PR-O in % per dataset (mean over
    classes and seeds, with the std over seeds when there are several), plus the mean minutes per class."""
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    lines = ["| method | " + " | ".join(f"{d} ROC | {d} PR-I | {d} PR-O | {d} min/class" for d in datasets) + " |",
             "|---|" + "---|" * (4 * len(datasets))]
    for ratio in sorted({r["ratio"] for r in rows}):
        lines.append(f"| **ρ = {ratio:g}** |" + " |" * (4 * len(datasets)))
        for method in methods:
            cells = []
            for d in datasets:
                sel = [r for r in rows if r["dataset"] == d and r["method"] == method and r["ratio"] == ratio]
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


def bench(dataset: str, methods: list[str], ratios: list[float], classes: list[str], seeds: list[int],
          profile: Profile, out: Path, *, root: str | None = None, device: str = "auto",
          progress: bool = True) -> list[dict]:
    """Run every missing row, appending to ``out/results.csv`` after each cell; return all rows."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; known: {sorted(METHODS)}")
    data = load_dataset(dataset, root)
    class_ids = list(range(len(data.classes))) if classes == ["all"] else [_class_index(data, c) for c in classes]
    out.mkdir(parents=True, exist_ok=True)
    run_device = resolve_device(device)
    if distributed.is_main():
        save_config(profile, out / f"profile-{profile.name}.yaml")
        precision = resolve_precision(profile.discriminative.precision, run_device)
        write_json(out / "env.json", environment(seeds[0], str(run_device), precision=precision))
        merge_rank_rows(out)
    distributed.sync()
    rows = read_rows(out / "results.csv")
    done = {_key(r) for r in rows}
    cells = [(ratio, c, seed) for seed in seeds for ratio in ratios for c in class_ids
             if any((dataset, m, float(ratio), data.classes[c], seed) not in done for m in methods)]
    sharded = distributed.shard_count() > 1
    mine = [cells[i] for i in distributed.my_share([1.0] * len(cells))]
    results = out / (f"results.rank{distributed.shard_index()}.csv" if sharded else "results.csv")
    written = [] if sharded else rows
    bar = tqdm(mine, desc=f"{dataset} cells", unit="cell", disable=not progress or not distributed.is_main())
    with distributed.independent():
        for ratio, c, seed in bar:
            bar.set_postfix(ratio=ratio, cls=data.classes[c], seed=seed)
            cell = Cell(data, ratio, c, seed, profile, device, progress)
            for method in [m for m in methods if (dataset, m, float(ratio), data.classes[c], seed) not in done]:
                scores, fit_s, score_s = METHODS[method](cell)
                row = {"dataset": dataset, "method": method, "ratio": float(ratio), "class": data.classes[c],
                       "seed": seed, **od_metrics(cell.set.is_outlier, scores), "fit_s": fit_s, "score_s": score_s,
                       "n": len(cell.x), "n_outliers": int(cell.set.is_outlier.sum()), "profile": profile.name}
                written.append(row)
                write_rows(results, written)
                tqdm.write(f"{dataset} {method} rho={ratio:g} class={data.classes[c]} seed={seed}: "
                           f"AUROC {100 * row['auroc']:.1f}  fit {fit_s:.0f}s  score {score_s:.0f}s")
    distributed.sync()
    if not distributed.is_main():
        return []
    rows = merge_rank_rows(out) if sharded else written
    with atomic_path(out / "summary.md") as tmp:
        tmp.write_text(summary_markdown(rows))
    return rows


def merge_rank_rows(out: Path) -> list[dict]:
    """Fold the ranks' ``results.rank<r>.csv`` into ``results.csv`` (rows of the same cell and method: the later
    wins), remove them, and return all rows."""
    parts = sorted(out.glob("results.rank*.csv"))
    rows = {_key(r): r for path in (out / "results.csv", *parts) for r in read_rows(path)}
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
