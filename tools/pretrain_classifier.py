"""Pre-train the ResNet26 of ADIB/ADRA by supervised classification: the project's own theta0 (ImageNet weights
cannot be downloaded here). Writes a state_dict (atomically) and a JSON sidecar ``OUT.json`` that says what it was
trained on, which ``ADIB``/``ADRA`` read back as ``pretraining_``.

  OMP_NUM_THREADS=2 python tools/pretrain_classifier.py --dataset cifar10 --root ../shared/data/cifar10 --grey \\
      --widths 16,32,64 --epochs 15 --out runs/theta0/cifar10-grey-w16.pt

``--task rotation`` needs no labels: every image appears under the four rotations by 0/90/180/270 degrees and the
network learns which one it sees (Gidaris et al., 2018), so a theta0 can be made from images whose classes must
stay unseen (for example CIFAR-10 itself, whose other classes are the anomalies).

Only the chosen split is read (``--split train`` by default), so the test split stays unseen for the anomaly
detection evaluation. ``--classes`` keeps some classes (names or indices, comma-separated), ``--exclude-class``
drops some (repeatable or comma-separated), so that the pre-training corpus can be kept disjoint from a normal
class. ``--grey`` converts colour images to grey (ITU-R 601 luma) first, for transfer to grey datasets; the network
always takes 3 channels (grey replicated). Images are zero-padded to 32x32 and scaled to [-1, 1]
(``protocol.to_model_input``), as the detectors' inputs.
"""
from __future__ import annotations

import argparse
import hashlib
import sys
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np
import torch

from image_od.data.benchmarks import ImageDatasetError, load_dataset
from image_od.data.protocol import to_model_input
from image_od.e3outlier.contrastive import N_ROTATIONS, rotate_batch
from image_od.files.atomic import atomic_path, write_json
from image_od.related.transfer import GREY_WEIGHTS, pretrain_resnet26, sidecar_path

DATASETS = ("cifar10", "cifar100", "fashion-mnist", "mnist", "svhn", "digits")
SPLITS = ("train", "test", "all")
TASKS = ("classes", "rotation")


def _class_list(text: list[str] | None, names: list[str], option: str) -> list[int]:
    """Class indices from comma-separated names or indices (repeatable option)."""
    out: list[int] = []
    for item in ",".join(text or []).split(","):
        item = item.strip()
        if not item:
            continue
        if item.isdigit() and int(item) < len(names):
            out.append(int(item))
        elif item in names:
            out.append(names.index(item))
        else:
            raise SystemExit(f"{option}: unknown class {item!r}; classes: "
                             + ", ".join(f"{i}={n}" for i, n in enumerate(names)))
    return sorted(set(out))


def _ints(text: str, option: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise SystemExit(f"{option}: expected comma-separated integers, got {text!r}") from None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--dataset", required=True, choices=DATASETS)
    p.add_argument("--root", help="folder of the dataset's files (cifar10: ../shared/data/cifar10; fashion-mnist: "
                                  "the Debian package's by default)")
    p.add_argument("--split", default="train", choices=SPLITS, help="which split to train on (default: train)")
    p.add_argument("--classes", action="append", help="classes to keep, names or indices, comma-separated "
                                                      "(default: all)")
    p.add_argument("--exclude-class", action="append", dest="exclude",
                   help="classes to leave out (names or indices; repeatable or comma-separated)")
    p.add_argument("--max-per-class", type=int, help="at most this many images per class (seeded draw)")
    p.add_argument("--task", default="classes", choices=TASKS,
                   help="classes: classify the dataset's classes (default); rotation: classify the rotation "
                        "(0/90/180/270 degrees) of each image, labels unused")
    p.add_argument("--grey", action="store_true", help="convert colour images to grey (for transfer to grey data)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--widths", default="64,128,256", help="channels of the 3 stages (default 64,128,256 = ResNet26)")
    p.add_argument("--blocks", type=int, default=4, help="blocks per stage (4 = ResNet26)")
    p.add_argument("--no-augment", action="store_true", help="no random crop / flip")
    p.add_argument("--precision", default="auto", choices=("auto", "bf16", "fp32"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--progress", action="store_true")
    p.add_argument("--out", required=True, type=Path, help="weights file to write (plus OUT.json)")
    return p.parse_args(argv)


def select(images: np.ndarray, labels: np.ndarray, keep: list[int], max_per_class: int | None,
           seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The images of the ``keep`` classes (at most ``max_per_class`` each), labels remapped to 0..K-1."""
    rng = np.random.RandomState(seed)
    index = []
    for c in keep:
        idx = np.flatnonzero(labels == c)
        if max_per_class is not None and len(idx) > max_per_class:
            idx = np.sort(rng.choice(idx, max_per_class, replace=False))
        index.append(idx)
    index = np.concatenate(index)
    remap = {c: i for i, c in enumerate(keep)}
    return images[index], np.array([remap[int(c)] for c in labels[index]], np.int64)


def rotation_task(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Self-supervised labels: model inputs ``x`` (N, C, H, W) under rotations by k * 90 degrees (counter-clockwise,
    ``contrastive.rotate_batch``), stacked k-major, with label k."""
    rotated = rotate_batch(torch.from_numpy(np.ascontiguousarray(x)), N_ROTATIONS).numpy()
    return rotated, np.repeat(np.arange(N_ROTATIONS, dtype=np.int64), len(x))


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    widths = _ints(args.widths, "--widths")
    try:
        data = load_dataset(args.dataset, args.root)
    except (ImageDatasetError, FileNotFoundError) as err:
        raise SystemExit(f"cannot load {args.dataset}: {err}") from None
    if args.split == "train":
        images, labels = data.train_images, data.train_labels
    elif args.split == "test":
        images, labels = data.test_images, data.test_labels
    else:
        images, labels = data.merged()
    names = list(data.classes)
    keep = _class_list(args.classes, names, "--classes") if args.classes else list(range(len(names)))
    excluded = _class_list(args.exclude, names, "--exclude-class")
    keep = [c for c in keep if c not in excluded]
    present = set(np.unique(labels).tolist())
    keep = [c for c in keep if c in present]
    least = 2 if args.task == "classes" else 1
    if len(keep) < least:
        raise SystemExit(f"{args.task} pre-training needs at least {least} class{'es' if least > 1 else ''}; left "
                         f"after --classes/--exclude-class: {[names[c] for c in keep]}")
    if args.max_per_class is not None and args.max_per_class < 1:
        raise SystemExit("--max-per-class must be positive")
    images, y = select(images, labels, keep, args.max_per_class, args.seed)
    if args.grey and images.ndim == 4:
        images = np.round(images.astype(np.float32) @ np.array(GREY_WEIGHTS, np.float32)).clip(0, 255) \
            .astype(np.uint8)
    source_counts = Counter(int(v) for v in y)
    x = to_model_input(images, size=32)
    if args.task == "rotation":
        x, y = rotation_task(x)
    print(f"pre-training ResNet26 (widths {widths}, {args.blocks} blocks per stage) on {len(x)} {args.dataset} "
          f"{args.split} images of {len(keep)} classes, task {args.task}, for {args.epochs} epochs", file=sys.stderr,
          flush=True)
    net, stats = pretrain_resnet26(x, y, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                                   weight_decay=args.weight_decay, augment=not args.no_augment, widths=widths,
                                   blocks=args.blocks, precision=args.precision, seed=args.seed, device=args.device,
                                   progress=args.progress)
    out: Path = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        torch.save({k: v.contiguous() for k, v in net.state_dict().items()}, tmp)
    info = {
        "format": "image_od.related.transfer.ResNet26 state_dict (tools/pretrain_classifier.py)",
        "architecture": {"widths": list(widths), "blocks": args.blocks, "in_channels": 3, "n_classes": int(y.max()) + 1,
                         "adapters": False},
        "task": args.task, "dataset": args.dataset, "root": str(args.root) if args.root else None,
        "split": args.split,
        "classes": [names[c] for c in keep], "class_indices": keep,
        "excluded_classes": [names[c] for c in excluded],
        "images_per_class": {names[c]: source_counts[i] for i, c in enumerate(keep)},
        "n_images": sum(source_counts.values()), "n_examples": len(y),
        "grey": bool(args.grey), "input": "to_model_input: zero-padded to 32x32, [-1, 1]; grey replicated to 3",
        "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "momentum": 0.9,
        "weight_decay": args.weight_decay, "schedule": "lr x0.1 at 60% and 80% of the steps",
        "augment": not args.no_augment, "precision": args.precision, "seed": args.seed,
        "final_loss": stats["history"][-1], "train_accuracy": stats["train_accuracy"],
        "seconds": round(stats["seconds"], 1), "torch": torch.__version__,
        "sha256": hashlib.sha256(out.read_bytes()).hexdigest(),
        "written": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    write_json(sidecar_path(out), info)
    print(f"wrote {out} and {sidecar_path(out)}: train accuracy {stats['train_accuracy']:.3f}, "
          f"{stats['seconds']:.0f} s", file=sys.stderr, flush=True)
    return info


if __name__ == "__main__":
    main()
