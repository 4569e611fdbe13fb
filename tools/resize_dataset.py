"""A UCSD (preprocessed layout) or Avenue dataset at another frame size, or seen in perspective, for a transfer check.

UCSD Ped1 (238x158) is not on the development machine, but its frame size can be: Ped2 shrunk to 238x158 keeps its
frame labels and its precomputed boxes (scaled), so the defaults, chosen at Ped2's 360x240 and Avenue's 640x360, are
measured at a resolution they never saw (docs/BENCHMARKS_LOG.md, "Ped2 at Ped1's frame size").

  python tools/resize_dataset.py --root ../shared/data/ucsd_ped2 --vec ../shared/data/ucsd_ped2_vec_boxes \
      --size 238 158 --out /tmp/ped2_238
  vad run --config configs/ucsd_ped1.yaml --root /tmp/ped2_238 --boxes /tmp/ped2_238/vec/ped2_test_boxes.npz \
      --out runs/ped2_238_vec
  python tools/resize_dataset.py --root ../shared/data/avenue_partial --size 320 180 --out /tmp/avenue_320

UCSD: every ``*/frames/**/*.jpg`` is resized (shrunk with area averaging, enlarged bicubic) and written as JPEG
(quality 95), the label file (``*.mat``) copied. Avenue: every ``testing_videos/*.avi`` and ``training_videos/*.avi``
is re-encoded (MJPG, 25 fps) from frames resized the same way; the label files (``frame_labels_avenue.npy``,
``testing_label_mask/``) are copied as they are, so the frame labels stay right (a frame is abnormal if any mask
pixel is set) while the masks keep their own size, and the evaluation then skips RBDC/TBDC, saying why. The copy
is built beside OUT and renamed into place when complete.

``--perspective RATIO`` (UCSD) warps every frame, after any resize, so that the scene recedes to the left (or, with
``--far-side top``, to the top): the local scale grows linearly along the output's columns, from 1/RATIO at the left
edge to 1 at the right (the same in both directions, about the middle row), so objects on the left are RATIO times
smaller and slower in pixels, as for a camera looking along a walkway (UCSD Ped1, whose far people are about a third
of its near ones) instead of across it (Ped2). The frames get narrower (Ped2's 360 columns become 218 at RATIO 3;
with the far side at the top, its 240 rows become 146). The frame labels stay right (nothing leaves the frame); the
precomputed boxes are warped with the frames (the box around each warped box's outline).

  python tools/resize_dataset.py --root ../shared/data/ucsd_ped2 --vec ../shared/data/ucsd_ped2_vec_boxes \
      --perspective 3 --out /tmp/ped2_persp
"""
from __future__ import annotations

import argparse
import glob
import shutil
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm


def resized(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``image`` at ``size`` (width, height): area averaging when it shrinks, bicubic when it enlarges (area
    interpolation enlarges by repeating pixels, which no camera does)."""
    shrink = size[0] * size[1] <= image.shape[0] * image.shape[1]
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)


class Perspective:
    """A frame of ``size`` (width, height) seen in perspective, its ``far`` side (left or top) receding: the local
    scale changes along that axis only, and objects shrink about the frame's middle line. Far side left: at output
    column x' the local scale is s(x') = s0 +
    (1 - s0) x' / W', s0 = 1 / ``ratio``, in both directions about the middle row, so a source column x lands at
    x' = W' (s - s0) / (1 - s0) with s = s0 exp(x (1 - s0) / W'), and W' = W (1 - s0) / ln(ratio) keeps every
    source column; rows: y' = c + (y - c) s. Far side top: the same with rows and columns exchanged."""

    def __init__(self, size: tuple[int, int], ratio: float, far: str = "left"):
        if ratio <= 1:
            raise SystemExit(f"--perspective {ratio}: the near/far size ratio must exceed 1")
        if far not in ("left", "top"):
            raise SystemExit(f"--far-side {far!r}: left or top")
        self.transposed = far == "top"
        along, across = (size[1], size[0]) if self.transposed else size
        self.s0 = 1.0 / ratio
        self.width = along * (1 - self.s0) / np.log(ratio)
        self.centre = (across - 1) / 2
        length = int(round(self.width))
        self.size = (across, length) if self.transposed else (length, across)
        xs = np.arange(length, dtype=np.float64)
        scale = self.s0 + (1 - self.s0) * xs / self.width
        ys = np.arange(across, dtype=np.float64)[:, None]
        map_x = np.broadcast_to(self.width / (1 - self.s0) * np.log(scale / self.s0), (across, length))
        map_y = self.centre + (ys - self.centre) / scale
        if self.transposed:  # output (row, col) = (x', y'): the source row comes from map_x, the column from map_y
            map_x, map_y = map_y.T, map_x.T
        self.map_x, self.map_y = np.ascontiguousarray(map_x, np.float32), np.ascontiguousarray(map_y, np.float32)

    def image(self, image: np.ndarray) -> np.ndarray:
        """The frame warped (bilinear; outside the source: black)."""
        return cv2.remap(image, self.map_x, self.map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)

    def boxes(self, boxes: np.ndarray) -> np.ndarray:
        """(N, 4) x1 y1 x2 y2 boxes -> the boxes around their warped outlines (the corners are the extremes)."""
        boxes = boxes[:, [1, 0, 3, 2]] if self.transposed else boxes
        xs, ys = boxes[:, [0, 2, 0, 2]], boxes[:, [1, 1, 3, 3]]
        scale = self.s0 * np.exp(xs * (1 - self.s0) / self.width)
        x = self.width * (scale - self.s0) / (1 - self.s0)
        y = self.centre + (ys - self.centre) * scale
        out = np.column_stack([x.min(1), y.min(1), x.max(1), y.max(1)])
        return out[:, [1, 0, 3, 2]] if self.transposed else out


def resize_frames(root: Path, out: Path, size: tuple[int, int] | None, perspective: float | None = None,
                  far: str = "left") -> tuple[int, tuple[int, int], Perspective | None]:
    """Every ``*/frames/**/*.jpg`` of ``root`` resized to ``size`` (width, height; None: as it is), then seen in
    ``perspective`` if given (``far`` side left or top), under ``out``; returns the count, the first frame's own
    (height, width) and the perspective warp used."""
    pattern = str(Path(glob.escape(str(root))) / "*" / "frames" / "**" / "*.jpg")
    frames = sorted(map(Path, glob.glob(pattern, recursive=True)))  # glob.glob follows linked folders too
    own, warp = None, None
    for path in tqdm(frames, desc="frames", unit="frame"):
        image = cv2.imread(str(path))
        if image is None:
            raise SystemExit(f"{path}: not a readable image")
        own = own or image.shape[:2]
        image = image if size is None else resized(image, size)
        if perspective is not None:
            warp = warp or Perspective((image.shape[1], image.shape[0]), perspective, far)
            image = warp.image(image)
        target = out / path.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(target), image, [cv2.IMWRITE_JPEG_QUALITY, 95])
    return len(frames), own, warp


def resize_videos(root: Path, out: Path, size: tuple[int, int]) -> tuple[int, tuple[int, int]]:
    """Every Avenue ``testing_videos/*.avi`` and ``training_videos/*.avi`` re-encoded at ``size``; returns the frame
    count and the first frame's own (height, width)."""
    count, own = 0, None
    for path in tqdm(sorted(root.glob("t*_videos/*.avi")), desc="videos", unit="video"):
        (out / path.parent.name).mkdir(parents=True, exist_ok=True)
        capture = cv2.VideoCapture(str(path))
        writer = cv2.VideoWriter(str(out / path.parent.name / path.name), cv2.VideoWriter_fourcc(*"MJPG"), 25, size)
        try:
            while True:
                ok, frame = capture.read()
                if not ok:
                    break
                own = own or frame.shape[:2]
                writer.write(resized(frame, size))
                count += 1
        finally:
            capture.release()
            writer.release()
    return count, own


def scale_box_file(path: Path, target: Path, factor: tuple[float, float], size: tuple[int, int],
                   warp: Perspective | None = None) -> None:
    """A box file (``boxes_xyxy``, ``global_frame``, ``video_lengths``) with its boxes scaled to the new frame size
    (``size``, before any ``warp``), then warped."""
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    boxes = arrays["boxes_xyxy"].astype(np.float64) * np.array([factor[0], factor[1]] * 2)
    boxes = np.clip(boxes, 0, [size[0] - 1, size[1] - 1] * 2)
    if warp is not None:
        boxes = np.clip(warp.boxes(boxes), 0, [warp.size[0] - 1, warp.size[1] - 1] * 2)
    arrays["boxes_xyxy"] = boxes.astype(np.float32)
    np.savez(target, **arrays)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, required=True,
                        help="UCSD root (training/frames, testing/frames, *.mat) or Avenue root (testing_videos, ...)")
    parser.add_argument("--size", type=int, nargs=2, metavar=("WIDTH", "HEIGHT"),
                        help="new frame size (default: as it is)")
    parser.add_argument("--perspective", type=float, metavar="RATIO",
                        help="UCSD: warp the frames so that objects on the far side are RATIO times smaller than on "
                             "the near one")
    parser.add_argument("--far-side", choices=("left", "top"), default="left",
                        help="--perspective: the side that recedes (top: as UCSD Ped1's walkway)")
    parser.add_argument("--vec", type=Path, help="UCSD: folder of precomputed box files (*.npz) to scale into OUT/vec")
    parser.add_argument("--out", type=Path, required=True, help="new dataset folder (must not exist)")
    args = parser.parse_args(argv)
    size = None if args.size is None else tuple(args.size)
    if size is None and args.perspective is None:
        raise SystemExit("nothing to do: give --size, --perspective or both")
    if args.out.exists():
        raise SystemExit(f"{args.out}: already exists")
    avenue = (args.root / "testing_videos").is_dir()
    if not avenue and not any(args.root.glob("*/frames")):
        raise SystemExit(f"{args.root}: neither UCSD's */frames/ nor Avenue's testing_videos/")
    if avenue and (size is None or args.perspective is not None):
        raise SystemExit("Avenue: give --size (--perspective is for UCSD's frame folders)")
    partial = args.out.with_name(args.out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    if avenue:
        (count, own), warp = resize_videos(args.root, partial, size), None
    else:
        count, own, warp = resize_frames(args.root, partial, size, args.perspective, args.far_side)
    if not count:
        shutil.rmtree(partial, ignore_errors=True)
        raise SystemExit(f"{args.root}: no frames read")
    for labels in [*args.root.glob("*.mat"), *args.root.glob("*.npy")]:
        shutil.copy(labels, partial / labels.name)
    if (args.root / "testing_label_mask").is_dir():
        shutil.copytree(args.root / "testing_label_mask", partial / "testing_label_mask")
    size = size or (own[1], own[0])
    factor = (size[0] / own[1], size[1] / own[0])
    if args.vec is not None:
        (partial / "vec").mkdir()
        for path in sorted(args.vec.glob("*.npz")):
            scale_box_file(path, partial / "vec" / path.name, factor, size, warp)
    partial.rename(args.out)
    final = warp.size if warp else size
    seen = f", in perspective {args.perspective:g}:1" if warp else ""
    print(f"{count} frames at {final[0]}x{final[1]} (scale {factor[0]:.3f} x {factor[1]:.3f}{seen}) in {args.out}")


if __name__ == "__main__":
    main()
