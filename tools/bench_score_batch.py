"""How many images one forward pass should hold when scoring: throughput of the project's networks against batch size.

    OMP_NUM_THREADS=2 python tools/bench_score_batch.py --out runs/bench_score_batch
    OMP_NUM_THREADS=2 python tools/bench_score_batch.py --out runs/bench_score_batch --cell fashion-mnist:0

Every detector scores in batches of ``image_od.engine.training.score_batch_size(device)`` images. This measures, on this
machine, images per second of each network in eval mode without gradients (the best of ``--repeats`` passes over
``--images`` random inputs, in the memory format and precision its detector uses) for each batch size, side by side
in one process. ``--cell DATASET:CLASS`` also fits the ``cpu`` profile's discriminative E3Outlier on that class's
contaminated set (rho 0.1, seed 0) once and times its scoring at the former batch (1,024) and at the current one,
with the AUROC of both (they must agree: eval-mode batch norm makes every image's score independent of its batch).
Rows go to OUT/bench_score_batch.csv and OUT/bench_score_batch.json (with env.json's machine facts) and print as a
markdown table.
"""
from __future__ import annotations

import argparse
import csv
import json
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from image_od.baselines.deep_svdd import DeepSVDDNet
from image_od.engine import training
from image_od.engine.precision import resolve_precision
from image_od.networks.backbones import make_backbone
from image_od.networks.generators import ConvAutoencoder, DeepCAE
from image_od.related.transfer import ResNet26
from pipelines.run_env import environment

BATCHES = (16, 32, 64, 128, 256, 512, 1024)
FORMER_BATCH = 1024  # discriminative and contrastive E3Outlier scored in batches of 1,024 before 2026-12-03


def networks() -> dict[str, tuple[torch.nn.Module, int, bool]]:
    """name -> (network, input channels, channels_last), at the sizes of the ``cpu`` profile."""
    return {
        "wrn-10-1 (discriminative, grey)": (make_backbone("wrn-10-1", 1, 111), 1, True),
        "wrn-10-2 (discriminative, colour)": (make_backbone("wrn-10-2", 3, 111), 3, True),
        "resnet18-16 (contrastive)": (make_backbone("resnet18-16", 3, 4), 3, False),
        "resnet26-16 (adib/adra)": (ResNet26(widths=(16, 32, 64)), 3, True),
        "deep-cae (generative, cae, ...)": (DeepCAE(1, 1), 1, False),
        "deep-svdd": (DeepSVDDNet(1, widths=(16, 32, 64), rep_dim=64), 1, False),
        "conv-cae (video cloze generator)": (ConvAutoencoder(4, 1), 4, False),
    }


@torch.no_grad()
def throughput(net: torch.nn.Module, x: torch.Tensor, batch: int, repeats: int, autocast) -> float:
    """Images per second: the best of ``repeats`` passes over ``x`` in batches of ``batch``."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(0, len(x), batch):
            with autocast():
                net(x[i:i + batch])
        best = min(best, time.perf_counter() - start)
    return len(x) / best


def measure_networks(images: int, repeats: int, precision: str) -> list[dict]:
    device = torch.device("cpu")
    autocast = ((lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if precision == "bf16" else nullcontext)
    rows = []
    for name, (net, channels, channels_last) in networks().items():
        torch.manual_seed(0)
        net = net.eval().to(device)
        x = torch.randn(images, channels, 32, 32)
        if channels_last:
            net, x = net.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
        throughput(net, x[:128], 64, 1, autocast)  # warm-up
        rates = {b: throughput(net, x, b, repeats, autocast) for b in BATCHES}
        best = max(rates.values())
        rows.append({"network": name, "precision": precision,
                     **{f"img_s_{b}": round(r) for b, r in rates.items()},
                     "batch_64_vs_1024": round(rates[64] / rates[1024], 2),
                     "batch_64_vs_best": round(rates[64] / best, 2)})
        print(" ".join(f"{k}={v}" for k, v in rows[-1].items()), flush=True)
    return rows


def measure_cell(spec: str) -> dict:
    """Fit the cpu profile's discriminative E3Outlier on one class once; time its scoring at both batch sizes."""
    from image_od.data.benchmarks import load_dataset
    from image_od.data.protocol import contaminated_set, to_model_input
    from image_od.e3outlier.discriminative import DiscriminativeE3Outlier
    from image_od.metrics import od_metrics
    from pipelines.images.methods import load_profile

    dataset, cls = spec.rsplit(":", 1)
    images, labels = load_dataset(dataset, None).merged()
    s = contaminated_set(images, labels, int(cls), 0.1, 0)
    x = to_model_input(s.images)
    settings = load_profile("cpu").settings("discriminative", colour=x.shape[1] == 3)
    model = DiscriminativeE3Outlier(**{**settings, "seed": 0, "progress": False})
    start = time.perf_counter()
    model.fit(x)
    row = {"cell": spec, "n": len(x), "fit_s": round(time.perf_counter() - start, 1)}
    current = training.CPU_SCORE_BATCH
    try:
        for batch in (FORMER_BATCH, current):
            training.CPU_SCORE_BATCH = batch  # what score_batch_size gives on a CPU
            start = time.perf_counter()
            scores = model.scores(x, model.available_scores)
            row[f"score_s_{batch}"] = round(time.perf_counter() - start, 1)
            row[f"ne_auroc_{batch}"] = round(100 * od_metrics(s.is_outlier, scores["ne"])["auroc"], 2)
            row[f"ssd_if_auroc_{batch}"] = round(100 * od_metrics(s.is_outlier, scores["ssd_if"])["auroc"], 2)
    finally:
        training.CPU_SCORE_BATCH = current
    print(" ".join(f"{k}={v}" for k, v in row.items()), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--images", type=int, default=2048, help="random inputs per measurement (default 2048)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cell", action="append", default=[], metavar="DATASET:CLASS",
                        help="also time the cpu profile's scoring on this cell at both batch sizes (repeatable)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    precisions = ["fp32"] + (["bf16"] if resolve_precision("auto", torch.device("cpu")) == "bf16" else [])
    rows = [r for p in precisions for r in measure_networks(args.images, args.repeats, p)]
    cells = [measure_cell(spec) for spec in args.cell]
    with (args.out / "bench_score_batch.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    env = environment(0, "cpu")
    (args.out / "bench_score_batch.json").write_text(json.dumps({"env": env, "networks": rows, "cells": cells},
                                                                 indent=2))
    print(f"\nCPU: {env['cpu']['model']} ({env['cpu']['torch_capability']}), {env['torch_threads']} threads, "
          f"reference workload {env['reference_workload_s']} s\n")
    print("| network | precision | " + " | ".join(str(b) for b in BATCHES) + " | 64 / 1024 |")
    print("|---|---|" + "---|" * (len(BATCHES) + 1))
    for r in rows:
        print(f"| {r['network']} | {r['precision']} | " + " | ".join(str(r[f'img_s_{b}']) for b in BATCHES)
              + f" | {r['batch_64_vs_1024']} |")
    for c in cells:
        print(f"\n{c['cell']}: fit {c['fit_s']} s; scoring {c[f'score_s_{FORMER_BATCH}']} s at {FORMER_BATCH}, "
              f"{c[f'score_s_{training.CPU_SCORE_BATCH}']} s at {training.CPU_SCORE_BATCH}; NE AUROC "
              f"{c[f'ne_auroc_{FORMER_BATCH}']} / {c[f'ne_auroc_{training.CPU_SCORE_BATCH}']}")


if __name__ == "__main__":
    main()
