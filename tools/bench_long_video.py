"""Benchmark long videos (issue 8): peak memory and speed of `vad extract`, `vad train` and `vad score` on one
generated video of N minutes. Extraction streams the video, so its peak memory should not grow with N.

  python tools/bench_long_video.py --minutes 1 --out runs/bench_long_video

The video (640x360, 25 fps, MJPG .avi; moving shapes on a textured background) is written frame by frame with
cv2.VideoWriter, so generating it holds one frame. Each stage runs in its own process (the settings of ``FIXED``:
one epoch on a seeded sample of 20,000 cubes read lazily from the cache, then every cube scored; project defaults
otherwise; ``--defaults`` leaves them out); its peak resident memory comes from ``os.wait4``. The row goes to
OUT/<N>min.json and is printed as a markdown table row.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from image_od.engine.precision import cpu_model  # noqa: E402

SIZE, FPS = (640, 360), 25  # (width, height), frames per second
STAGES = ("extract", "train", "score")
FIXED = ["model.epochs=1", "model.max_train_cubes=20000", "data.in_memory=false"]
HEADER = ("| minutes | frames | cubes | extract s | extract fps | extract peak MB | train s | train peak MB | score s "
          "| score fps | score peak MB |\n|---|---|---|---|---|---|---|---|---|---|---|")


def _background(rng: np.random.Generator) -> np.ndarray:
    """A smooth grey texture: no motion boxes where nothing moves."""
    w, h = SIZE
    noise = rng.integers(40, 200, (h // 8, w // 8), dtype=np.uint8)
    return cv2.GaussianBlur(cv2.resize(noise, (w, h), interpolation=cv2.INTER_CUBIC), (9, 9), 0)


def _movers(rng: np.random.Generator, n: int = 8) -> np.ndarray:
    """Per shape: x, y, vx, vy, width, height, shade."""
    w, h = SIZE
    return np.stack([rng.uniform(0, w, n), rng.uniform(40, h - 80, n), rng.choice([-1, 1], n) * rng.uniform(1, 6, n),
                     rng.uniform(-0.5, 0.5, n), rng.integers(14, 40, n), rng.integers(30, 70, n),
                     rng.choice([15, 240], n)], 1)


def _frame(background: np.ndarray, movers: np.ndarray, t: int) -> np.ndarray:
    """Frame ``t``: each shape at its position, wrapping around the frame."""
    w, h = SIZE
    frame = cv2.cvtColor(background, cv2.COLOR_GRAY2BGR)
    for x, y, vx, vy, bw, bh, shade in movers:
        cx, cy = int((x + vx * t) % (w + bw)) - int(bw), int(y + 30 * np.sin(vy * t / FPS))
        cv2.rectangle(frame, (cx, cy), (cx + int(bw), cy + int(bh)), (int(shade),) * 3, -1)
        cv2.circle(frame, (cx + int(bw) // 2, cy - 8), 8, (int(shade),) * 3, -1)
    return frame


def write_video(path: Path, minutes: float, seed: int = 0) -> int:
    """Write the moving-shapes video frame by frame; returns its number of frames."""
    rng = np.random.default_rng(seed)
    background, movers = _background(rng), _movers(rng)
    n = int(round(minutes * 60 * FPS))
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, SIZE)
    if not writer.isOpened():
        raise OSError(f"cv2 cannot write {path}")
    try:
        for t in range(n):
            writer.write(_frame(background, movers, t))
    finally:
        writer.release()
    return n


def run_stage(argv: list[str], log: Path) -> dict[str, float]:
    """Run `vad ARGV` in a fresh process; its wall seconds and peak resident memory (MB, from ``os.wait4``)."""
    t0 = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "pipelines.video.cli", *argv], cwd=REPO, stdout=out,
                                stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise RuntimeError(f"vad {' '.join(argv)} failed ({proc.returncode}); see {log}")
    return {"s": time.perf_counter() - t0, "peak_mb": usage.ru_maxrss / 1024}


def bench(minutes: float, out: Path, sets: list[str], fixed: list[str] = FIXED) -> dict:
    """Generate the video, run the three stages on it, and collect the figures."""
    work = out / f"{minutes:g}min"
    shutil.rmtree(work, ignore_errors=True)
    n_frames = write_video(work / "videos" / "long.avi", minutes)
    common = ["--out", str(work / "run"), "--quiet"]
    extract = ["extract", "--videos", str(work / "videos"), "--cache", str(work / "cache"),
               *sum((["--set", s] for s in [*fixed, *sets]), [])]
    stages = {name: run_stage(argv + common, work / f"{name}.log")
              for name, argv in zip(STAGES, (extract, ["train"], ["score"]))}
    with np.load(work / "run" / "cube_scores.npz") as scores:
        n_cubes = int(len(scores["frame"]))
    return {"minutes": minutes, "frames": n_frames, "cubes": n_cubes, "size": list(SIZE), "fps_video": FPS,
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "machine": cpu_model() or
            platform.machine(), "cpus": os.cpu_count(), "sets": [*fixed, *sets],
            **{f"{k}_s": round(v["s"], 1) for k, v in stages.items()},
            **{f"{k}_peak_mb": round(v["peak_mb"]) for k, v in stages.items()},
            "extract_fps": round(n_frames / stages["extract"]["s"], 1),
            "score_fps": round(n_frames / stages["score"]["s"], 1)}


def markdown_row(r: dict) -> str:
    return (f"| {r['minutes']:g} | {r['frames']} | {r['cubes']} | {r['extract_s']} | {r['extract_fps']} | "
            f"{r['extract_peak_mb']} | {r['train_s']} | {r['train_peak_mb']} | {r['score_s']} | {r['score_fps']} | "
            f"{r['score_peak_mb']} |")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, required=True, help="length of the generated video")
    p.add_argument("--out", default="runs/bench_long_video", help="work folder; the JSON goes to OUT/<N>min.json")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="more config overrides for the run")
    p.add_argument("--keep", action="store_true", help="keep the video, cache and run folder")
    p.add_argument("--defaults", action="store_true",
                   help="the project defaults as they are, without the FIXED sampled, lazy one-epoch training")
    args = p.parse_args(argv)
    out = Path(args.out)
    row = bench(args.minutes, out, args.sets, [] if args.defaults else FIXED)
    (out / f"{args.minutes:g}min.json").write_text(json.dumps(row, indent=1) + "\n")
    if not args.keep:
        shutil.rmtree(out / f"{args.minutes:g}min")
    print(HEADER)
    print(markdown_row(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
