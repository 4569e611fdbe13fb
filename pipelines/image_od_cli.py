"""``image-od``: outlier scores for a set of unlabeled images with generative E3Outlier.

The images are both the training and the scored data (transductive): the detector learns to restore each image
from its flipped, grey, rotated views (supplement Sec. 5) and scores each image by its restoration error,
higher = more anomalous.
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

from image_od.atomic import atomic_path, write_json
from image_od.data import ArrayData
from image_od.generative import GenerativeE3Outlier
from image_od.images import load_images
from image_od.operations import image_tasks
from image_od.protocol import to_model_input
from image_od.training import TrainSettings, resolve_device

from .run_env import environment


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="image-od", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("score", help="score every image of a folder or .npy array",
                       description="Fit generative E3Outlier on the images and write one score per image.")
    p.add_argument("--images", required=True, help="folder of images (searched recursively) or a uint8 .npy array")
    p.add_argument("--out", required=True, help="output folder: scores.csv, env.json, settings.json")
    p.add_argument("--size", type=int, default=32, help="smaller images are zero-padded (as the paper pads 28x28 to 32x32), larger ones resized to SIZE x SIZE (default 32)")
    p.add_argument("--grey", action="store_true", help="treat the images as grey")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--widths", type=int, nargs="+", default=[32, 64, 128])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        images, names = load_images(args.images, args.size, args.grey)
    except (ValueError, FileNotFoundError) as err:
        print(f"image-od {args.command}: error: {err}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "settings.json", {k: v for k, v in vars(args).items() if k != "command"})
    write_json(out / "env.json", environment(args.seed, str(resolve_device(args.device))))
    model = GenerativeE3Outlier(image_tasks(), widths=args.widths, seed=args.seed, device=args.device,
                                train_settings=TrainSettings(epochs=args.epochs, batch_size=args.batch_size,
                                                             progress=not args.quiet))
    scores = model.fit_score(ArrayData({"image": to_model_input(images, args.size)}))
    with atomic_path(out / "scores.csv") as tmp, tmp.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "score", "rank"])
        ranks = np.argsort(np.argsort(-scores))
        for name, s, r in zip(names, scores, ranks):
            w.writerow([name, f"{s:.6g}", int(r) + 1])
    top = np.argsort(-scores)[:5]
    print(f"scored {len(names)} images; most anomalous: " + ", ".join(names[i] for i in top))
    print(f"results: {out / 'scores.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
