"""Settings protocol for the video detector: run candidate settings on several datasets, choose on one, report on
the others (leave one dataset out), never choosing on the labels a figure is reported with.

Every (dataset, candidate) pair is one `vad run` sharing a cube cache per dataset (extraction runs once), so a
sweep costs the training of each candidate. Results go to OUT/sweep.jsonl (one line per run; a rerun skips the
pairs already there) and OUT/sweep.md: the table of every candidate on every dataset, and for each dataset used to
choose, the candidate it picks (highest ``--metric`` there) with its figures on every *other* dataset, marked as
transfers.

  python tools/vad_sweep.py --out runs/sweep \\
      --dataset ped2=configs/ucsd_ped2.yaml,../shared/data/ucsd_ped2,../shared/data/ucsd_ped2_vec_boxes/ped2_test_boxes.npz \\
      --dataset avenue=configs/avenue.yaml,../shared/data/avenue_partial \\
      --candidate base= --candidate sp=refine.self_paced=true --candidate 'sp_e5=refine.self_paced=true;model.epochs=5' \
      --candidate 'base_smooth=@base;score.smoothing=gaussian;score.smooth_window=3'

``@base`` reuses the trained run of candidate ``base`` and only scores it again (post-processing and fusion).
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path

METRICS = ("model_auc_micro", "model_auc_macro", "auc_micro", "auc_macro", "heuristic_auc_micro",
           "heuristic_auc_macro", "motion_rule_auc_micro", "motion_rule_auc_macro", "train_s")
DEFAULT_METRIC = {"ped2": "model_auc_micro", "avenue": "model_auc_macro"}


def parse_dataset(text: str) -> tuple[str, dict]:
    name, spec = text.split("=", 1)
    parts = spec.split(",")
    return name, {"config": parts[0], "root": parts[1], "boxes": parts[2] if len(parts) > 2 else None}


def parse_candidate(text: str) -> tuple[str, list[str]]:
    name, sets = text.split("=", 1)
    return name, [s for s in sets.split(";") if s]


def run_one(out: Path, dataset: str, spec: dict, candidate: str, sets: list[str], extra: list[str]) -> dict:
    """One `vad run`; a candidate whose first item is ``@OTHER`` instead copies OTHER's trained run and only
    scores it again with its own (``score.*``/``events.*``) settings."""
    run_dir = out / dataset / candidate
    if sets and sets[0].startswith("@"):
        rescore(out / dataset / sets[0][1:], run_dir, sets[1:])
    else:
        cmd = [sys.executable, "-m", "pipelines.video.cli", "run", "--config", spec["config"], "--root", spec["root"],
               "--out", str(run_dir), "--cache", str(out / "cache"), "--quiet"]
        if spec["boxes"]:
            cmd += ["--boxes", spec["boxes"]]
        for s in [*extra, *sets]:
            cmd += ["--set", s]
        print("$", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    m = json.loads((run_dir / "metrics.json").read_text())
    return {"dataset": dataset, "candidate": candidate, "sets": sets, **{k: m.get(k) for k in METRICS[:-1]},
            "train_s": m["timings"]["train_s"], "unprocessed": m.get("unprocessed"),
            "components": m.get("per_component_auc_micro")}


def rescore(source: Path, run_dir: Path, sets: list[str]) -> None:
    """Copy the trained run ``source`` to ``run_dir`` and score and evaluate it with the overrides."""
    shutil.rmtree(run_dir, ignore_errors=True)
    shutil.copytree(source, run_dir)
    for stage in (["score", *sum((["--set", s] for s in sets), [])], ["eval"]):
        cmd = [sys.executable, "-m", "pipelines.video.cli", *stage, "--out", str(run_dir), "--quiet"]
        print("$", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def fmt(v) -> str:
    return f"{v:.4f}" if isinstance(v, float) and v < 1.5 else (f"{v:.1f}" if isinstance(v, float) else str(v))


def report(rows: list[dict], datasets: list[str], candidates: list[str], metric: dict[str, str]) -> str:
    by = {(r["dataset"], r["candidate"]): r for r in rows}
    lines = [f"{datetime.now():%Y-%m-%d %H:%M} on {platform.node()}; selection metric per dataset: {metric}", ""]
    for d in datasets:
        lines += [f"### {d}", "", "| candidate | " + " | ".join(METRICS) + " |", "|---|" + "---|" * len(METRICS)]
        lines += ["| " + c + " | " + " | ".join(fmt(by[d, c].get(k)) for k in METRICS) + " |"
                  for c in candidates if (d, c) in by]
        lines.append("")
    lines += ["### Leave one dataset out", "", "| chosen on | candidate | reported on | figure | status |", "|---|---|---|---|---|"]
    for d in datasets:
        done = [c for c in candidates if (d, c) in by]
        if not done:
            continue
        best = max(done, key=lambda c: by[d, c][metric[d]])
        for e in datasets:
            if (e, best) in by:
                status = "chosen on this data" if e == d else "transfer"
                lines.append(f"| {d} | {best} | {e} | {fmt(by[e, best][metric[e]])} ({metric[e]}) | {status} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", action="append", required=True, metavar="NAME=CONFIG,ROOT[,BOXES]")
    p.add_argument("--candidate", action="append", required=True, metavar="NAME=KEY=VALUE[;KEY=VALUE...]",
                   help="a candidate setting: --set overrides joined by ';' (NAME= for the config as it is)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every run")
    p.add_argument("--metric", action="append", default=[], metavar="DATASET=METRIC",
                   help="selection metric of a dataset (default: model_auc_micro; avenue: model_auc_macro)")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    datasets = dict(parse_dataset(d) for d in args.dataset)
    candidates = dict(parse_candidate(c) for c in args.candidate)
    metric = {d: DEFAULT_METRIC.get(d, "model_auc_micro") for d in datasets}
    metric.update(dict(m.split("=", 1) for m in args.metric))
    log = out / "sweep.jsonl"
    rows = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    done = {(r["dataset"], r["candidate"]) for r in rows}
    for d, spec in datasets.items():
        for c, sets in candidates.items():
            if (d, c) in done:
                continue
            rows.append(run_one(out, d, spec, c, sets, args.set))
            with log.open("a") as f:
                f.write(json.dumps(rows[-1]) + "\n")
    md = report(rows, list(datasets), list(candidates), metric)
    (out / "sweep.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
