"""A small generated surveillance-like test set in the official UCSD layout: the embedded default dataset.

One fixed "camera" per seed: a static textured background with a lighter horizontal walkway, plus mild sensor
noise in every frame. Normal events: pedestrians (upright body with a head and swinging legs, ~9x18 px) walking
along the walkway at 0.7-1.5 px/frame in either direction, entering and leaving the frame. Abnormal events, and
every frame where one is visible is labelled abnormal: fast "cyclists" (5-8 px/frame), wrong-way walkers
crossing the walkway vertically (4-6 px/frame) and a large box-shaped "cart" (~25x18 px, 5-7 px/frame). Movers
differ from the background by more than 30 grey levels, so frame differencing sees them.
"""
from __future__ import annotations

import math
import os
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

WALKWAY = (0.35, 0.75)  # top and bottom of the walkway band, as fractions of the frame height
ABNORMAL_FRACTION = (0.3, 0.5)  # share of abnormal frames each video is drawn to have
ABNORMAL_KINDS = ("cyclist", "wrongway", "cart")
SPEED = {"walker": (0.7, 1.5), "cyclist": (5.0, 8.0), "wrongway": (4.0, 6.0), "cart": (5.0, 7.0)}  # px/frame
EXTENT = {"walker": (4, 9), "wrongway": (4, 9), "cyclist": (11, 14), "cart": (12, 10)}  # half-sizes as drawn
WALKER_RATE = 0.03  # chance per frame that a new pedestrian enters
NOISE = 2.0  # sensor noise, grey levels (std)


@dataclass(frozen=True)
class Mover:
    """An object moving in a straight line at constant speed; it is at (x0, y0) at frame ``start``."""

    kind: str  # walker | cyclist | wrongway | cart
    start: int
    x0: float
    y0: float
    vx: float
    vy: float
    shade: int

    @property
    def abnormal(self) -> bool:
        return self.kind != "walker"

    def centre(self, t: int) -> tuple[int, int]:
        return round(self.x0 + self.vx * (t - self.start)), round(self.y0 + self.vy * (t - self.start))

    def visible(self, t: int, width: int, height: int) -> bool:
        """Whether any of its pixels lies in the frame at time t."""
        if t < self.start:
            return False
        (cx, cy), (ex, ey) = self.centre(t), EXTENT[self.kind]
        return cx + ex >= 0 and cx - ex < width and cy + ey >= 0 and cy - ey < height


def make_background(size: tuple[int, int], seed: int | Sequence[int]) -> np.ndarray:
    """The static scene, float32 (H,W): smooth texture, fine grain and a lighter walkway band."""
    width, height = size
    rng = np.random.default_rng(seed)
    coarse = rng.normal(0, 1, (height // 8 + 2, width // 8 + 2)).astype(np.float32)
    scene = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC) * 10 + 105
    scene += rng.normal(0, 4, (height, width)).astype(np.float32)
    scene[int(WALKWAY[0] * height):int(WALKWAY[1] * height)] += 35
    return np.clip(scene, 0, 255)


def _shade(rng: np.random.Generator) -> int:
    """A grey level well apart from the background (~105 off the walkway, ~140 on it): dark or bright."""
    return int(rng.integers(20, 61) if rng.random() < 0.5 else rng.integers(205, 246))


def _lane(rng: np.random.Generator, height: int, kind: str) -> float:
    """A centre row that keeps the whole object on the walkway."""
    ey = EXTENT[kind][1]
    return rng.uniform(WALKWAY[0] * height + ey, WALKWAY[1] * height - ey)


def _entering(rng: np.random.Generator, kind: str, start: int, width: int, height: int) -> Mover:
    """An object entering from the left or right edge (top or bottom for wrong-way walkers) at frame ``start``."""
    sign = float(rng.choice([-1.0, 1.0]))
    speed = sign * rng.uniform(*SPEED[kind])
    ex, ey = EXTENT[kind]
    if kind == "wrongway":
        y0 = -ey - 1.0 if sign > 0 else height + ey
        return Mover(kind, start, rng.uniform(0.15, 0.85) * width, y0, 0.0, speed, _shade(rng))
    x0 = -ex - 1.0 if sign > 0 else width + ex
    return Mover(kind, start, x0, _lane(rng, height, kind), speed, 0.0, _shade(rng))


def _walkers(rng: np.random.Generator, n_frames: int, width: int, height: int) -> list[Mover]:
    """2-4 pedestrians already in the frame at t=0, then newcomers entering at random times."""
    walkers = [replace(_entering(rng, "walker", 0, width, height), x0=rng.uniform(10, width - 10))
               for _ in range(int(rng.integers(2, 5)))]
    arrivals = np.flatnonzero(rng.random(n_frames) < WALKER_RATE)
    return walkers + [_entering(rng, "walker", int(t), width, height) for t in arrivals]


def _labels(movers: list[Mover], n_frames: int, width: int, height: int) -> np.ndarray:
    """1 for each frame where an abnormal mover is visible."""
    return np.array([any(m.abnormal and m.visible(t, width, height) for m in movers) for t in range(n_frames)],
                    np.uint8)


def _events(rng: np.random.Generator, n_frames: int, width: int, height: int) -> list[Mover]:
    """1-3 abnormal movers of different kinds, drawn again until 30-50% of the frames show one.

    Events may start before the first frame (the object is already crossing when the video begins), as in UCSD.
    """
    for _ in range(200):
        kinds = rng.choice(ABNORMAL_KINDS, int(rng.integers(1, 4)), replace=False)
        events = [_entering(rng, str(k), int(rng.integers(-20, n_frames)), width, height) for k in kinds]
        if ABNORMAL_FRACTION[0] <= _labels(events, n_frames, width, height).mean() <= ABNORMAL_FRACTION[1]:
            break
    return events


def _draw_person(img: np.ndarray, cx: int, cy: int, shade: int, swing: int) -> None:
    cv2.circle(img, (cx, cy - 6), 2, shade, -1)  # head
    cv2.ellipse(img, (cx, cy - 1), (3, 4), 0, 0, 360, shade, -1)  # body
    for s in (swing, -swing):  # legs
        cv2.line(img, (cx, cy + 3), (cx + s, cy + 8), shade, 2)


def _draw(img: np.ndarray, m: Mover, t: int) -> None:
    """Draw ``m`` at frame t; legs swing with the distance walked, so a walker's whole body changes."""
    cx, cy = m.centre(t)
    if m.kind == "cart":
        cv2.rectangle(img, (cx - 12, cy - 7), (cx + 12, cy + 6), m.shade, -1)
        cv2.rectangle(img, (cx - 9, cy - 4), (cx + 9, cy + 3), 255 - m.shade, -1)
        for dx in (-8, 8):
            cv2.circle(img, (cx + dx, cy + 8), 2, m.shade, -1)
        return
    distance = math.hypot(m.vx, m.vy) * (t - m.start)
    _draw_person(img, cx, cy, m.shade, round(3 * math.sin(0.5 * distance)))
    if m.kind == "cyclist":
        for dx in (-6, 6):
            cv2.circle(img, (cx + dx, cy + 9), 4, m.shade, 2)


def synthetic_video(background: np.ndarray, n_frames: int, seed: int | Sequence[int],
                    abnormal: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """One video on ``background``: frames (T,H,W) uint8 and labels (T,) uint8, 1 = abnormal; ``abnormal=False``
    draws pedestrians only (a normal training video)."""
    rng = np.random.default_rng(seed)
    height, width = background.shape
    movers = _walkers(rng, n_frames, width, height) + (_events(rng, n_frames, width, height) if abnormal else [])
    frames = np.empty((n_frames, height, width), np.uint8)
    for t in range(n_frames):
        img = background.copy()
        for m in movers:
            if m.visible(t, width, height):
                _draw(img, m, t)
        frames[t] = np.clip(img + rng.normal(0, NOISE, img.shape), 0, 255)
    return frames, _labels(movers, n_frames, width, height)


def label_ranges(labels: np.ndarray) -> list[tuple[int, int]]:
    """0/1 per frame -> 1-based inclusive [start, end] ranges of the abnormal frames (the UCSD .m convention)."""
    edges = np.flatnonzero(np.diff(np.r_[0, np.asarray(labels, int), 0]))
    return [(int(a) + 1, int(b)) for a, b in zip(edges[::2], edges[1::2])]


def make_synthetic_ucsd(root: str | Path, *, n_videos: int = 4, n_frames: int = 80, size: tuple[int, int] = (160, 120),
                        seed: int = 0, n_train_videos: int = 0) -> Path:
    """Write the set under ``root`` in the official UCSD layout and return ``root``.

    ``root/Test/Test001/001.tif ...`` (grey 8-bit) and ``root/Test/UCSDsynth.m`` with one
    ``TestVideoFile{end+1}.gt_frame = [a:b, c:d];`` line per video; with ``n_train_videos``, also
    ``root/Train/Train001/...``, normal videos (pedestrians only) of the same scene. ``size`` is (width, height).
    The same seed gives identical files. Each split is built in a hidden temporary folder and renamed into place
    at the end, so a half-written set is never left behind.
    """
    root = Path(root)
    width, height = size
    if n_videos < 1 or n_frames < 10 or width < 48 or height < 48:
        raise ValueError(f"need n_videos >= 1, n_frames >= 10 and a size of at least 48x48; got {n_videos}, "
                         f"{n_frames}, {size}")
    test = root / "Test"
    if test.exists():
        raise FileExistsError(f"{test} exists: remove it or choose another folder")
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".synthetic-", dir=root))
    try:
        background = make_background(size, seed)
        lines = ["TestVideoFile = {};"]
        for v in range(1, n_videos + 1):
            frames, labels = synthetic_video(background, n_frames, seed=(seed, v))
            _write_frames(frames, tmp / f"Test{v:03d}")
            ranges = ", ".join(f"{a}:{b}" for a, b in label_ranges(labels))
            lines.append(f"TestVideoFile{{end+1}}.gt_frame = [{ranges}];")
        (tmp / "UCSDsynth.m").write_text("\n".join(lines) + "\n")
        if n_train_videos:
            train = Path(tempfile.mkdtemp(prefix=".synthetic-train-", dir=root))
            for v in range(1, n_train_videos + 1):
                frames, _ = synthetic_video(background, n_frames, seed=(seed, 1000 + v), abnormal=False)
                _write_frames(frames, train / f"Train{v:03d}")
            os.replace(train, root / "Train")
        os.replace(tmp, test)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # only still there if something failed
        for left in root.glob(".synthetic-train-*"):
            shutil.rmtree(left, ignore_errors=True)
    return root


def _write_frames(frames: np.ndarray, folder: Path) -> None:
    folder.mkdir()
    for t, frame in enumerate(frames, 1):
        if not cv2.imwrite(str(folder / f"{t:03d}.tif"), frame):
            raise OSError(f"cv2 cannot write {folder / f'{t:03d}.tif'}")
