"""Cut an outlier-exposure corpus out of videos: random square crops, each brought to 32x32, written as an image set
in the `folders` layout (OUT/{train,test}/crops/NNNNN.png) that ADIB and ADRA read through the profile:

  python tools/make_exposure_crops.py --video ../shared/data/avenue_partial/training_videos \\
      --video ../shared/data/avenue_partial/testing_videos --video ../shared/data/ucsd_ped2/training/frames \\
      --n 5000 --out runs/exposure/street-crops
  image-od bench --dataset cifar10 ... --method adib --set exposure.colour.dataset=folders \\
      --set exposure.colour.root=runs/exposure/street-crops --set exposure.colour.split=all

Why: ADIB/ADRA train a classifier of "normal" against an unlabelled exposure corpus that must hold none of the
dataset's own classes. Their paper uses CIFAR-100 for CIFAR-10, which is not on this machine; crops of street
scenes are natural images of other content (people, pavement, walls, grass), an ill-suited corpus of the kind of
the paper's SVHN ablation. Crop sides are drawn uniformly between --min-side and --max-side pixels (default:
half the shorter frame side), positions and frames uniformly, videos in proportion to their frame counts. The
folder is written whole or not at all (a temporary folder renamed at the end), with ``exposure.json`` beside the
images saying what it was cut from.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import cv2
import numpy as np

from vad.readers import DatasetError, Video, open_videos

SIZE = 32


def plan_crops(frame_counts: list[int], frame_shapes: list[tuple[int, int]], n: int, min_side: int,
               max_side: int | None, seed: int) -> list[list[tuple[int, int, int, int]]]:
    """For each video, its crops as (frame, top, left, side), sorted by frame; videos drawn in proportion to their
    frame counts, then a frame, a side in [min_side, max_side] (capped by the frame) and a position uniformly."""
    rng = np.random.default_rng(seed)
    counts = np.asarray(frame_counts, np.float64)
    picks = rng.choice(len(counts), size=n, p=counts / counts.sum())
    plans: list[list[tuple[int, int, int, int]]] = [[] for _ in frame_counts]
    for v in picks:
        h, w = frame_shapes[v]
        top_side = min(h, w) if max_side is None else min(max_side, h, w)
        if min_side > top_side:
            raise ValueError(f"--min-side {min_side} is larger than the frames of video {v} ({h}x{w}) allow")
        side = int(rng.integers(min_side, top_side + 1))
        plans[v].append((int(rng.integers(frame_counts[v])), int(rng.integers(h - side + 1)),
                         int(rng.integers(w - side + 1)), side))
    return [sorted(p) for p in plans]


def cut(video: Video, plan: list[tuple[int, int, int, int]]) -> list[np.ndarray]:
    """The planned crops of one video, each resized to 32x32 (area interpolation), BGR uint8, in plan order."""
    out, todo = [], iter(plan)
    step = next(todo, None)
    for index, frame in enumerate(video.iter_frames(grey=False)):
        while step is not None and step[0] == index:
            _, top, left, side = step
            out.append(cv2.resize(frame[top:top + side, left:left + side], (SIZE, SIZE), interpolation=cv2.INTER_AREA))
            step = next(todo, None)
        if step is None:
            break
    if step is not None:
        raise DatasetError(f"{video.path}: fewer frames than counted ({index + 1})")
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\nWhy:")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--video", action="append", required=True,
                   help="a video file, a folder of frames, or a folder of such (repeatable)")
    p.add_argument("--n", type=int, default=5000, help="number of crops (default 5000)")
    p.add_argument("--test-share", type=float, default=0.5,
                   help="share of the crops written to test/ (default 0.5; the rest to train/)")
    p.add_argument("--min-side", type=int, default=32, help="smallest crop side in pixels (default 32)")
    p.add_argument("--max-side", type=int, help="largest crop side in pixels (default: the shorter frame side / 2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, type=Path, help="folder to write (must not exist)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.n < 2 or not 0 < args.test_share < 1:
        raise SystemExit("--n must be at least 2 and --test-share between 0 and 1")
    if args.out.exists():
        raise SystemExit(f"{args.out} exists: choose another --out or remove it")
    try:
        videos = [v for path in args.video for v in open_videos(path)]
        counts = [v.frame_count() for v in videos]
        shapes = [v.frame_shape() for v in videos]
    except DatasetError as err:
        raise SystemExit(str(err)) from None
    max_side = args.max_side or min(min(s) for s in shapes) // 2
    try:
        plans = plan_crops(counts, shapes, args.n, args.min_side, max_side, args.seed)
    except ValueError as err:
        raise SystemExit(str(err)) from None
    crops = [c for video, plan in zip(videos, plans) for c in cut(video, plan)]
    order = np.random.default_rng(args.seed + 1).permutation(len(crops))
    n_test = int(round(args.test_share * len(crops)))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{args.out.name}.", dir=args.out.parent))
    try:
        for rank, i in enumerate(order):
            folder = tmp / ("test" if rank < n_test else "train") / "crops"
            folder.mkdir(parents=True, exist_ok=True)
            if not cv2.imwrite(str(folder / f"{rank:05d}.png"), crops[i]):
                raise OSError(f"cannot write {folder / f'{rank:05d}.png'}")
        info = {"what": "outlier-exposure corpus: random square crops of videos, resized to 32x32 (INTER_AREA)",
                "videos": [{"path": str(v.path), "frames": c, "crops": len(p)}
                           for v, c, p in zip(videos, counts, plans)],
                "n": len(crops), "test": n_test, "train": len(crops) - n_test, "min_side": args.min_side,
                "max_side": max_side, "seed": args.seed,
                "written": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        (tmp / "exposure.json").write_text(json.dumps(info, indent=2) + "\n")
        tmp.rename(args.out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(f"wrote {len(crops)} crops of {len(videos)} videos to {args.out}", file=sys.stderr)
    return info


if __name__ == "__main__":
    main()
