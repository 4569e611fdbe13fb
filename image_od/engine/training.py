"""The one training loop of the deep methods: device, seeding, batching, learning-rate schedules, precision, memory
format, progress bar, checkpoints and torchrun. Methods that interleave other networks' steps with their own (CSI's
synthetic contrast, MO-GAAL, RSRAE) do so in the loop's hooks.

A method supplies a model and a ``loss_fn(model, batch) -> scalar tensor``; the loop does the rest. A checkpoint
is written (atomically) after every epoch when ``checkpoint`` is given, and an interrupted run resumes from it. The
checkpoint carries a fingerprint of the data, the settings, the model and the seed; a checkpoint whose fingerprint
differs (another dataset's or another configuration's interrupted run) is discarded with a warning. Checkpoints
hold tensors and plain data only and are read with ``weights_only=True``.

Launched with ``torchrun --nproc_per_node=N``, the same loop trains with DistributedDataParallel (see
:mod:`image_od.engine.distributed`): each step's global batch is the one a single process would draw, split between the
ranks, so results differ from a single process only through per-rank BatchNorm statistics and summation order. With
``TrainSettings.data_parallel`` off, each rank trains its model alone (sharded work: every rank its own models).
"""
from __future__ import annotations

import copy
import hashlib
import math
import random
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from image_od.data.samples import (
    ArrayData,
    Batch,
    SampleSource,
    iterate_batches,
    load_batches,
    shard_batches,
    split_batches,
    to_device,
)
from image_od.engine import distributed
from image_od.engine.precision import autocast
from image_od.files.atomic import atomic_path
from image_od.files.safe_io import UnreadableFileError, load_tensors


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else the CPU; under torchrun an unnumbered CUDA device is ``LOCAL_RANK``'s."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and device.index is None and distributed.shard_count() > 1:
        return torch.device("cuda", distributed.local_rank())
    return device


CPU_SCORE_BATCH = 64  # images per forward pass when scoring on a CPU (measured: docs/BENCHMARKS.md#scoring-batch)
ACCELERATOR_SCORE_BATCH = 1024


def score_batch_size(device: torch.device) -> int:
    """Images per forward pass when scoring (no gradients). On a CPU a small batch keeps a convolutional net's
    activations in cache: for the project's 32x32 networks 64 images run 1.2-2.2x faster than 1,024. An accelerator
    wants large batches."""
    return CPU_SCORE_BATCH if device.type == "cpu" else ACCELERATOR_SCORE_BATCH


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
    # constant | cosine (per step from lr to 0) | warmup_cosine (per epoch) | step (x gamma at each milestone)
    lr_schedule: str = "constant"
    warmup_epochs: int = 0  # warmup_cosine: linear warm-up epochs before the cosine decay
    milestones: tuple[float, ...] = (0.6, 0.8)  # step: fractions of all training steps where the rate drops
    gamma: float = 0.1  # step: the factor of each drop
    drop_last: bool = False  # leave out the samples after an epoch's last full batch (if it has one)
    num_workers: int = 0  # DataLoader workers, Dataset sources only
    progress: bool = True
    precision: str = "fp32"  # fp32 | bf16: autocast of the loss's forward ("auto": precision.resolve_precision)
    channels_last: bool = False  # the model's weights in channels_last (oneDNN's faster convolutions on a CPU)
    fused: bool = False  # the optimizer's fused kernel (one pass over the parameters; last-bit float differences)
    # False: every rank computes whole batches under torchrun (a loss over the batch's pairs, e.g. contrastive
    # negatives, must not be split); True: each global batch is split between the ranks
    split_batches: bool = True
    # under torchrun, the launcher's ranks train this one model together (each global batch shared between them);
    # False: this process trains it alone (sharded work, where each rank fits its own models)
    data_parallel: bool = True


LR_SCHEDULES = ("constant", "cosine", "warmup_cosine", "step")


def warmup_cosine(epoch: int, epochs: int, warmup: int) -> float:
    """Learning-rate factor of 0-based ``epoch``: linear warm-up (epoch+1)/warmup over the first ``warmup``
    epochs, then a cosine decay 0.5 (1 + cos(pi t)), t = (epoch - warmup) / (epochs - warmup)."""
    if epoch < warmup:
        return (epoch + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (epoch - warmup) / max(1, epochs - warmup)))


def step_decay(step: int, total_steps: int, milestones: Sequence[float] = (0.6, 0.8), gamma: float = 0.1) -> float:
    """The lr multiplier of 0-based ``step``: ``gamma`` to the number of milestones m with step >= round(m T)
    (PyTorch's MultiStepLR with milestones given as fractions of all ``total_steps``)."""
    return gamma ** sum(step >= round(m * total_steps) for m in milestones)


def lr_factor(schedule: str, step: int, total_steps: int, milestones: Sequence[float] = (0.6, 0.8),
              gamma: float = 0.1) -> float:
    """Learning-rate factor of 0-based ``step`` of ``total_steps`` for the schedules counted in steps: 1
    (``constant``), the cosine decay of :func:`warmup_cosine` without warm-up (``cosine``: from the full rate to near
    0) or :func:`step_decay` (``step``)."""
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        return warmup_cosine(step, total_steps, 0)
    if schedule == "step":
        return step_decay(step, total_steps, milestones, gamma)
    raise ValueError(f"unknown per-step lr_schedule {schedule!r}; expected constant, cosine or step")


def step_lr(settings: TrainSettings, step: int, steps_per_epoch: int) -> float:
    """The learning rate of 0-based ``step``: ``lr`` times the schedule's factor (``warmup_cosine`` by epoch, the
    others by step)."""
    if settings.lr_schedule == "warmup_cosine":
        return settings.lr * warmup_cosine(step // steps_per_epoch, settings.epochs, settings.warmup_epochs)
    return settings.lr * lr_factor(settings.lr_schedule, step, settings.epochs * steps_per_epoch,
                                   settings.milestones, settings.gamma)


def _kept(n: int, settings: TrainSettings) -> int:
    """How many of an epoch's ``n`` shuffled samples are used: all, or under ``drop_last`` the full batches."""
    return n // settings.batch_size * settings.batch_size if settings.drop_last and n >= settings.batch_size else n


def steps_per_epoch(n: int, settings: TrainSettings) -> int:
    """The optimizer steps of one epoch over ``n`` samples: the batches of :func:`split_batches` (a last batch of
    one merged into the one before), full batches only under ``drop_last``."""
    return len(split_batches(torch.arange(_kept(n, settings)), settings.batch_size))


def lr_history(settings: TrainSettings, n: int) -> list[float]:
    """The learning rate of every step of a run over ``n`` samples, as :func:`train` sets it."""
    per_epoch = steps_per_epoch(n, settings)
    return [step_lr(settings, step, per_epoch) for step in range(settings.epochs * per_epoch)]


def make_optimizer(params, settings: TrainSettings) -> torch.optim.Optimizer:
    fused = True if settings.fused else None
    if settings.optimizer == "adam":
        return torch.optim.Adam(params, lr=settings.lr, eps=settings.eps, weight_decay=settings.weight_decay,
                                fused=fused)
    if settings.optimizer == "sgd":
        return torch.optim.SGD(params, lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay,
                               fused=fused)
    raise ValueError(f"unknown optimizer {settings.optimizer!r} (expected 'adam' or 'sgd')")


class _Objective(nn.Module):
    """The model and its loss as one module: wrapped in DDP, every forward that ``loss_fn`` makes is seen by DDP
    (``loss_fn`` may index the model, e.g. a ModuleDict, which a DDP wrapper does not support)."""

    def __init__(self, model: nn.Module, loss_fn: Callable[[nn.Module, Batch], torch.Tensor]):
        super().__init__()
        self.model, self.loss_fn = model, loss_fn

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.loss_fn(self.model, batch)


def _digest(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
    return h.hexdigest()[:16]


def _tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    """A hash of named tensors' names, dtypes, shapes and values."""
    parts: list[bytes | str] = []
    for name in sorted(tensors):
        t = torch.as_tensor(tensors[name]).detach().cpu().contiguous()
        parts += [f"{name}:{t.dtype}:{tuple(t.shape)}", t.reshape(-1).view(torch.uint8).numpy().tobytes()]
    return _digest(*parts)


def data_fingerprint(data: SampleSource, n_probe: int = 8) -> dict:
    """Number of samples and a hash of ``n_probe`` evenly spaced samples (names, dtypes, shapes, values)."""
    n = len(data)
    index = sorted({int(i) for i in np.linspace(0, n - 1, min(n, n_probe))}) if n else []
    if isinstance(data, ArrayData):
        probe = {k: v[index] for k, v in data.arrays.items()}
    else:  # read from a copy: a Dataset may keep open file handles that must not reach forked DataLoader workers
        reader = copy.copy(data)
        probe = {f"{i}.{k}": v for i in index for k, v in reader[i].items()}
    return {"n": n, "hash": _tensor_digest(probe)}


def model_fingerprint(model: nn.Module) -> dict:
    """The architecture (layers and parameter shapes) and a hash of the initial weights (set by the seed)."""
    state = model.state_dict()
    shapes = ";".join(f"{k}:{tuple(v.shape)}" for k, v in state.items())
    return {"architecture": _digest(repr(model), shapes), "initial_weights": _tensor_digest(state)}


def run_fingerprint(model: nn.Module, data: SampleSource, settings: TrainSettings, generator: torch.Generator,
                    context: dict | None = None) -> dict:
    """What a checkpoint must match to be resumed: data, settings, model, seed and the caller's ``context``."""
    relevant = {k: v for k, v in asdict(settings).items() if k not in ("progress", "num_workers", "data_parallel")}
    return {"data": data_fingerprint(data), "settings": relevant, "model": model_fingerprint(model),
            "seed": _tensor_digest({"generator": generator.get_state()}), "context": context or {}}


def _resumable_state(checkpoint: Path, fingerprint: dict, device: torch.device,
                     ranks: distributed.Ranks) -> dict | None:
    """The checkpoint's state if it was written by this very run; else None, after saying why it is discarded."""
    try:
        state = load_tensors(checkpoint, map_location=device)
    except UnreadableFileError as err:
        _warn(f"discarding training checkpoint: {err}; training starts from scratch", ranks)
        return None
    old = state.get("fingerprint") if isinstance(state, dict) else None
    if old == fingerprint:
        return state
    differs = ["written by an older version (no fingerprint)"] if not isinstance(old, dict) else [
        k for k in fingerprint if old.get(k) != fingerprint[k]]
    _warn(f"discarding training checkpoint {checkpoint}: it belongs to another run (different "
          f"{', '.join(differs)}); training starts from scratch", ranks)
    return None


def _warn(message: str, ranks: distributed.Ranks) -> None:
    if ranks.is_main():
        print(f"warning: {message}", file=sys.stderr, flush=True)


def _epoch_batches(data: SampleSource, settings: TrainSettings, generator: torch.Generator,
                   ranks: distributed.Ranks) -> Iterator[tuple[Batch, float, int]]:
    """This rank's (batch, loss weight, number of samples it counts) for each step of one shuffled epoch."""
    order = torch.randperm(len(data), generator=generator)  # the same on every rank: the generator is shared
    mine = (ranks.rank, ranks.size) if settings.split_batches else (0, 1)
    shards = list(shard_batches(order[:_kept(len(data), settings)], settings.batch_size, *mine))
    batches = load_batches(data, [idx for idx, _ in shards], settings.num_workers)
    return ((batch, weight, len(idx) if weight else 0) for batch, (idx, weight) in zip(batches, shards))


def train(
    model: nn.Module,
    loss_fn: Callable[[nn.Module, Batch], torch.Tensor],
    data: SampleSource,
    settings: TrainSettings,
    *,
    device: torch.device,
    generator: torch.Generator,
    checkpoint: Path | None = None,
    context: dict | None = None,
    desc: str = "train",
    on_epoch_start: Callable[[int], None] | None = None,
    on_epoch_end: Callable[[int], None] | None = None,
    on_step_end: Callable[[int, Batch], None] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
) -> list[float]:
    """Train ``model`` in place; return the mean loss of each epoch.

    ``on_epoch_start(epoch)`` (0-based) runs before every epoch, a resumed one included (for losses whose weighting
    depends on the epoch); ``on_epoch_end(epoch)`` runs after every epoch, before the checkpoint is written;
    ``on_step_end(step, batch)`` after every optimizer step, with the 0-based global step and the batch on the
    device: the place for methods that interleave steps of other networks with their own optimizers (an adversarial
    autoencoder's, GAN generators', a subspace's). The checkpoint holds ``model`` and ``optimizer`` only: such a
    method checkpoints its other networks by making them part of ``model``, or trains without one. Under
    torchrun, ``loss_fn`` must return a mean over the batch's samples and every rank must pass an identically seeded
    ``generator``; rank 0 alone shows progress and writes the checkpoint (on a file system all ranks read), the
    history is the global mean loss, and all ranks end with the same model.

    ``optimizer``: one built over ``model``'s parameters by the caller (e.g. LARS, or parameter groups); by default
    ``make_optimizer`` builds it from ``settings``. Its learning rate is set at every step from ``settings``.

    ``context``: JSON-compatible facts that shape training but that the loop cannot see (e.g. the images a loss
    reads by index, loss settings); a checkpoint is resumed only if they, the data, the settings, the model's
    architecture and initial weights and the generator's seed all match.
    """
    if settings.epochs < 1 or settings.batch_size < 1:
        raise ValueError(f"epochs and batch_size must be positive, got {settings.epochs} and {settings.batch_size}")
    if any(not 0 <= m <= 1 for m in settings.milestones) or not 0 < settings.gamma <= 1:
        raise ValueError(f"milestones must be fractions of training in [0, 1] and gamma in (0, 1], got "
                         f"{tuple(settings.milestones)} and {settings.gamma}")
    if settings.lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"unknown lr_schedule {settings.lr_schedule!r}; expected one of {LR_SCHEDULES}")
    if settings.precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be resolved to fp32 or bf16, got {settings.precision!r}")
    fingerprint = run_fingerprint(model, data, settings, generator, context) if checkpoint is not None else None
    model.to(device, memory_format=torch.channels_last if settings.channels_last else torch.preserve_format)
    ranks = distributed.training_ranks(settings.data_parallel, device)
    optimizer = optimizer or make_optimizer(model.parameters(), settings)
    history: list[float] = []
    start_epoch = 0
    resumable = checkpoint is not None and checkpoint.exists()
    state = _resumable_state(checkpoint, fingerprint, device, ranks) if resumable else None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"].cpu())
        history, start_epoch = list(state["history"]), int(state["epoch"])
        if ranks.is_main():
            print(f"resuming training from {checkpoint} (epoch {start_epoch} of {settings.epochs} done)",
                  file=sys.stderr, flush=True)
    objective = ranks.wrap(_Objective(model, loss_fn), device)
    bar = tqdm(total=settings.epochs, initial=start_epoch, desc=desc, unit="epoch",
               disable=not settings.progress or not ranks.is_main())
    per_epoch = steps_per_epoch(len(data), settings)
    for epoch in range(start_epoch, settings.epochs):
        if on_epoch_start is not None:
            on_epoch_start(epoch)
        model.train()
        total, count = 0.0, 0
        for step, (batch, weight, n) in enumerate(_epoch_batches(data, settings, generator, ranks),
                                                   start=epoch * per_epoch):
            for group in optimizer.param_groups:
                group["lr"] = step_lr(settings, step, per_epoch)
            batch = to_device(batch, device)
            with autocast(settings.precision, device):
                loss = objective(batch)
            optimizer.zero_grad(set_to_none=True)
            (loss * weight).backward()
            optimizer.step()
            total += float(loss.detach()) * n
            count += n
            if on_step_end is not None:
                on_step_end(step, batch)
        total, count = ranks.all_reduce_sum(torch.tensor([total, count], dtype=torch.float64,
                                                               device=device)).tolist()
        history.append(total / max(count, 1))
        bar.set_postfix(loss=f"{history[-1]:.4g}")
        bar.update(1)
        if on_epoch_end is not None:
            on_epoch_end(epoch)
        if checkpoint is not None:
            if ranks.is_main():
                checkpoint.parent.mkdir(parents=True, exist_ok=True)
                with atomic_path(checkpoint) as tmp:
                    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                "generator": generator.get_state(), "history": history, "epoch": epoch + 1,
                                "fingerprint": fingerprint}, tmp)
            ranks.barrier()
    bar.close()
    ranks.broadcast_buffers(model)
    return history


@torch.no_grad()
def predict(
    fn: Callable[[Batch], torch.Tensor],
    data: SampleSource,
    *,
    device: torch.device,
    batch_size: int | None = None,
    progress: bool = False,
    desc: str = "score",
) -> np.ndarray:
    """Apply ``fn`` to every batch in order (no shuffling) and concatenate the results as numpy; ``batch_size``
    defaults to :func:`score_batch_size` of the device."""
    outputs = []
    batch_size = batch_size or score_batch_size(device)
    batches = iterate_batches(data, batch_size)
    for batch in tqdm(batches, total=-(-len(data) // batch_size), desc=desc, disable=not progress):
        outputs.append(fn(to_device(batch, device)).cpu())
    return torch.cat(outputs).numpy()
