"""A UCSD (preprocessed layout) or Avenue dataset at another frame size, for a resolution transfer check.

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
"""
from __future__ import annotations

import argparse
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


def resize_frames(root: Path, out: Path, size: tuple[int, int]) -> tuple[int, tuple[int, int]]:
    """Every ``*/frames/**/*.jpg`` of ``root`` resized to ``size`` (width, height) under ``out``; returns the count
    and the first frame's own (height, width)."""
    frames = sorted(root.glob("*/frames/**/*.jpg"))
    own = None
    for path in tqdm(frames, desc="frames", unit="frame"):
        image = cv2.imread(str(path))
        if image is None:
            raise SystemExit(f"{path}: not a readable image")
        own = own or image.shape[:2]
        target = out / path.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(target), resized(image, size), [cv2.IMWRITE_JPEG_QUALITY, 95])
    return len(frames), own


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


def scale_box_file(path: Path, target: Path, factor: tuple[float, float], size: tuple[int, int]) -> None:
    """A box file (``boxes_xyxy``, ``global_frame``, ``video_lengths``) with its boxes scaled to the new frame size."""
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    boxes = arrays["boxes_xyxy"].astype(np.float64) * np.array([factor[0], factor[1]] * 2)
    arrays["boxes_xyxy"] = np.clip(boxes, 0, [size[0] - 1, size[1] - 1] * 2).astype(np.float32)
    np.savez(target, **arrays)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, required=True,
                        help="UCSD root (training/frames, testing/frames, *.mat) or Avenue root (testing_videos, ...)")
    parser.add_argument("--size", type=int, nargs=2, required=True, metavar=("WIDTH", "HEIGHT"))
    parser.add_argument("--vec", type=Path, help="UCSD: folder of precomputed box files (*.npz) to scale into OUT/vec")
    parser.add_argument("--out", type=Path, required=True, help="new dataset folder (must not exist)")
    args = parser.parse_args(argv)
    size = tuple(args.size)
    if args.out.exists():
        raise SystemExit(f"{args.out}: already exists")
    avenue = (args.root / "testing_videos").is_dir()
    if not avenue and not any(args.root.glob("*/frames")):
        raise SystemExit(f"{args.root}: neither UCSD's */frames/ nor Avenue's testing_videos/")
    partial = args.out.with_name(args.out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    count, own = (resize_videos if avenue else resize_frames)(args.root, partial, size)
    if not count:
        shutil.rmtree(partial, ignore_errors=True)
        raise SystemExit(f"{args.root}: no frames read")
    for labels in [*args.root.glob("*.mat"), *args.root.glob("*.npy")]:
        shutil.copy(labels, partial / labels.name)
    if (args.root / "testing_label_mask").is_dir():
        shutil.copytree(args.root / "testing_label_mask", partial / "testing_label_mask")
    factor = (size[0] / own[1], size[1] / own[0])
    if args.vec is not None:
        (partial / "vec").mkdir()
        for path in sorted(args.vec.glob("*.npz")):
            scale_box_file(path, partial / "vec" / path.name, factor, size)
    partial.rename(args.out)
    print(f"{count} frames at {size[0]}x{size[1]} (scale {factor[0]:.3f} x {factor[1]:.3f}) in {args.out}")


if __name__ == "__main__":
    main()
