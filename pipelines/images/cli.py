"""``image-od``: unsupervised outlier detection on images.

- ``score``: one outlier score per image of a folder with generative E3Outlier, set up by the ``generative``
  section of a profile (the same profiles as ``bench``). The images are both the training and the scored data
  (transductive): the detector learns to restore each image from its flipped, grey, rotated views (supplement
  Sec. 5) and scores each image by its restoration error, higher = more anomalous.
- ``bench``: the paper's benchmark protocol (one class as inliers plus a ratio of outliers, all unlabeled) over
  classes, ratios and seeds; writes results.csv and summary.md (Table 1 layout), resumes finished rows.
- ``table``: every method of one or more bench runs side by side (AUROC, classes, minutes per class per dataset,
  protocol and ratio), to pick a method by accuracy and cost.
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

from image_od.data.benchmarks import DATASETS
from image_od.data.protocol import to_model_input
from image_od.data.user_images import load_images
from image_od.detector import MIN_FIT_SAMPLES
from image_od.engine import distributed
from image_od.engine.training import resolve_device
from image_od.files.atomic import atomic_path, write_json
from pipelines.cli_errors import report_errors
from pipelines.images.bench import METHODS, bench, comparison_markdown, load_profile, read_rows, row_key
from pipelines.images.methods import SCORE_METHODS, SECTIONS, detector_settings
from pipelines.images.report import plot_score_histogram, plot_top_outliers
from pipelines.run_env import environment


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="image-od", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("score", help="score every image of a folder or .npy array",
                       description="Fit a detector on the images (transductively: no labels, the same images are "
                                   "scored) and write one outlier score per image, higher = more anomalous.")
    p.add_argument("--images", required=True, help="folder of images (searched recursively) or a uint8 .npy array")
    p.add_argument("--out", required=True, help="output folder: scores.csv, env.json, settings.json")
    p.add_argument("--size", type=int, default=32, help="smaller images are zero-padded (as the paper pads 28x28 to 32x32), larger ones resized to SIZE x SIZE (default 32)")
    p.add_argument("--grey", action="store_true", help="treat the images as grey")
    p.add_argument("--method", default="e3outlier-g", choices=SCORE_METHODS, metavar="METHOD",
                   help="the detector (default e3outlier-g, generative E3Outlier), any bench method that needs "
                        "nothing but the images: " + ", ".join(SCORE_METHODS))
    p.add_argument("--profile", default="cpu", help="profile whose section of the method sets the detector up: cpu "
                   "(default), paper or a YAML file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a profile setting, e.g. --set generative.generator=unet (repeatable)")
    p.add_argument("--epochs", type=int, help="shortcut for --set SECTION.epochs=N (the method's profile section)")
    p.add_argument("--batch-size", type=int, help="shortcut for --set SECTION.batch_size=N")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--skip-bad", action="store_true", help="skip unreadable or truncated image files (listed on "
                   "stderr and in OUT/skipped.txt) instead of stopping at the first one")
    p.add_argument("--debug", action="store_true", help="show the traceback of any error")

    b = sub.add_parser("bench", help="run the paper's benchmark protocol",
                       description="Run methods over a protocol (transductive, one-class or polluted); "
                                   "resumable (finished rows are skipped); under torchrun the cells are shared "
                                   "out between the processes. "
                                   "Example: image-od bench --dataset fashion-mnist --method e3outlier "
                                   "--ratios 0.1 --classes all --seeds 0 --profile cpu --out runs/fmnist")
    b.add_argument("--dataset", required=True, choices=DATASETS, metavar="DATASET",
                   help="one of: " + ", ".join(DATASETS) + " (folders: any ROOT/{train,test}/CLASS/*.png|jpg set, "
                        "brought to 32x32, grey or colour from the files)")
    b.add_argument("--root", help="dataset folder (not needed for fashion-mnist from its Debian package, digits)")
    b.add_argument("--method", nargs="+", default=["e3outlier"], metavar="METHOD",
                   help="one or more of: " + ", ".join(METHODS))
    b.add_argument("--protocol", default="transductive", choices=("transductive", "one-class", "polluted"),
                   help="transductive (the paper's: one unlabelled set, fitted and scored), one-class (fit on the "
                        "training split's inliers, score the test split) or polluted (ELITE's: a training pool with "
                        "a share --ratios of anomalies and a small labelled validation set; score the test split)")
    b.add_argument("--ratios", type=float, nargs="+", default=[0.1],
                   help="outlier ratios rho, or the pollution shares r_p of --protocol polluted (default 0.1)")
    b.add_argument("--classes", nargs="+", default=["all"], help="'all', class names or indices")
    b.add_argument("--seeds", type=int, nargs="+", default=[0])
    b.add_argument("--profile", default="cpu", help="paper (the paper's settings, for a GPU), cpu (reduced, chosen "
                   "by measurement on a 2-core CPU) or a YAML file (default cpu)")
    b.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a profile setting, e.g. --set discriminative.ensemble=3 (repeatable)")
    b.add_argument("--out", required=True, help="output folder: results.csv, summary.md, profile, env.json")
    b.add_argument("--device", default="auto")
    b.add_argument("--quiet", action="store_true", help="no per-epoch progress bars")
    b.add_argument("--debug", action="store_true", help="show the traceback of any error")

    t = sub.add_parser("table", help="compare the methods of one or more bench runs side by side",
                       description="Mean AUROC, classes and minutes per class of every method in the given bench "
                                   "runs, one column group per dataset, protocol and ratio (markdown).")
    t.add_argument("runs", nargs="+", help="bench output folders (or their results.csv files); their settings make "
                   "the column groups in this order")
    t.add_argument("--method", nargs="+", metavar="METHOD", help="only these methods, in this order")
    t.add_argument("--out", help="also write the table to this file")
    t.add_argument("--debug", action="store_true", help="show the traceback of any error")
    return parser


def run_table(args: argparse.Namespace) -> int:
    rows, source = [], {}
    for run in args.runs:
        path = Path(run) / "results.csv" if Path(run).is_dir() else Path(run)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no bench results here (expected a folder with results.csv)")
        latest = {row_key(r)[:-1]: r for r in read_rows(path)}  # a cell rerun with other settings: the last one
        for key, r in latest.items():
            if key in source and source[key] != run:  # a mean over both would hide a variant
                raise ValueError(f"{source[key]} and {run} both hold {r['method']} on {r['dataset']} "
                                 f"({r['protocol']}, ratio {r['ratio']:g}, class {r['class']}, seed {r['seed']}): "
                                 f"put them in separate tables")
            source[key] = run
            rows.append(r)
    if not any(not args.method or r["method"] in args.method for r in rows):
        raise ValueError(f"no result rows in {', '.join(args.runs)}" + (" for those methods" if args.method else ""))
    table = comparison_markdown(rows, args.method)
    if args.out:
        with atomic_path(Path(args.out)) as tmp:
            tmp.write_text(table)
    print(table, end="")
    return 0


def run_bench(args: argparse.Namespace) -> int:
    """The benchmark; under torchrun its cells are shared out between the processes (rank 0 reports)."""
    profile = load_profile(args.profile, args.overrides)
    distributed.setup(resolve_device(args.device))
    rows = bench(args.dataset, args.method, args.ratios, args.classes, args.seeds, profile, Path(args.out),
                 root=args.root, device=args.device, progress=not args.quiet, protocol=args.protocol)
    if distributed.is_main():
        print((Path(args.out) / "summary.md").read_text())
        print(f"{len(rows)} rows in {Path(args.out) / 'results.csv'}")
    distributed.shutdown()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Errors about the user's input end as one line on stderr and exit code 2 (``--debug``: the traceback)."""
    args = build_parser().parse_args(argv)
    commands = {"bench": run_bench, "score": run_score, "table": run_table}
    return report_errors(f"image-od {args.command}", args.debug, lambda: commands[args.command](args))


def _write_skipped(out: Path, skipped: list[str]) -> None:
    """List the skipped image files on stderr and in ``OUT/skipped.txt`` (removed when none were skipped)."""
    path = out / "skipped.txt"
    if not skipped:
        path.unlink(missing_ok=True)
        return
    with atomic_path(path) as tmp:
        tmp.write_text("".join(line + "\n" for line in skipped))
    print(f"warning: skipped {len(skipped)} bad image file(s) (listed in {path}):", file=sys.stderr)
    for line in skipped:
        print(f"  {line}", file=sys.stderr)


def _score_settings(args: argparse.Namespace) -> tuple[str, dict]:
    """The profile section of ``--method`` and its detector's settings, with the command line's overrides."""
    method = METHODS[args.method]
    section = method.section
    overrides = list(args.overrides)
    for flag, key in ((args.epochs, "epochs"), (args.batch_size, "batch_size")):
        if flag is not None:
            overrides.append(f"{section}.{key}={flag}")
    if args.size < 1 or args.size % 16:
        raise ValueError(f"--size must be a positive multiple of 16 (the generators halve it up to four times), "
                         f"got {args.size}")
    return section, detector_settings(load_profile(args.profile, overrides), section, not args.grey, method.fixed)


def run_score(args: argparse.Namespace) -> int:
    section, settings = _score_settings(args)
    skipped: list[str] | None = [] if args.skip_bad else None
    images, names = load_images(args.images, args.size, args.grey, skipped=skipped)
    if len(images) < MIN_FIT_SAMPLES:  # the detector's own rule, said here with the path
        raise ValueError(f"{args.images}: {args.method} needs at least {MIN_FIT_SAMPLES} images to learn what is "
                         f"normal, found {len(images)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    _write_skipped(out, skipped or [])
    write_json(out / "settings.json", {**{k: v for k, v in vars(args).items() if k not in ("command", "debug")},
                                       section: settings})
    write_json(out / "env.json", environment(args.seed, str(resolve_device(args.device))))
    model = SECTIONS[section](**settings, seed=args.seed, device=args.device, progress=not args.quiet)
    scores = np.asarray(model.fit_score(to_model_input(images, args.size)), float)
    with atomic_path(out / "scores.csv") as tmp, tmp.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "score", "rank"])
        ranks = np.argsort(np.argsort(-scores))
        for name, s, r in zip(names, scores, ranks):
            w.writerow([name, f"{s:.6g}", int(r) + 1])
    plot_top_outliers(images, names, scores, out / "plots" / "top_outliers.png")
    plot_score_histogram(scores, out / "plots" / "score_histogram.png")
    top = np.argsort(-scores)[:5]
    print(f"scored {len(names)} images; most anomalous: " + ", ".join(names[i] for i in top))
    print(f"results: {out / 'scores.csv'}; plots: {out / 'plots'} (top_outliers.png, score_histogram.png)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
