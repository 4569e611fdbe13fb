"""Writers of tiny datasets in each real on-disk layout (official UCSD, preprocessed UCSD, Avenue), for tests."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import scipy.io

Ranges = list[tuple[int, int]]  # 1-based inclusive [start, end] frame ranges of one video


def frames(n: int, h: int = 16, w: int = 24, seed: int = 0) -> np.ndarray:
    """(n,h,w) uint8 grey frames: random texture with a bright square moving right one pixel per frame."""
    rng = np.random.default_rng(seed)
    video = rng.integers(60, 90, (n, h, w), dtype=np.uint8)
    for t in range(n):
        x = t % (w - 4)
        video[t, h // 4:h // 4 + 4, x:x + 4] = 230
    return video


def write_frames(folder: Path, video: np.ndarray, ext: str = ".tif", start: int = 1) -> Path:
    """One image per frame, named ``{start:03d}{ext}`` onwards (UCSD: 001.tif, preprocessed: 000.jpg)."""
    folder.mkdir(parents=True, exist_ok=True)
    for t, frame in enumerate(video, start):
        if not cv2.imwrite(str(folder / f"{t:03d}{ext}"), frame):
            raise OSError(f"cv2 cannot write {folder / f'{t:03d}{ext}'}")
    return folder


def write_avi(path: Path, video: np.ndarray, fps: int = 25, fourcc: str = "MJPG") -> Path:
    """A video file of grey (T,H,W) or BGR (T,H,W,3) frames (MJPG: available in every OpenCV build)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = video.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
    for frame in video:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR) if frame.ndim == 2 else frame)
    writer.release()
    return path


def _mask(shape: tuple[int, int], abnormal: int) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    mask[1:3, 1:3] = abnormal
    return mask


def ucsd_m_text(gt_ranges: list[Ranges | str]) -> str:
    """An official-style ``UCSDped*.m`` file: one ``gt_frame = [a:b, c:d]`` line per video (``[7]``, ``[]``);
    a str entry is written verbatim between the brackets."""
    lines = ["TestVideoFile = {};", ""]
    for i, ranges in enumerate(gt_ranges, 1):
        items = ranges if isinstance(ranges, str) else ", ".join(f"{a}:{b}" if a != b else f"{a}" for a, b in ranges)
        lines += [f"% Test{i:03d}", f"TestVideoFile{{end+1}}.gt_frame = [{items}];"]
    return "\n".join(lines) + "\n"


def write_ucsd_official(root: Path, videos: list[np.ndarray], gt_ranges: list[Ranges | str] | None,
                        masks: list[np.ndarray] | None = None, m_name: str = "UCSDped2.m") -> Path:
    """``root/Test/TestNNN/001.tif ...``, with ``Test/{m_name}`` when ``gt_ranges`` is given and
    ``Test/TestNNN_gt/001.bmp ...`` pixel masks (one 0/1 label per frame -> blank or marked mask) when ``masks`` is."""
    test = root / "Test"
    for i, video in enumerate(videos, 1):
        write_frames(test / f"Test{i:03d}", video)
        if masks is not None:
            gt = np.stack([_mask(video.shape[1:3], 255 * int(a)) for a in masks[i - 1]])
            write_frames(test / f"Test{i:03d}_gt", gt, ".bmp")
    if gt_ranges is not None:
        (test / m_name).write_text(ucsd_m_text(gt_ranges))
    return root


def gt_cell(gt_ranges: list[Ranges]) -> np.ndarray:
    """The ``gt`` variable of ped2.mat: a 1xN cell, each a 2xK uint8 array of [start; end] rows."""
    cell = np.empty((1, len(gt_ranges)), dtype=object)
    for i, ranges in enumerate(gt_ranges):
        cell[0, i] = np.array(ranges, np.uint8).reshape(-1, 2).T
    return cell


def write_ucsd_preprocessed(root: Path, videos: list[np.ndarray], gt_ranges: list[Ranges],
                            mat_name: str = "ped2.mat") -> Path:
    """``root/testing/frames/01/000.jpg ...`` (grey as 3 channels, like the real copy) and ``root/{mat_name}``."""
    for i, video in enumerate(videos, 1):
        write_frames(root / "testing" / "frames" / f"{i:02d}", np.stack([cv2.merge([f] * 3) for f in video]), ".jpg", 0)
    scipy.io.savemat(str(root / mat_name), {"gt": gt_cell(gt_ranges)})
    return root


def write_avenue(root: Path, videos: dict[str, np.ndarray], mask_labels: dict[int, np.ndarray] | None = None,
                 npy_labels: np.ndarray | None = None, as_frames: bool = False) -> Path:
    """Avenue test split: ``testing_videos/{name}.avi`` (or ``testing/frames/{name}/0000.jpg`` when ``as_frames``),
    ``testing_label_mask/{N}_label.mat`` (``volLabel``: 1xT cell of masks) for each ``mask_labels`` entry, and
    ``frame_labels_avenue.npy`` (the labels of all videos concatenated) when ``npy_labels`` is given."""
    for name, video in videos.items():
        if as_frames:
            write_frames(root / "testing" / "frames" / name, video, ".jpg", 0)
        else:
            write_avi(root / "testing_videos" / f"{name}.avi", video)
    shape = next(iter(videos.values())).shape[1:3]
    for number, labels in (mask_labels or {}).items():
        vol = np.empty((1, len(labels)), dtype=object)
        for t, abnormal in enumerate(labels):
            vol[0, t] = _mask(shape, int(abnormal))
        (root / "testing_label_mask").mkdir(parents=True, exist_ok=True)
        scipy.io.savemat(str(root / "testing_label_mask" / f"{number}_label.mat"), {"volLabel": vol})
    if npy_labels is not None:
        np.save(root / "frame_labels_avenue.npy", np.asarray(npy_labels, np.int8)[None])  # (1, N) like the real file
    return root
