"""Cross-check our baselines against PyOD's implementations, side by side on the same contaminated sets.

  OMP_NUM_THREADS=1 python tools/bench_pyod.py --dataset digits --classes 0 1 --ae-epochs 2 --svdd-epochs 2 \\
      --gaal-epochs 1 --out runs/bench_pyod

For each inlier class: the paper's transductive set (``protocol.contaminated_set``, ``to_model_input``: (N,C,32,32)
in [-1, 1]; PyOD and scikit-learn get the same pixels flattened), then these pairs, each timed (fit + scores of the
fitted set) and scored by AUROC:

- IForest: PyOD ``IForest`` vs scikit-learn ``IsolationForest`` (raw pixels; same trees and seed, so equal AUROC
  is expected: a check of the harness);
- LOF: PyOD ``LOF`` vs scikit-learn ``LocalOutlierFactor`` (raw pixels, ``-negative_outlier_factor_``; equal too);
- AutoEncoder: PyOD's dense ``AutoEncoder`` vs our ``image_od.baselines.autoencoders.CAE`` (the supplement's deep CAE);
- DeepSVDD: PyOD's dense ``DeepSVDD`` vs our ``image_od.baselines.deep_svdd.DeepSVDD`` (Ruff et al.'s LeNet-type CNN);
- MO-GAAL: PyOD ``MO_GAAL`` vs our ``image_od.baselines.gaal.MOGAAL``. PyOD's ``decision_scores_`` are the discriminator's
  D(x) = P(real), whereas the GAAL paper's outlier score is 1 - D(x) (PyOD issues #119 and #237), so PyOD's AUROC
  is reported both as PyOD gives it and with the sign flipped.

PyOD is a benchmark extra, not a dependency of the package (``pip install pyod``). Rows go to OUT/bench_pyod.csv and
OUT/bench_pyod.json (with the CPU model and the versions of pyod, scikit-learn and torch) and print as a
markdown table. Seconds are wall time on a possibly shared machine, and the first deep model of a run also pays
torch's one-off start-up costs. ``--set cae.KEY=VALUE`` (also ``svdd.``, ``mogaal.``) overrides our detectors' settings.
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import csv
import importlib
import io
import json
import platform
import sys
import time
import traceback
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from image_od.engine.precision import cpu_model  # noqa: E402
from image_od.files.atomic import atomic_path, write_json  # noqa: E402

OURS = ("cae", "svdd", "mogaal")  # the --set prefixes of our detectors
FIELDS = ["dataset", "inlier_class", "rho", "seed", "n", "n_outliers", "method", "impl", "auroc", "seconds", "note",
          "settings"]


def _import_pyod() -> Any:
    try:
        return importlib.import_module("pyod")
    except ImportError:
        raise SystemExit("PyOD is not installed; it is a benchmark extra, not a dependency: pip install pyod") from None


def _overrides(pairs: list[str]) -> dict[str, dict[str, Any]]:
    """``--set cae.epochs=3`` -> {"cae": {"epochs": 3}} (values as Python literals, else strings)."""
    out: dict[str, dict[str, Any]] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        model, dot, name = key.partition(".")
        if not sep or not dot or model not in OURS:
            raise SystemExit(f"--set {pair!r}: expected MODEL.KEY=VALUE with MODEL one of {', '.join(OURS)}")
        try:
            parsed = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            parsed = value
        out.setdefault(model, {})[name] = parsed
    return out


def _run(fn: Callable[[], np.ndarray], labels: np.ndarray, seed: int) -> tuple[float, float, str]:
    """(AUROC, seconds, note) of ``fn`` (fit + scores of the fitted set), seeded; an error becomes the note."""
    from sklearn.metrics import roc_auc_score

    from image_od.engine.training import seed_everything

    seed_everything(seed)
    t0 = time.perf_counter()
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # PyOD's GAAL prints every epoch
            scores = np.asarray(fn(), dtype=np.float64).ravel()
    except Exception as err:  # noqa: BLE001 - one failing model must not lose the others' results
        traceback.print_exc()
        return float("nan"), time.perf_counter() - t0, f"error: {type(err).__name__}: {err}"
    seconds = time.perf_counter() - t0
    if not np.isfinite(scores).all():
        return float("nan"), seconds, "error: non-finite scores"
    return float(roc_auc_score(labels, scores)), seconds, ""


def bench_class(args: argparse.Namespace, images: np.ndarray, labels: np.ndarray, inlier: int,
                overrides: dict[str, dict[str, Any]], device: str) -> list[dict]:
    from pyod.models.auto_encoder import AutoEncoder
    from pyod.models.deep_svdd import DeepSVDD
    from pyod.models.iforest import IForest
    from pyod.models.lof import LOF
    from pyod.models.mo_gaal import MO_GAAL
    from sklearn.ensemble import IsolationForest
    from sklearn.neighbors import LocalOutlierFactor

    from image_od.baselines.autoencoders import CAE
    from image_od.baselines.deep_svdd import DeepSVDD as OurDeepSVDD
    from image_od.baselines.gaal import MOGAAL
    from image_od.data.protocol import contaminated_set, to_model_input

    data = contaminated_set(images, labels, inlier_class=inlier, ratio=args.rho, seed=args.seed,
                            max_size=args.max_size)
    x = to_model_input(data.images, size=32)
    flat = x.reshape(len(x), -1).astype(np.float64)
    y = np.asarray(data.is_outlier)
    seed = args.seed
    contamination = args.rho if 0 < args.rho <= 0.5 else 0.1  # PyOD's threshold only; scores do not depend on it
    base = {"dataset": args.dataset, "inlier_class": inlier, "rho": args.rho, "seed": seed, "n": len(x),
            "n_outliers": int(y.sum())}
    rows: list[dict] = []

    def record(method: str, impl: str, fn: Callable[[], np.ndarray], settings: dict, note: str = "") -> None:
        auroc, seconds, error = _run(fn, y, seed)
        rows.append({**base, "method": method, "impl": impl, "auroc": auroc, "seconds": seconds,
                     "note": error or note, "settings": json.dumps(settings, sort_keys=True, default=str)})
        print(f"class {inlier} {method:12s} {impl:5s} AUROC {auroc:.4f}, {seconds:.1f} s {error or note}",
              file=sys.stderr, flush=True)

    n_trees = args.n_estimators
    record("IForest", "pyod", lambda: IForest(n_estimators=n_trees, contamination=contamination,
                                              random_state=seed).fit(flat).decision_scores_,
           {"n_estimators": n_trees, "random_state": seed})
    record("IForest", "ours", lambda: -IsolationForest(n_estimators=n_trees, random_state=seed).fit(flat)
           .decision_function(flat), {"n_estimators": n_trees, "random_state": seed, "impl": "sklearn"})

    k = args.n_neighbors
    record("LOF", "pyod", lambda: LOF(n_neighbors=k, contamination=contamination).fit(flat).decision_scores_,
           {"n_neighbors": k})
    record("LOF", "ours", lambda: -LocalOutlierFactor(n_neighbors=k).fit(flat).negative_outlier_factor_,
           {"n_neighbors": k, "impl": "sklearn, novelty=False"})

    ae = {"epoch_num": args.ae_epochs, "batch_size": args.batch_size, "contamination": contamination,
          "random_state": seed, "device": device, "verbose": 0}
    record("AutoEncoder", "pyod", lambda: AutoEncoder(**ae).fit(flat).decision_scores_, ae,
           "dense AE on pixels, hidden [64, 32]")
    run = {"seed": seed, "device": device}
    cae = {"epochs": args.ae_epochs, **run, **overrides.get("cae", {})}
    record("AutoEncoder", "ours", lambda: CAE(**cae).fit_score(x), cae, "image_od.baselines.autoencoders.CAE (deep CAE)")

    svdd = {"n_features": flat.shape[1], "epochs": args.svdd_epochs, "batch_size": args.batch_size,
            "contamination": contamination, "random_state": seed, "verbose": 0}
    record("DeepSVDD", "pyod", lambda: DeepSVDD(**svdd).fit(flat).decision_scores_, svdd)
    ours_svdd = {"epochs": args.svdd_epochs, **run, **overrides.get("svdd", {})}
    record("DeepSVDD", "ours", lambda: OurDeepSVDD(**ours_svdd).fit_score(x), ours_svdd,
           "image_od.baselines.deep_svdd.DeepSVDD (CNN, one-class objective)")

    gaal = {"stop_epochs": args.gaal_epochs, "k": args.gaal_k, "contamination": contamination}
    pyod_gaal: dict[str, np.ndarray] = {}

    def run_pyod_gaal() -> np.ndarray:
        pyod_gaal["scores"] = MO_GAAL(**gaal).fit(flat).decision_scores_
        return pyod_gaal["scores"]

    record("MO-GAAL", "pyod", run_pyod_gaal, {**gaal, "total_epochs": 3 * args.gaal_epochs},
           "PyOD's score D(x) = P(real), as PyOD gives it")
    if "scores" in pyod_gaal:
        record("MO-GAAL 1-D", "pyod", lambda: 1 - pyod_gaal["scores"], gaal,
               "the same run scored 1 - D(x), the GAAL paper's outlier score (PyOD #119); seconds: none extra")
    # PyOD trains the generators for stop_epochs, then the discriminator alone for twice that: the same split here
    ours_gaal = {"epochs_joint": args.gaal_epochs, "epochs_discriminator": 2 * args.gaal_epochs, **run,
                 **overrides.get("mogaal", {})}
    record("MO-GAAL", "ours", lambda: MOGAAL(**ours_gaal).fit_score(x), ours_gaal,
           "image_od.baselines.gaal.MOGAAL (DCGAN, images)")
    return rows


def environment() -> dict:
    import pyod
    import sklearn
    import torch

    return {"cpu": cpu_model(), "python": platform.python_version(), "pyod": pyod.__version__,
            "sklearn": sklearn.__version__, "torch": torch.__version__, "numpy": np.__version__,
            "torch_threads": torch.get_num_threads(), "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def markdown(rows: list[dict]) -> str:
    """One line per (class, method): PyOD's and our AUROC and seconds side by side, then the means over classes."""
    def cell(row: dict | None, key: str, fmt: str) -> str:
        return "-" if row is None or not np.isfinite(row[key]) else format(row[key], fmt)

    by = {(r["inlier_class"], r["method"], r["impl"]): r for r in rows}
    methods = list(dict.fromkeys(r["method"] for r in rows))
    classes = list(dict.fromkeys(r["inlier_class"] for r in rows))
    lines = ["| class | n (outliers) | method | PyOD AUROC | PyOD s | ours AUROC | ours s | note |",
             "|---|---|---|---|---|---|---|---|"]
    for c in classes:
        for m in methods:
            p, o = by.get((c, m, "pyod")), by.get((c, m, "ours"))
            if p is None and o is None:
                continue
            first = p or o
            notes = "; ".join(n for n in ((o or {}).get("note", ""), (p or {}).get("note", "")) if n)
            lines.append(f"| {c} | {first['n']} ({first['n_outliers']}) | {m} | {cell(p, 'auroc', '.4f')} | "
                         f"{cell(p, 'seconds', '.1f')} | {cell(o, 'auroc', '.4f')} | {cell(o, 'seconds', '.1f')} | "
                         f"{notes} |")
    if len(classes) > 1:
        for m in methods:
            mean = []
            for impl in ("pyod", "ours"):
                vals = [by[(c, m, impl)]["auroc"] for c in classes if (c, m, impl) in by]
                ok = [v for v in vals if np.isfinite(v)]
                mean.append(f"{np.mean(ok):.4f}" if ok and len(ok) == len(vals) else "-")
            lines.append(f"| mean | | {m} | {mean[0]} | | {mean[1]} | | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="fashion-mnist", choices=["fashion-mnist", "digits"],
                   help="fashion-mnist from the Debian package, or scikit-learn's digits")
    p.add_argument("--classes", type=int, nargs="+", help="inlier classes (default: all)")
    p.add_argument("--rho", type=float, default=0.1, help="outlier ratio of each set")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-size", type=int, default=12000, help="cap on the set size (the protocol's)")
    p.add_argument("--n-estimators", type=int, default=100, help="trees of both Isolation Forests")
    p.add_argument("--n-neighbors", type=int, default=20, help="neighbours of both LOFs")
    p.add_argument("--ae-epochs", type=int, default=10, help="epochs of PyOD's AutoEncoder and of our CAE")
    p.add_argument("--svdd-epochs", type=int, default=10, help="epochs of PyOD's DeepSVDD and of ours")
    p.add_argument("--gaal-epochs", type=int, default=10,
                   help="PyOD MO_GAAL stop_epochs (then 2x that with the discriminator alone); ours the same split")
    p.add_argument("--gaal-k", type=int, default=10, help="PyOD MO_GAAL's number of sub-generators")
    p.add_argument("--batch-size", type=int, default=128, help="batch size of PyOD's AutoEncoder and DeepSVDD")
    p.add_argument("--device", default="cpu", help="device of PyOD's AutoEncoder and ours (auto, cpu, cuda)")
    p.add_argument("--set", action="append", default=[], metavar="MODEL.KEY=VALUE",
                   help="override a setting of ours: cae.KEY=VALUE, svdd.KEY=VALUE or mogaal.KEY=VALUE")
    p.add_argument("--out", default="runs/bench_pyod")
    args = p.parse_args(argv)
    overrides = _overrides(args.set)
    _import_pyod()

    from image_od.data.benchmarks import load_dataset
    from image_od.engine.training import resolve_device

    device = str(resolve_device(args.device))
    images, labels = load_dataset(args.dataset).merged()
    classes = args.classes if args.classes is not None else sorted(int(c) for c in np.unique(labels))
    env = environment()
    print(f"{args.dataset}: classes {classes}, rho {args.rho}, seed {args.seed}; {env['cpu']}, pyod {env['pyod']}, "
          f"sklearn {env['sklearn']}, torch {env['torch']}", file=sys.stderr, flush=True)
    rows = [row for c in classes for row in bench_class(args, images, labels, c, overrides, device)]

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "bench_pyod.csv") as tmp, tmp.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        w.writerows(rows)
    finite = [{k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in r.items()} for r in rows]
    # NaN (a failed model) as null: strict JSON
    write_json(out / "bench_pyod.json", {"args": vars(args), "device": device, "env": env, "rows": finite})
    print(markdown(rows))
    print(f"\nresults: {out / 'bench_pyod.csv'}, {out / 'bench_pyod.json'}", file=sys.stderr)
    return 1 if any(r["note"].startswith("error") for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
