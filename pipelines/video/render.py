"""Pictures of where the anomalies are: ``plots/top_events.png`` (the most anomalous frames with their boxes) and
``vad render`` (an annotated MP4 of one video: boxes coloured by score, the score curve below, written with ffmpeg).
"""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
from tqdm.auto import tqdm

from image_od.files.atomic import atomic_path
from pipelines.video import run_folder
from vad.readers import Video

CURVE_HEIGHT = 90


def _frames(path: Path, bad_frames: str = "error") -> Iterator[np.ndarray]:
    """The BGR frames of a frame folder or a video file, one at a time (``vad.readers.Video.iter_frames``), with
    the run's policy for unreadable frame images (``data.bad_frames``)."""
    return Video(path.stem, path).iter_frames(grey=False, bad_frames=bad_frames)


def read_frames_at(path: Path, wanted: set[int], bad_frames: str = "error") -> dict[int, np.ndarray]:
    """The BGR frames of ``path`` whose indices are in ``wanted``, reading no further than the last of them."""
    found = {}
    for t, frame in enumerate(_frames(path, bad_frames)):
        if t in wanted:
            found[t] = frame
        if len(found) == len(wanted):
            break
    return found


def _score_colour(value: float) -> tuple[int, int, int]:
    """BGR colour of a score in [0, 1]: green (low) through yellow to red (high)."""
    v = float(np.clip(value, 0, 1))
    return (0, int(255 * min(1.0, 2 * (1 - v))), int(255 * min(1.0, 2 * v)))


def _run_data(out: Path) -> tuple[dict, dict[str, dict[str, np.ndarray]], dict[str, np.ndarray]]:
    info = json.loads((out / "videos.json").read_text())
    cubes = run_folder.load_npz(out / "cube_scores.npz", "run `vad score` again", needs=("final",))
    # boxes are ranked by the cubes' fused score, the one the frame scores and events use
    return info, run_folder.read_frame_scores(out), {**{k: cubes[k] for k in ("video", "frame", "boxes")},
                                                     "score": cubes["final"]}


def _cube_rank(scores: np.ndarray) -> np.ndarray:
    """Every cube's score as its rank in [0, 1] over the run (a scale that needs no threshold)."""
    ranks = np.empty(len(scores))
    ranks[np.argsort(scores, kind="stable")] = np.arange(len(scores))
    return ranks / max(len(scores) - 1, 1)


def top_event_frames(out: Path, top: int) -> list[tuple[str, int, float, bool]]:
    """(video, frame, score, is_alarm) of the peak frames of events.csv by peak score (alarms), then of the
    highest-scored remaining frames at least 10 frames from those already chosen, up to ``top``."""
    _, frames, _ = _run_data(out)
    events = sorted(run_folder.read_events(out), key=lambda r: -r["peak_score"])
    chosen = [(r["video"], r["peak_frame"], r["peak_score"], True) for r in events[:top]]
    candidates = sorted(((float(s), name, t) for name, d in frames.items() for t, s in enumerate(d["score"])),
                        reverse=True)
    for s, name, t in candidates:
        if len(chosen) >= top:
            break
        if all(name != v or abs(t - u) >= 10 for v, u, _, _ in chosen):
            chosen.append((name, t, s, False))
    return chosen


def plot_top_events(out: str | Path, top: int = 12) -> Path | None:
    """plots/top_events.png: the ``top`` most anomalous frames (``top_event_frames``), every cube box drawn coloured
    by its score rank (green to red) and the frame's most anomalous cube thick; None if the run has no frames."""
    from pipelines.figures import grid_figure

    out = Path(out)
    info, frames, cubes = _run_data(out)
    chosen = top_event_frames(out, top)
    if not chosen:
        return None
    index = {v["name"]: i for i, v in enumerate(info["videos"])}
    paths = {v["name"]: Path(v["path"]) for v in info["videos"]}
    rank = _cube_rank(cubes["score"])
    bad_frames = run_folder.checked_bad_frames(out)
    images = {}
    for name in {c[0] for c in chosen}:
        wanted = {t for v, t, _, _ in chosen if v == name}
        images.update({(name, t): img for t, img in read_frames_at(paths[name], wanted, bad_frames).items()})
    fig, axes = grid_figure(len(chosen), 4, 3.6, 2.9)
    for k, (ax, (name, t, score, alarm)) in enumerate(zip(axes, chosen)):
        img = images.get((name, t))
        if img is None:
            continue
        img = _draw_boxes(img, cubes, rank, index[name], t)
        ax.imshow(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
        label = frames[name]["label"]
        truth = "" if label is None else ("  [abnormal]" if label[t] else "  [normal]")
        ax.set_title(f"{f'alarm {k + 1}: ' if alarm else ''}{name} frame {t}: {score:.2f}{truth}", fontsize=8)
    fig.suptitle("the alarms' peak frames (events.csv, highest first), then the highest-scored other frames "
                 "(box colour: cube score rank, green low to red high)", fontsize=9)
    fig.tight_layout()
    path = out / "plots" / "top_events.png"
    path.parent.mkdir(exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def _draw_boxes(img: np.ndarray, cubes: dict[str, np.ndarray], rank: np.ndarray, v: int, t: int) -> np.ndarray:
    """``img`` with the boxes of video ``v``'s frame ``t`` coloured by score rank, the top one thick."""
    img = img.copy()
    inside = np.flatnonzero((cubes["video"] == v) & (cubes["frame"] == t))
    if len(inside) == 0:
        return img
    best = inside[np.argmax(cubes["score"][inside])]
    for i in sorted(inside, key=lambda j: rank[j]):
        x1, y1, x2, y2 = (int(round(c)) for c in cubes["boxes"][i])
        cv2.rectangle(img, (x1, y1), (x2, y2), _score_colour(rank[i]), 3 if i == best else 1)
    return img


def _curve_panel(scores: np.ndarray, labels: np.ndarray | None, t: int, width: int) -> np.ndarray:
    """A strip with the video's score curve (abnormal frames shaded red if labelled) and a cursor at frame t."""
    panel = np.full((CURVE_HEIGHT, width, 3), 255, np.uint8)
    n = len(scores)
    xs = np.linspace(0, width - 1, n)
    if labels is not None:
        for u in np.flatnonzero(labels):
            x0, x1 = int(xs[u]), int(xs[min(u + 1, n - 1)]) + 1
            panel[:, x0:x1] = (200, 200, 255)
    lo, hi = float(scores.min()), float(scores.max())
    ys = (CURVE_HEIGHT - 6) - (scores - lo) / (hi - lo if hi > lo else 1.0) * (CURVE_HEIGHT - 12)
    cv2.polylines(panel, [np.stack([xs, ys], 1).astype(np.int32)], False, (180, 80, 0), 1, cv2.LINE_AA)
    cv2.line(panel, (int(xs[t]), 0), (int(xs[t]), CURVE_HEIGHT - 1), (0, 0, 0), 1)
    cv2.putText(panel, f"frame {t}  score {scores[t]:.2f}", (5, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
    return panel


def render_video(out: str | Path, video: str, output: str | Path | None = None, *, fps: float = 25.0,
                 progress: bool = True) -> Path:
    """Write an MP4 of ``video``: every frame with its cube boxes coloured by score rank (the most anomalous
    thick) over the video's score curve with a cursor; encoded by the ffmpeg binary (H.264)."""
    out = Path(out)
    info, frames, cubes = _run_data(out)
    names = [v["name"] for v in info["videos"]]
    if video not in names:
        raise ValueError(f"no video {video!r} in {out}; videos: {', '.join(names)}")
    if shutil.which("ffmpeg") is None:
        raise FileNotFoundError("ffmpeg not found on PATH: install it (apt-get install ffmpeg) to render videos")
    v = names.index(video)
    scores, labels = frames[video]["score"], frames[video]["label"]
    rank = _cube_rank(cubes["score"])
    path = Path(output) if output else out / "render" / f"{video}.mp4"
    if path.resolve().is_relative_to(out.resolve()):
        run_folder.record(out, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    source = Path(info["videos"][v]["path"])
    bad_frames = run_folder.checked_bad_frames(out)
    first = next(_frames(source, bad_frames))
    h, w = first.shape[:2]
    w_even, h_even = w - w % 2, (h + CURVE_HEIGHT) - (h + CURVE_HEIGHT) % 2  # yuv420p needs even sizes
    with atomic_path(path) as tmp:
        cmd = ["ffmpeg", "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "bgr24", "-s", f"{w_even}x{h_even}",
               "-r", str(fps), "-i", "-", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-f", "mp4", str(tmp)]
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            for t, img in enumerate(tqdm(_frames(source, bad_frames), total=len(scores), desc=f"render {video}",
                                         disable=not progress)):
                if t >= len(scores):
                    break
                canvas = np.vstack([_draw_boxes(img, cubes, rank, v, t), _curve_panel(scores, labels, t, w)])
                proc.stdin.write(np.ascontiguousarray(canvas[:h_even, :w_even]).tobytes())
        finally:
            proc.stdin.close()
            err = proc.stderr.read().decode(errors="replace")
            proc.wait()
        if proc.returncode != 0:
            raise RuntimeError(f"ffmpeg failed writing {path}: {err.strip()}")
    return path
