"""Dense optical flow of a video's frames.

The paper computes OF(p3) with a pretrained FlowNet2, which cannot be obtained here (no downloads, no CUDA
build of its custom layers). We substitute OpenCV's DIS flow by default (fast on a CPU, no weights), with
Farneback and torchvision's RAFT (from a local weights file) as options. The flow of frame t is t -> t+1; the
last frame of a video uses t-1 -> t (as in the VEC reference code). Vectors are in pixels of the frame.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from image_od.files.safe_io import load_tensors


class FlowError(ValueError):
    """Bad flow settings or weights file."""


def _grey(frame: np.ndarray) -> np.ndarray:
    return frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)


def flow_pairs(n_frames: int, gap: int = 1) -> list[tuple[int, int]]:
    """The (from, to) frame pair whose flow stands for each frame t: frames ``gap`` apart around t, (t, t+1) for
    gap 1 and (t-1, t+1) for gap 2, shifted inside the video at its ends (gap 1: the last one is (t-1, t))."""
    if n_frames < 2:
        return [(0, 0)] * n_frames
    g = min(gap, n_frames - 1)
    return [(a, a + g) for a in (min(max(t - gap // 2, 0), n_frames - 1 - g) for t in range(n_frames))]


@dataclass
class DisFlow:
    """OpenCV DIS optical flow (Kroeger et al. 2016). ``preset``: ultrafast | fast | medium.

    ``workers`` frame pairs are computed at once, each thread with its own DIS instance over a contiguous share of
    the pairs: OpenCV parallelises one DIS call only in parts, so on 2 cores two calls at once take about 25 % less
    time than one after the other, with the same flow to the bit (``tools/bench_detector.py --speed``)."""

    preset: str = "medium"
    upscale: float = 1.0  # compute on frames enlarged by this factor (finer flow for small objects)
    min_side: int = 0  # and enlarged at least until the shorter side has this many pixels (0: no minimum)
    workers: int = 1

    def __post_init__(self):
        presets = {"ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST, "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
                   "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM}
        if self.preset not in presets:
            raise FlowError(f"unknown DIS preset {self.preset!r}; expected one of {sorted(presets)}")
        if self.workers < 1:
            raise FlowError(f"DIS flow needs at least one worker, got {self.workers}")
        self._dis = [cv2.DISOpticalFlow_create(presets[self.preset]) for _ in range(self.workers)]

    def scale(self, h: int, w: int) -> float:
        """The enlargement used for h x w frames: ``upscale``, or more where the shorter side is below ``min_side``."""
        return max(self.upscale, self.min_side / min(h, w)) if self.min_side else self.upscale

    def __call__(self, frames: np.ndarray, pairs: list[tuple[int, int]]) -> np.ndarray:
        h, w = frames.shape[1:3]
        scale = self.scale(h, w)

        def flows(dis, share: list[tuple[int, int]]) -> list[np.ndarray]:
            if scale == 1.0:
                return [dis.calc(_grey(frames[a]), _grey(frames[b]), None) for a, b in share]
            big = lambda f: cv2.resize(_grey(f), None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)  # noqa: E731
            return [cv2.resize(dis.calc(big(frames[a]), big(frames[b]), None), (w, h), interpolation=cv2.INTER_AREA)
                    / scale for a, b in share]  # back to frame pixels

        n = min(self.workers, len(pairs))
        if n <= 1:
            return np.stack(flows(self._dis[0], pairs))
        cuts = np.linspace(0, len(pairs), n + 1).astype(int)
        with ThreadPoolExecutor(n) as pool:  # OpenCV releases the GIL inside calc
            parts = pool.map(flows, self._dis, [pairs[i:j] for i, j in zip(cuts[:-1], cuts[1:])])
            return np.stack([f for part in parts for f in part])


@dataclass
class FarnebackFlow:
    """OpenCV Farneback flow with the common settings (pyramid 0.5, 3 levels, window 15)."""

    def __call__(self, frames: np.ndarray, pairs: list[tuple[int, int]]) -> np.ndarray:
        return np.stack([cv2.calcOpticalFlowFarneback(_grey(frames[a]), _grey(frames[b]), None,
                                                      0.5, 3, 15, 3, 5, 1.2, 0) for a, b in pairs])


class RaftFlow:
    """torchvision RAFT (large or small) loaded from a local weights file (a state dict); never downloads."""

    def __init__(self, weights: str | Path, small: bool = False, device: str = "cpu", iterations: int = 12):
        from torchvision.models.optical_flow import raft_large, raft_small

        path = Path(weights)
        if not path.is_file():
            raise FlowError(f"RAFT weights file not found: {path}")
        self.model = (raft_small if small else raft_large)(weights=None, progress=False)
        state = load_tensors(path)
        try:
            self.model.load_state_dict(state.get("state_dict", state) if isinstance(state, dict) else state)
        except RuntimeError as err:
            raise FlowError(f"{path} does not hold RAFT-{'small' if small else 'large'} weights: {err}") from err
        self.device = torch.device(device)
        self.model.eval().to(self.device)
        self.iterations = iterations

    def _tensor(self, frames: np.ndarray) -> torch.Tensor:
        rgb = np.stack([cv2.cvtColor(f, cv2.COLOR_GRAY2RGB) if f.ndim == 2 else cv2.cvtColor(f, cv2.COLOR_BGR2RGB)
                        for f in frames])
        x = torch.from_numpy(rgb).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        h, w = x.shape[-2:]
        # RAFT needs sides divisible by 8 and at least 128 px (its correlation pyramid)
        pad_h, pad_w = max(128, h + (-h) % 8) - h, max(128, w + (-w) % 8) - w
        return torch.nn.functional.pad(x, (0, pad_w, 0, pad_h), mode="replicate")

    @torch.no_grad()
    def __call__(self, frames: np.ndarray, pairs: list[tuple[int, int]]) -> np.ndarray:
        h, w = frames.shape[1:3]
        a = self._tensor(frames[[p[0] for p in pairs]]).to(self.device)
        b = self._tensor(frames[[p[1] for p in pairs]]).to(self.device)
        flow = self.model(a, b, num_flow_updates=self.iterations)[-1]
        return flow[:, :, :h, :w].permute(0, 2, 3, 1).cpu().numpy()


def make_flow(method: str = "dis", *, preset: str = "medium", upscale: float = 1.0, min_side: int = 0,
              raft_weights: str | None = None, raft_small: bool = False, device: str = "cpu", workers: int = 1):
    """Build the flow estimator named in the config; DIS computes ``workers`` frame pairs at once."""
    if method == "dis":
        return DisFlow(preset, upscale, min_side, workers)
    if method == "farneback":
        return FarnebackFlow()
    if method == "raft":
        if not raft_weights:
            raise FlowError("flow.method=raft needs flow.raft_weights: a local torchvision RAFT state-dict file")
        return RaftFlow(raft_weights, small=raft_small, device=device)
    raise FlowError(f"unknown flow method {method!r}; expected dis, farneback or raft")
