"""Measure discriminative E3Outlier settings on single classes: AUROC of every score against minutes per class.

This is how the ``cpu`` profile was chosen (docs/BENCHMARKS.md#cpu-profile). Each variant is a JSON
object of ``DiscriminativeE3Outlier`` settings; each (variant, class) pair is one fit on the full contaminated
set (rho, seed as given) and appends one JSON line to ``--out``; pairs already there are skipped. ``--seed`` draws
the set and seeds the network; a variant's own ``"seed"`` reseeds the network alone (the spread over networks on
one set). ``--select-images`` also re-chooses the scored operations of the same fitted network on other numbers of
images (the label-free ``score_ops_rule``s) and records each choice's AUROC, cost and overlap with the variant's.

    python tools/od_profile_sweep.py --dataset fashion-mnist --classes 0 6 --out runs/sweep.jsonl \
        --variant '{"backbone":"wrn-10-1","operations":"RA+IA+PR","epochs":3,"ops_per_image":4,"score_ops":16,
                    "precision":"bf16","optimizer":"adam"}'
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from image_od.data.benchmarks import load_dataset
from image_od.data.protocol import contaminated_set, to_model_input
from image_od.e3outlier.discriminative import DiscriminativeE3Outlier
from image_od.metrics import od_metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--root")
    parser.add_argument("--classes", type=int, nargs="+", required=True)
    parser.add_argument("--variant", action="append", required=True, help="JSON settings (repeatable)")
    parser.add_argument("--ratio", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True, help="JSON-lines file, appended")
    parser.add_argument("--plot", type=Path, help="also draw NE AUROC against minutes per class (PNG)")
    parser.add_argument("--op-confidence", action="store_true",
                        help="also record how well the trained network recognises each operation (label-free)")
    parser.add_argument("--select-images", type=int, nargs="+", default=[], metavar="N",
                        help="also choose the scored operations on N images, same network (score_ops_rule "
                             "confident/spread)")
    args = parser.parse_args()
    data = load_dataset(args.dataset, args.root)
    images, labels = data.merged()
    done = ([json.loads(line) for line in args.out.read_text().splitlines()] if args.out.exists() else [])
    for text in args.variant:
        settings = json.loads(text)
        for c in args.classes:
            if any(r["cls"] == c and r["settings"] == settings for r in done):
                continue
            s = contaminated_set(images, labels, c, args.ratio, args.seed)
            x = to_model_input(s.images)
            model = DiscriminativeE3Outlier(**{"seed": args.seed, "progress": False, **settings})
            start = time.perf_counter()
            model.fit(x)
            fit_s = time.perf_counter() - start
            start = time.perf_counter()
            scores = model.scores(x, model.available_scores)
            score_s = time.perf_counter() - start
            auroc = {k: round(100 * od_metrics(s.is_outlier, v)["auroc"], 2) for k, v in scores.items()}
            row = {"dataset": args.dataset, "cls": c, "settings": settings, "fit_s": round(fit_s, 1),
                   "score_s": round(score_s, 1), "min_per_class": round((fit_s + score_s) / 60, 2), **auroc}
            if args.select_images:
                row["select"] = reselect(model, x, s.is_outlier, args.select_images)
            if args.op_confidence:
                row["op_confidence"] = confidence_summary(model.operation_confidence(x)[0])
            with args.out.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)
            done.append(row)
    print(curve_table(done, args.classes))
    if args.plot:
        plot_curve(done, args.classes, args.plot)


def reselect(model: DiscriminativeE3Outlier, x, is_outlier, sizes: list[int]) -> dict:
    """Per number of images: the scored operations chosen again on that many images for the same fitted network,
    their AUROCs, seconds (choice and scoring) and how many of them the fitted choice shares."""
    fitted, own = model.score_labels_, model.score_ops_images
    out = {}
    for n in sizes:
        model.score_ops_images = n
        start = time.perf_counter()
        model.score_labels_ = model.score_subset(x)
        select_s = time.perf_counter() - start
        scores = model.scores(x, [name for name in model.available_scores if name != "ssd_if"])
        out[str(n)] = {**{k: round(100 * od_metrics(is_outlier, v)["auroc"], 2) for k, v in scores.items()},
                       "select_s": round(select_s, 1), "shared_ops": len(set(model.score_labels_.tolist())
                                                                         & set(fitted.tolist()))}
    model.score_ops_images, model.score_labels_ = own, fitted
    return out


def confidence_summary(mean: torch.Tensor) -> dict:
    """Quantiles over the operations of the mean probability of the applied operation, and how many are below 0.5."""
    q = torch.quantile(mean, torch.tensor([0.1, 0.5, 0.9]))
    return {"q10": round(float(q[0]), 3), "median": round(float(q[1]), 3), "q90": round(float(q[2]), 3),
            "below_half": int((mean < 0.5).sum()), "of": len(mean)}


def _complete_variants(rows: list[dict], classes: list[int]) -> list[tuple[str, list[dict]]]:
    """(label, rows) of the variants measured on every class in ``classes``."""
    variants: dict[str, list[dict]] = {}
    for r in rows:
        if r["cls"] in classes:
            variants.setdefault(json.dumps(r["settings"], sort_keys=True), []).append(r)
    return [(k, v) for k, v in variants.items() if {r["cls"] for r in v} == set(classes)]


def curve_table(rows: list[dict], classes: list[int]) -> str:
    lines = [f"| settings | min/class | NE AUROC (mean of classes {classes}) | per class |", "|---|---|---|---|"]
    for label, sel in sorted(_complete_variants(rows, classes), key=lambda kv: sum(r["min_per_class"] for r in kv[1])):
        minutes = sum(r["min_per_class"] for r in sel) / len(sel)
        ne = sum(r["ne"] for r in sel) / len(sel)
        per = ", ".join(f"{r['cls']}: {r['ne']:.1f}" for r in sorted(sel, key=lambda r: r["cls"]))
        lines.append(f"| `{label}` | {minutes:.2f} | {ne:.2f} | {per} |")
    return "\n".join(lines)


def plot_curve(rows: list[dict], classes: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, sel in _complete_variants(rows, classes):
        s = json.loads(label)
        x = sum(r["min_per_class"] for r in sel) / len(sel)
        y = sum(r["ne"] for r in sel) / len(sel)
        ax.scatter(x, y)
        ax.annotate(f"{s.get('backbone')} {s.get('operations')} m={s.get('ops_per_image')} s={s.get('score_ops')}",
                    (x, y), fontsize=7, xytext=(4, 2), textcoords="offset points")
    ax.set_xlabel("minutes per class (fit + score, 2-core CPU)")
    ax.set_ylabel(f"NE AUROC, mean of classes {classes} (%)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
