"""A small generated surveillance-like test set in the official UCSD layout: the embedded default dataset.

Scene: a static textured background with a lighter horizontal walkway and mild sensor noise. Normal events:
pedestrians (small upright ellipses with a head) walking along the walkway at 0.7-1.5 px/frame in either
direction. Abnormal events (each frame where one is visible is labelled abnormal): fast movers (5-8 px/frame,
"cyclists"), wrong-way movers (crossing the walkway vertically) and unusual shapes (a large box "cart").
"""
from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np


@dataclass
class Mover:
    kind: str  # walker | fast | wrongway | cart
    x: float
    y: float
    vx: float
    vy: float
    w: int
    h: int
    shade: int
    start: int

    @property
    def abnormal(self) -> bool:
        return self.kind != "walker"


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    noise = rng.normal(0, 1, (height // 8 + 1, width // 8 + 1)).astype(np.float32)
    texture = cv2.resize(noise, (width, height), interpolation=cv2.INTER_CUBIC) * 12 + 110
    texture += rng.normal(0, 4, (height, width))
    top, bottom = int(height * 0.35), int(height * 0.75)
    texture[top:bottom] += 35  # the walkway
    return np.clip(texture, 0, 255).astype(np.float32)


def _draw(img: np.ndarray, m: Mover) -> None:
    cx, cy = int(round(m.x)), int(round(m.y))
    if m.kind == "cart":
        cv2.rectangle(img, (cx - m.w // 2, cy - m.h // 2), (cx + m.w // 2, cy + m.h // 2), m.shade, -1)
        cv2.rectangle(img, (cx - m.w // 2 + 3, cy - m.h // 2 + 3), (cx + m.w // 2 - 3, cy), 255 - m.shade, -1)
        return
    cv2.ellipse(img, (cx, cy), (m.w // 2, m.h // 2), 0, 0, 360, m.shade, -1)
    cv2.circle(img, (cx, cy - m.h // 2 - 2), max(m.w // 3, 2), m.shade, -1)
    if m.kind == "fast":  # a "cyclist": wheels under the rider
        for dx in (-m.w, m.w):
            cv2.circle(img, (cx + dx, cy + m.h // 2), 4, m.shade, 1)


def _visible(m: Mover, width: int, height: int) -> bool:
    return -m.w < m.x < width + m.w and -m.h < m.y < height + m.h


def _spawn(rng: np.random.Generator, kind: str, t: int, width: int, height: int) -> Mover:
    lane = rng.uniform(height * 0.42, height * 0.68)
    direction = rng.choice([-1.0, 1.0])
    x0 = -6.0 if direction > 0 else width + 6.0
    shade = int(rng.choice([rng.integers(20, 60), rng.integers(200, 240)]))
    if kind == "walker":
        return Mover(kind, x0, lane, direction * rng.uniform(0.7, 1.5), 0.0, 8, 16, shade, t)
    if kind == "fast":
        return Mover(kind, x0, lane, direction * rng.uniform(5.0, 8.0), 0.0, 8, 16, shade, t)
    if kind == "wrongway":
        y0 = -8.0 if direction > 0 else height + 8.0
        return Mover(kind, rng.uniform(width * 0.2, width * 0.8), y0, 0.0, direction * rng.uniform(3.0, 4.0), 8, 16,
                     shade, t)
    return Mover("cart", x0, lane, direction * rng.uniform(3.0, 4.0), 0.0, 24, 16, shade, t)


def _video(rng: np.random.Generator, n_frames: int, width: int, height: int) -> tuple[list[np.ndarray], np.ndarray]:
    background = _background(rng, width, height)
    movers = [_spawn(rng, "walker", 0, width, height) for _ in range(3)]
    for m in movers:  # start the first walkers inside the frame
        m.x = rng.uniform(10, width - 10)
    n_events = int(rng.integers(1, 3))
    events = {int(t): kind for t, kind in zip(rng.choice(np.arange(5, n_frames - 30), n_events, replace=False),
                                               rng.choice(["fast", "wrongway", "cart"], n_events, replace=False))}
    frames, labels = [], np.zeros(n_frames, np.uint8)
    for t in range(n_frames):
        if t in events:
            movers.append(_spawn(rng, events[t], t, width, height))
        if rng.random() < 0.06:
            movers.append(_spawn(rng, "walker", t, width, height))
        img = background.copy()
        for m in movers:
            _draw(img, m)
        img += rng.normal(0, 2.0, img.shape)
        frames.append(np.clip(img, 0, 255).astype(np.uint8))
        labels[t] = any(m.abnormal and _visible(m, width, height) for m in movers)
        for m in movers:
            m.x += m.vx
            m.y += m.vy
        movers = [m for m in movers if _visible(m, width, height) or m.start == t]
    return frames, labels


def label_ranges(labels: np.ndarray) -> list[tuple[int, int]]:
    """0/1 per frame -> 1-based inclusive ranges of abnormal frames."""
    edges = np.flatnonzero(np.diff(np.r_[0, labels.astype(int), 0]))
    return [(int(a) + 1, int(b)) for a, b in zip(edges[::2], edges[1::2])]


def make_synthetic_ucsd(root: str | Path, *, n_videos: int = 4, n_frames: int = 100, size: tuple[int, int] = (160, 120),
                        seed: int = 0) -> Path:
    """Write the set to ``root`` (official layout: Test/Test001/001.tif ..., Test/UCSDsynth.m); return ``root``.

    Built in a temporary folder and renamed into place, so a half-written set is never left behind.
    """
    root = Path(root)
    if root.exists():
        raise FileExistsError(f"{root} exists; remove it or choose another folder")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".synthetic-", dir=root.parent))
    try:
        rng = np.random.default_rng(seed)
        lines = []
        for v in range(1, n_videos + 1):
            frames, labels = _video(rng, n_frames, *size)
            folder = tmp / "Test" / f"Test{v:03d}"
            folder.mkdir(parents=True)
            for t, frame in enumerate(frames, 1):
                cv2.imwrite(str(folder / f"{t:03d}.tif"), frame)
            ranges = ", ".join(f"{a}:{b}" for a, b in label_ranges(labels))
            lines.append(f"TestVideoFile{{end+1}}.gt_frame = [{ranges}];")
        (tmp / "Test" / "UCSDsynth.m").write_text("TestVideoFile = {};\n" + "\n".join(lines) + "\n")
        os.replace(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root
