"""Benchmark the UVAD pipeline: several configurations side by side, each a fresh process with a cold cache.

Prints a markdown table (AUC micro/macro, EER, the motion-energy heuristic on the same boxes, stage timings,
peak memory) and writes it with the raw metrics to OUT/bench.json and OUT/bench.md.

  python tools/bench_vad.py --root ../shared/data/ucsd_ped2 \
      --boxes ../shared/data/ucsd_ped2_vec_boxes/ped2_test_boxes.npz \
      --variant default=configs/ucsd_ped2.yaml --variant paper=configs/ucsd_ped2.yaml+configs/paper.yaml --out runs/bench_ped2
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

COLUMNS = ("auc_micro", "auc_macro", "eer", "heuristic_auc_micro", "extract_s", "train_s", "score_s", "total_s",
           "peak_rss_mb")


def run_variant(name: str, config: str, args, out: Path) -> dict:
    run_dir = out / name
    shutil.rmtree(run_dir, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix="vad-bench-cache-") as cache:
        configs = sum((["--config", c] for c in config.split("+")), [])
        cmd = [sys.executable, "-m", "pipelines.vad_cli", "run", *configs, "--root", args.root,
               "--out", str(run_dir), "--cache", cache, "--quiet", *sum((["--set", s] for s in args.set), [])]
        if args.boxes:
            cmd += ["--boxes", args.boxes]
        print("$", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {"variant": name, "config": config, "command": " ".join(cmd[1:]), **metrics, **metrics["timings"]}


def table(rows: list[dict]) -> str:
    head = "| variant | " + " | ".join(COLUMNS) + " |\n|---|" + "---|" * len(COLUMNS) + "\n"
    def fmt(column: str, v) -> str:
        if not isinstance(v, float):
            return str(v)
        return f"{v:.4f}" if "auc" in column or column == "eer" else f"{v:.1f}"

    return head + "".join("| " + r["variant"] + " | " + " | ".join(fmt(c, r.get(c, "")) for c in COLUMNS) + " |\n"
                          for r in rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True)
    p.add_argument("--boxes")
    p.add_argument("--variant", action="append", required=True, metavar="NAME=CONFIG[+CONFIG...]",
                   help="a named configuration; '+' layers several files")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every variant")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = [run_variant(*v.split("=", 1), args, out) for v in args.variant]
    md = (f"{datetime.now().strftime('%Y-%m-%d %H:%M')} on {platform.node()} ({platform.processor() or 'cpu'}), "
          f"root={args.root}, boxes={args.boxes}\n\n" + table(rows))
    (out / "bench.md").write_text(md)
    (out / "bench.json").write_text(json.dumps(rows, indent=2, default=str))
    print(md)


if __name__ == "__main__":
    main()
