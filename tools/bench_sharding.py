"""Benchmark sharded `vad extract` and `vad score` (issue 8): the same dataset with 1 process and under torchrun
with N processes, side by side in one run, each with a fresh cache.

  python tools/bench_sharding.py --root ../shared/data/ucsd_ped2 --config configs/ucsd_ped2.yaml \\
      --boxes ../shared/data/ucsd_ped2_vec_boxes/ped2_test_boxes.npz --nproc 1 2

One process runs with the machine's default threads; under torchrun each process gets cores / N threads
(``OMP_NUM_THREADS``). `vad score` needs a trained run: the 1-process run is trained once (``--set
model.epochs=1``) and its model and cube errors are copied into the others, so every score stage reads the same
inputs. Rows (seconds, frames and videos per second) go to OUT/sharding.json and print as a markdown table.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from image_od.engine.precision import cpu_model  # noqa: E402

TORCHRUN = Path(sys.executable).with_name("torchrun")


def vad(nproc: int, argv: list[str], log: Path) -> float:
    """Run `vad ARGV` with ``nproc`` processes (torchrun when more than one); its wall seconds."""
    env = {**os.environ, "MPLBACKEND": "Agg"}
    launcher = [sys.executable]
    if nproc > 1:
        launcher = [str(TORCHRUN), "--standalone", f"--nproc_per_node={nproc}"]
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // nproc))
    t0 = time.perf_counter()
    with log.open("w") as out:
        done = subprocess.run([*launcher, "-m", "pipelines.video.cli", *argv, "--quiet"], cwd=REPO, env=env,
                              stdout=out, stderr=subprocess.STDOUT)
    if done.returncode:
        raise RuntimeError(f"vad {' '.join(argv)} with {nproc} processes failed; see {log}")
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", required=True, help="labelled dataset root")
    p.add_argument("--config", action="append", default=[])
    p.add_argument("--boxes", help="precomputed boxes (.npz)")
    p.add_argument("--nproc", type=int, nargs="+", default=[1, 2], help="process counts to compare (first: 1)")
    p.add_argument("--out", default="runs/bench_sharding")
    args = p.parse_args(argv)
    if args.nproc[0] != 1:
        raise SystemExit("--nproc must start with 1 (the run the others are compared with and trained on)")
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    source = [*sum((["--config", c] for c in args.config), []), "--root", args.root, "--set", "model.epochs=1",
              *(["--boxes", args.boxes] if args.boxes else [])]
    rows = []
    for n in args.nproc:
        run = out / f"run{n}"
        extract_s = vad(n, ["extract", *source, "--out", str(run), "--cache", str(out / f"cache{n}")],
                        out / f"extract{n}.log")
        if n == 1:
            vad(1, ["train", "--out", str(run)], out / "train1.log")
        else:
            for name in ("model.pt", "cube_errors.npz"):
                shutil.copy(out / "run1" / name, run / name)
        score_s = vad(n, ["score", "--out", str(run)], out / f"score{n}.log")
        videos = json.loads((run / "videos.json").read_text())["videos"]
        frames = sum(v["n_frames"] for v in videos)
        same = n == 1 or (run / "frame_scores.csv").read_text() == (out / "run1" / "frame_scores.csv").read_text()
        rows.append({"processes": n, "videos": len(videos), "frames": frames, "extract_s": round(extract_s, 1),
                     "extract_fps": round(frames / extract_s, 1), "extract_s_per_video": round(extract_s / len(videos), 2),
                     "score_s": round(score_s, 1), "score_fps": round(frames / score_s, 1),
                     "scores_equal_1_process": same})
    record = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "machine": cpu_model(),
              "cpus": os.cpu_count(), "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
              "rows": rows}
    (out / "sharding.json").write_text(json.dumps(record, indent=1) + "\n")
    print("| processes | videos | frames | extract s | extract frames/s | extract s/video | score s | score frames/s "
          "| scores equal |\n|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['processes']} | {r['videos']} | {r['frames']} | {r['extract_s']} | {r['extract_fps']} | "
              f"{r['extract_s_per_video']} | {r['score_s']} | {r['score_fps']} | {r['scores_equal_1_process']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
