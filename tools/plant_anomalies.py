"""Plant labelled speed anomalies into real, unlabeled footage: a check of the video detector on a scene that no
setting saw (docs/BENCHMARKS_LOG.md, "Planted runners in real street footage").

Each footage (``--video``, one or more, each with its ``--run``) is cut into ``--clips`` clips of equal length.
From each clip one walker of a run on the same footage (its ``cube_scores.npz`` tracks) is copied into the next
clip of that footage (the last clip's into the first), at the same frame
offsets and places but ``--speed`` times as fast: from the first frame s of its track, frame t of the target clip
shows the walker as it was at s + speed (t - s), for t up to s + (L - 1) // speed. Only the walker's own pixels are
pasted (those within its box, ``--margin`` of its size wider on each side, that differ from the source clip's median
background by more than ``--threshold`` levels in a colour channel, closed and dilated by 2 pixels), so the target
clip keeps everything else it showed; nothing is erased. Those frames are labelled abnormal, every other frame
normal; footage in which a clip has no walker to copy is skipped (an error when it is the only one).
``--control`` writes the matched control: the same walkers pasted over the same frames, with the same labels,
at their own pace, so that what a score finds there is the pasting and the frames' other content, not the speed (the
difference between the two sets' AUCs is what the speed alone is worth). The walker is the track that lies inside
its clip for at least ``--min-frames`` frames, moves at least one box height, keeps its box height within a factor
of 2 (one object, not two merged), and overlaps the other objects' boxes least on average (ties: the longer, then
the lower track id).

The output is a UCSD-layout dataset (``Test/Test001/001.png``, ..., ``Test/planted.m`` with the abnormal frame ranges)
that ``vad run --root OUT`` reads, and ``planted.json`` says which track was planted where. It is built beside OUT
and renamed into place when complete.

  vad run --videos /usr/share/doc/opencv-doc/examples/data/vtest.avi --detector $W --out runs/vtest_det
  python tools/plant_anomalies.py --video /usr/share/doc/opencv-doc/examples/data/vtest.avi \
      --run runs/vtest_det --out /tmp/vtest_planted
  vad run --root /tmp/vtest_planted --detector $W --out runs/vtest_planted_det

Ped2's normal training videos, each cut in two (check PT, docs/BENCHMARKS_LOG.md):

  for v in 01 02 ... 16; do vad run --videos ../shared/data/ucsd_ped2/training/frames/$v --detector $W \\
      --out runs/ped2train_$v; done
  python tools/plant_anomalies.py --video ../shared/data/ucsd_ped2/training/frames/{01..16} \\
      --run runs/ped2train_{01..16} --clips 2 --out /tmp/ped2train_planted
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from vad.readers import Video


def read_video(path: Path) -> np.ndarray:
    """All frames of the footage (a video file or a folder of frames; ``vad.readers.Video``), (T, H, W, 3) BGR."""
    try:
        return Video(path.stem, path).read_frames(grey=False)
    except ValueError as err:  # vad.readers.DatasetError names what is wrong
        raise SystemExit(f"{path}: {err}") from None


def widened(box: np.ndarray, margin: float, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """``box`` (x1, y1, x2, y2) widened by ``margin`` of its size on each side, in whole pixels inside the frame."""
    x1, y1, x2, y2 = box
    dx, dy = margin * (x2 - x1), margin * (y2 - y1)
    h, w = shape
    return (max(0, int(np.floor(x1 - dx))), max(0, int(np.floor(y1 - dy))),
            min(w, int(np.ceil(x2 + dx))), min(h, int(np.ceil(y2 + dy))))


def overlap_share(box: np.ndarray, others: np.ndarray) -> float:
    """The share of ``box``'s area covered by the other boxes (summed, capped at 1)."""
    if len(others) == 0:
        return 0.0
    ix = np.clip(np.minimum(box[2], others[:, 2]) - np.maximum(box[0], others[:, 0]), 0, None)
    iy = np.clip(np.minimum(box[3], others[:, 3]) - np.maximum(box[1], others[:, 1]), 0, None)
    area = max((box[2] - box[0]) * (box[3] - box[1]), 1e-6)
    return float(min(1.0, (ix * iy).sum() / area))


def pick_walker(frames: np.ndarray, boxes: np.ndarray, tracks: np.ndarray, start: int, stop: int,
                min_frames: int, margin: float, shape: tuple[int, int]) -> tuple[int, np.ndarray, np.ndarray] | None:
    """The track to copy from frames [start, stop) (see the module's docstring); returns (track, its frames, its
    boxes) or None."""
    wide = np.array([widened(x, margin, shape) for x in boxes], np.float64)
    best, best_key = None, None
    for track in np.unique(tracks):
        rows = np.where(tracks == track)[0]
        rows = rows[np.argsort(frames[rows])]
        t, b = frames[rows], boxes[rows]
        if t[0] < start or t[-1] >= stop or len(t) < min_frames or np.any(np.diff(t) != 1):
            continue
        heights = b[:, 3] - b[:, 1]
        centre = (b[:, :2] + b[:, 2:]) / 2
        if np.hypot(*(centre[-1] - centre[0])) < heights.mean() or heights.max() > 2 * heights.min():
            continue
        overlap = np.mean([overlap_share(wide[r], wide[(frames == frames[r]) & (tracks != track)]) for r in rows])
        key = (round(float(overlap), 3), -len(t), int(track))
        if best_key is None or key < best_key:
            best, best_key = (int(track), t, b), key
    return best


def plant(target: np.ndarray, source: np.ndarray, t: np.ndarray, b: np.ndarray, speed: int, margin: float,
          threshold: float, control: bool = False) -> tuple[np.ndarray, int]:
    """``target`` with the walker of ``source`` (frames ``t`` relative to the clips' starts, boxes ``b``) pasted
    ``speed`` times as fast (``control``: at its own pace, over the same frames); returns the new clip and its last
    abnormal frame."""
    out = target.copy()
    background = np.median(source[::2], axis=0).astype(np.int16)
    kernel = np.ones((5, 5), np.uint8)
    s, last = int(t[0]), int(t[0]) + (len(t) - 1) // speed
    for frame in range(s, last + 1):
        u = frame if control else s + speed * (frame - s)
        x1, y1, x2, y2 = widened(b[u - s], margin, target.shape[1:3])
        crop = source[u, y1:y2, x1:x2]
        mask = (np.abs(crop.astype(np.int16) - background[y1:y2, x1:x2]).max(axis=2) > threshold).astype(np.uint8)
        mask = cv2.dilate(cv2.morphologyEx(mask, cv2.MORPH_CLOSE, kernel), kernel).astype(bool)
        out[frame, y1:y2, x1:x2][mask] = crop[mask]
    return out, last


class Unplantable(Exception):
    """A footage clip with no walker to copy; the message says which."""


def plant_footage(video: Path, run: Path, args: argparse.Namespace) -> list[tuple[np.ndarray, int, int, dict]]:
    """The footage ``video`` cut into ``args.clips`` clips, each with the walker of the clip before it planted
    (``run``: a run on this footage); per clip (frames, first abnormal frame, last abnormal frame, record)."""
    if not (run / "cube_scores.npz").is_file():
        raise SystemExit(f"{run}: no cube_scores.npz; run `vad run --videos {video} --out {run}` first")
    cubes = np.load(run / "cube_scores.npz")
    if len(np.unique(cubes["video"])) != 1:
        raise SystemExit(f"{run}: a run on one video is needed, it scored {len(np.unique(cubes['video']))}")
    frames = read_video(video)
    if int(cubes["frame"].max()) >= len(frames):
        raise SystemExit(f"{run} has boxes up to frame {int(cubes['frame'].max())} but {video} has "
                         f"{len(frames)} frames: not a run on this footage")
    length = len(frames) // args.clips
    clips = [frames[c * length:(c + 1) * length] for c in range(args.clips)]
    out = []
    for c in range(args.clips):
        source = (c - 1) % args.clips  # each clip receives the walker of the clip before it
        start = source * length
        pick = pick_walker(cubes["frame"], cubes["boxes"], cubes["track"], start, start + length, args.min_frames,
                           args.margin, frames.shape[1:3])
        if pick is None:
            raise Unplantable(f"{video}, clip {source + 1} (frames {start}-{start + length - 1}): no track of {run} "
                              f"can be copied (at least {args.min_frames} frames inside the clip, moving one box "
                              "height, one object)")
        track, t, b = pick
        clip, last = plant(clips[c], clips[source], t - start, b, args.speed, args.margin, args.threshold,
                           args.control)
        first = int(t[0]) - start
        out.append((clip, first, last, {"video": str(video), "frames": [c * length, (c + 1) * length - 1],
                                        "walker_track": track, "walker_frames": [int(t[0]), int(t[-1])],
                                        "abnormal_frames": [first, last], "speed": 1 if args.control else args.speed}))
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--video", type=Path, nargs="+", required=True,
                   help="the footage (video files or folders of frames; each is cut into its own clips)")
    p.add_argument("--run", type=Path, nargs="+", required=True,
                   help="a vad run on each footage, in the same order (its cube_scores.npz gives the walkers' tracks)")
    p.add_argument("--out", type=Path, required=True, help="the planted dataset (UCSD layout); must not exist")
    p.add_argument("--clips", type=int, default=4, help="clips of equal length per footage, one walker planted in each")
    p.add_argument("--speed", type=int, default=3, help="how many times as fast the planted walkers move")
    p.add_argument("--margin", type=float, default=0.15, help="boxes widened by this share of their size per side")
    p.add_argument("--min-frames", type=int, default=45, help="the shortest track that may be copied")
    p.add_argument("--threshold", type=float, default=25.0,
                   help="levels (in any colour channel) from the median background that make a pixel the walker's")
    p.add_argument("--control", action="store_true",
                   help="the matched control: the same walkers pasted over the same frames, at their own pace")
    args = p.parse_args(argv)
    if args.out.exists():
        raise SystemExit(f"{args.out} exists: choose a new folder")
    if args.speed < 2 or args.clips < 2:
        raise SystemExit("--speed must be at least 2 and --clips at least 2 (a walker is copied into another clip)")
    if len(args.video) != len(args.run):
        raise SystemExit(f"{len(args.video)} --video but {len(args.run)} --run: one run per footage, in order")
    tmp = args.out.with_name(args.out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    test = tmp / "Test"
    planted, m_lines = [], []
    for video, run in tqdm(list(zip(args.video, args.run)), desc="planting"):
        try:
            clips = plant_footage(video, run, args)
        except Unplantable as err:
            if len(args.video) == 1:
                raise SystemExit(str(err)) from None
            print(f"skipped: {err}")
            continue
        for clip, first, last, record in clips:
            folder = test / f"Test{len(planted) + 1:03d}"
            folder.mkdir(parents=True)
            for i, image in enumerate(clip):
                cv2.imwrite(str(folder / f"{i + 1:03d}.png"), image)
            m_lines.append(f"TestVideoFile{{end+1}}.gt_frame = [{first + 1}:{last + 1}];")
            planted.append({"clip": folder.name, **record})
    if not planted:
        raise SystemExit("no footage could be planted")
    (test / "planted.m").write_text("TestVideoFile = {};\n" + "\n".join(m_lines) + "\n")
    (tmp / "planted.json").write_text(json.dumps({"margin": args.margin, "threshold": args.threshold,
                                                  "runs": [str(r) for r in args.run], "clips": planted}, indent=2))
    tmp.rename(args.out)
    print(f"{args.out}: {len(planted)} clips, "
          + ", ".join(f"{p['clip']} abnormal {p['abnormal_frames'][0]}-{p['abnormal_frames'][1]}" for p in planted))


if __name__ == "__main__":
    main()
