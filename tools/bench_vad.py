"""Benchmark the UVAD pipeline: several configurations side by side, each a fresh process with a cold cache.

Every variant is one `vad run`; its row shows the final score (``auc_*``), the learned score alone before any
fusion with the motion-energy heuristic (``model_auc_*``), the heuristic on the same boxes (``heuristic_*``) and
the plain motion-energy rule, the baseline (``motion_rule_*``; it differs from the heuristic only where
``score.position_norm`` normalises the latter, as in the semi-supervised mode), with stage timings and peak
memory; a second table gives each variant's per-video AUCs (on a few videos one of them can move macro AUC by
points). The tables go to OUT/bench.md, the raw metrics and commands to OUT/bench.json.

  python tools/bench_vad.py --root ../shared/data/ucsd_ped2 \\
      --boxes ../shared/data/ucsd_ped2_vec_boxes/ped2_test_boxes.npz \\
      --train-boxes ../shared/data/ucsd_ped2_vec_boxes/ped2_train_boxes.npz \\
      --variant default=configs/ucsd_ped2.yaml --variant paper=configs/ucsd_ped2.yaml+configs/paper.yaml \\
      --variant 'semi=configs/ucsd_ped2.yaml;model.train_on=training' --out runs/bench_ped2

A variant is NAME=CONFIG[+CONFIG...][;KEY=VALUE...]: '+' layers config files, ';' adds --set overrides; an empty
CONFIG runs the defaults with no config file (as `vad run` on one's own footage).
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from image_od.engine.precision import cpu_model  # noqa: E402

COLUMNS = ("auc_micro", "auc_macro", "model_auc_micro", "model_auc_macro", "heuristic_auc_micro",
           "heuristic_auc_macro", "motion_rule_auc_micro", "motion_rule_auc_macro", "eer", "extract_s", "train_s",
           "score_s", "total_s", "peak_rss_mb")


def run_variant(name: str, spec: str, args, out: Path) -> dict:
    configs, *sets = spec.split(";")
    run_dir = out / name
    shutil.rmtree(run_dir, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix="vad-bench-cache-") as cache:
        config_args = sum((["--config", c] for c in configs.split("+") if c), [])
        cmd = [sys.executable, "-m", "pipelines.video.cli", "run", *config_args,
               "--root", args.root, "--out", str(run_dir), "--cache", cache, "--quiet",
               *sum((["--set", s] for s in [*args.set, *sets]), [])]
        if args.boxes:
            cmd += ["--boxes", args.boxes]
        if args.detector:
            cmd += ["--detector", args.detector]
        if args.train_boxes and "model.train_on=training" in sets:
            cmd += ["--train-boxes", args.train_boxes]
        print("$", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {"variant": name, "config": spec, "command": " ".join(cmd[1:]), **metrics, **metrics["timings"]}


def table(rows: list[dict]) -> str:
    head = "| variant | " + " | ".join(COLUMNS) + " |\n|---|" + "---|" * len(COLUMNS) + "\n"

    def fmt(column: str, v) -> str:
        if not isinstance(v, float):
            return str(v)
        return f"{v:.4f}" if "auc" in column or column == "eer" else f"{v:.1f}"

    return head + "".join("| " + r["variant"] + " | " + " | ".join(fmt(c, r.get(c, "")) for c in COLUMNS) + " |\n"
                          for r in rows)


def video_table(rows: list[dict]) -> str:
    """Each variant's per-video frame AUC, final / learned alone / heuristic, over the videos that hold both normal
    and abnormal frames (the ones macro AUC averages); '' for unlabeled runs."""
    videos = list(dict.fromkeys(v for r in rows for v, a in r.get("per_video_auc", {}).items()
                                if a["final"] is not None))
    if not videos:
        return ""
    head = ("\nPer video, final / learned alone / heuristic:\n\n| variant | " + " | ".join(videos) + " |\n|---|"
            + "---|" * len(videos) + "\n")

    def cell(a: dict | None) -> str:
        return "" if not a or a["final"] is None else f"{a['final']:.3f} / {a['model']:.3f} / {a['heuristic']:.3f}"

    return head + "".join("| " + r["variant"] + " | " + " | ".join(cell(r.get("per_video_auc", {}).get(v))
                                                                   for v in videos) + " |\n" for r in rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True)
    p.add_argument("--boxes", help="precomputed boxes of the scored (test) videos, for every variant")
    p.add_argument("--train-boxes", help="precomputed boxes of the training videos (semi-supervised variants)")
    p.add_argument("--detector", help="detector weights (vad run --detector) for every variant; a variant can still "
                   "set regions.sources=[motion] for frame-difference boxes only")
    p.add_argument("--variant", action="append", required=True, metavar="NAME=CONFIG[+CONFIG...][;KEY=VALUE...]",
                   help="a named configuration; '+' layers several files, ';' adds overrides")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every variant")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = [run_variant(*v.split("=", 1), args, out) for v in args.variant]
    md = (f"{datetime.now().strftime('%Y-%m-%d %H:%M')} on {platform.node()} ({cpu_model()}), "
          f"root={args.root}, boxes={args.boxes}\n\n" + table(rows) + video_table(rows))
    (out / "bench.md").write_text(md)
    (out / "bench.json").write_text(json.dumps(rows, indent=2, default=str))
    print(md)


if __name__ == "__main__":
    main()
