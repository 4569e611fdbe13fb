"""Fit a small GenerativeE3Outlier on scikit-learn's digits and save its scores: the same run on 1 or N processes.

    python tools/ddp_scores.py OUT.npy
    torchrun --standalone --nproc_per_node=2 tools/ddp_scores.py OUT.npy

Data: the 8x8 digits zero-padded to 16x16 in [-1, 1]; the 0s are the inliers, with other digits as outliers, 257
images in all (8 batches of 32, then one sample: a final batch smaller than the number of ranks). Rank 0 writes
the decision scores (N,) to OUT.npy, and the outlier flags beside it (OUT.labels.npy); all ranks must agree on them.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from image_od.data.benchmarks import load_digits
from image_od.data.protocol import contaminated_set, to_model_input
from image_od.data.samples import ArrayData
from image_od.e3outlier.generative import GenerativeE3Outlier
from image_od.engine import distributed
from image_od.engine.training import TrainSettings
from image_od.operations.generative import image_tasks

N_IMAGES = 257


def digits_set() -> tuple[ArrayData, np.ndarray]:
    """Inlier digit 0 plus outliers from the other digits, ``N_IMAGES`` in all, as 1x16x16 images in [-1, 1]."""
    images, labels = load_digits().merged()
    data = contaminated_set(images, labels, inlier_class=0, ratio=0.35, seed=0, max_size=N_IMAGES)
    return ArrayData({"image": to_model_input(data.images, size=16)}), data.is_outlier


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="where rank 0 writes the scores (.npy)")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda (under torchrun: each rank's GPU)")
    args = parser.parse_args()
    if distributed.launched():
        torch.set_num_threads(1)  # the processes share the machine's cores
    data, is_outlier = digits_set()
    model = GenerativeE3Outlier(image_tasks(), widths=(8, 16), device=args.device, seed=0,
                                train_settings=TrainSettings(epochs=args.epochs, batch_size=32, progress=False))
    scores = model.fit(data).decision_scores_
    if not distributed.same_on_all_ranks(torch.from_numpy(scores)):
        raise RuntimeError("the ranks ended with different models")
    if distributed.is_main():
        np.save(args.out, scores)
        np.save(args.out.with_suffix(".labels.npy"), is_outlier)
    distributed.shutdown()


if __name__ == "__main__":
    main()
