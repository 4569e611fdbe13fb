"""The one training loop shared by all deep methods: device, seeding, batching, progress bar, checkpoints.

A method supplies a model and a ``loss_fn(model, batch) -> scalar tensor``; the loop does the rest. A checkpoint
is written (atomically) after every epoch when ``checkpoint`` is given, and an interrupted run resumes from it.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .atomic import atomic_path
from .data import Batch, SampleSource, iterate_batches, to_device


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; return a torch generator for shuffling."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


@dataclass
class TrainSettings:
    """Optimisation settings of a training run (the defaults are PyTorch's Adam defaults)."""

    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "adam"  # adam | sgd
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9  # sgd only
    eps: float = 1e-8  # adam only
    num_workers: int = 0  # DataLoader workers, Dataset sources only
    progress: bool = True


def make_optimizer(params, settings: TrainSettings) -> torch.optim.Optimizer:
    if settings.optimizer == "adam":
        return torch.optim.Adam(params, lr=settings.lr, eps=settings.eps, weight_decay=settings.weight_decay)
    if settings.optimizer == "sgd":
        return torch.optim.SGD(params, lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay)
    raise ValueError(f"unknown optimizer {settings.optimizer!r} (expected 'adam' or 'sgd')")


def train(
    model: nn.Module,
    loss_fn: Callable[[nn.Module, Batch], torch.Tensor],
    data: SampleSource,
    settings: TrainSettings,
    *,
    device: torch.device,
    generator: torch.Generator,
    checkpoint: Path | None = None,
    desc: str = "train",
) -> list[float]:
    """Train ``model`` in place; return the mean loss of each epoch."""
    model.to(device)
    optimizer = make_optimizer(model.parameters(), settings)
    history: list[float] = []
    start_epoch = 0
    if checkpoint is not None and checkpoint.exists():
        state = torch.load(checkpoint, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        history, start_epoch = state["history"], state["epoch"]
    bar = tqdm(total=settings.epochs, initial=start_epoch, desc=desc, unit="epoch", disable=not settings.progress)
    for epoch in range(start_epoch, settings.epochs):
        model.train()
        total, count = 0.0, 0
        for batch in iterate_batches(data, settings.batch_size, shuffle=True, generator=generator,
                                     num_workers=settings.num_workers):
            batch = to_device(batch, device)
            loss = loss_fn(model, batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            n = len(next(iter(batch.values())))
            total += float(loss.detach()) * n
            count += n
        history.append(total / max(count, 1))
        bar.set_postfix(loss=f"{history[-1]:.4g}")
        bar.update(1)
        if checkpoint is not None:
            checkpoint.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(checkpoint) as tmp:
                torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                            "generator": generator.get_state(), "history": history, "epoch": epoch + 1}, tmp)
    bar.close()
    return history


@torch.no_grad()
def predict(
    fn: Callable[[Batch], torch.Tensor],
    data: SampleSource,
    *,
    batch_size: int,
    device: torch.device,
    progress: bool = False,
    desc: str = "score",
) -> np.ndarray:
    """Apply ``fn`` to every batch in order (no shuffling) and concatenate the results as numpy."""
    outputs = []
    batches = iterate_batches(data, batch_size)
    for batch in tqdm(batches, total=-(-len(data) // batch_size), desc=desc, disable=not progress):
        outputs.append(fn(to_device(batch, device)).cpu())
    return torch.cat(outputs).numpy()
