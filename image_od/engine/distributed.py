"""Multi-process training under ``torchrun``: launch detection, the process group, and rank-0-only duties.

A plain ``python`` run sees ``WORLD_SIZE`` unset (or 1) and nothing here does anything: no process group is
created and every helper is the identity, so single-process results are unchanged. Under
``torchrun --nproc_per_node=N`` the first call to :func:`setup` joins the group (gloo for CPU devices, nccl for
CUDA, each process on its ``LOCAL_RANK`` GPU).

Two ways to use the ranks: data-parallel training (one model, each global batch split between the ranks: the
helpers below), or sharded work (each rank its own share of videos or benchmark cells: :func:`my_share`, with
the work done inside :func:`independent`, where the training helpers act as in one process).
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator, Sequence

import torch
import torch.distributed as dist
from torch import nn

_alone = False  # inside ``independent()``: this rank trains and scores on its own


def shard_count() -> int:
    """The number of processes the launcher started (``WORLD_SIZE``), whatever the rank is doing now."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def shard_index() -> int:
    """This process's global rank (``RANK``), whatever it is doing now."""
    return int(os.environ.get("RANK", "0"))


def launched() -> bool:
    """True when started by torchrun (or any launcher that sets ``WORLD_SIZE``) with more than one process, and
    the ranks work together (not inside ``independent()``)."""
    return shard_count() > 1 and not _alone


def _together() -> bool:
    return dist.is_initialized() and not _alone


def world_size() -> int:
    """The ranks that train together: 1 in a single process or inside ``independent()``."""
    return dist.get_world_size() if _together() else (1 if _alone else shard_count())


def rank() -> int:
    return dist.get_rank() if _together() else (0 if _alone else shard_index())


def local_rank() -> int:
    """This process's index on its machine: the CUDA device it uses."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    """Rank 0: the process that shows progress and writes files."""
    return rank() == 0


def setup(device: torch.device) -> None:
    """Join the launcher's process group, once (nccl for a CUDA ``device``, gloo otherwise)."""
    if shard_count() > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")


def shutdown() -> None:
    """Leave the process group, if one was joined (call once at the end of a torchrun script)."""
    if dist.is_initialized():
        dist.barrier()  # no rank tears down its connections while another still uses them (gloo aborts then)
        dist.destroy_process_group()


def barrier() -> None:
    if _together():
        dist.barrier()


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Element-wise sum of ``values`` over the ranks (in place; returned for convenience)."""
    if _together():
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


@torch.no_grad()
def broadcast_buffers(model: nn.Module) -> None:
    """Copy rank 0's buffers (e.g. BatchNorm running statistics, which each rank accumulates on its own shards)
    to every rank, so that all ranks hold the same model."""
    if _together():
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


def same_on_all_ranks(values: torch.Tensor) -> bool:
    """Whether every rank holds exactly this tensor (a consistency check)."""
    if not _together():
        return True
    if dist.get_backend() == "nccl":  # nccl exchanges CUDA tensors only
        values = values.to(torch.device("cuda", torch.cuda.current_device()))
    gathered = [torch.empty_like(values) for _ in range(world_size())]
    dist.all_gather(gathered, values)
    return all(torch.equal(g, values) for g in gathered)


def wrap(module: nn.Module, device: torch.device) -> nn.Module:
    """``module`` in DistributedDataParallel (gradients averaged over the ranks) when distributed, else itself."""
    if not _together():
        return module
    return nn.parallel.DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)


# ----------------------------------------------------------------------------------------- sharded work
@contextmanager
def independent() -> Iterator[None]:
    """Inside, this rank works alone on its share: training, progress and checkpoints act as in one process."""
    global _alone
    before, _alone = _alone, True
    try:
        yield
    finally:
        _alone = before


def my_share(costs: Sequence[float]) -> list[int]:
    """The indices of the items this rank takes: each item goes to the least loaded rank, costliest first (ties
    to the lower index and rank), so every rank computes the same split from the same list. One process: all."""
    n = shard_count()
    if n == 1:
        return list(range(len(costs)))
    load = [0.0] * n
    mine = []
    for i in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        r = min(range(n), key=lambda r: (load[r], r))
        load[r] += costs[i]
        if r == shard_index():
            mine.append(i)
    return sorted(mine)


def sync() -> None:
    """Wait until every rank gets here (the ranks of sharded work included); a no-op in one process."""
    if dist.is_initialized():
        dist.barrier()


def gather_to_main(obj: object) -> list[object] | None:
    """Rank 0 receives every rank's ``obj`` (picklable), in rank order; other ranks get None. One process: [obj]."""
    if not dist.is_initialized():
        return [obj]
    parts: list[object] | None = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(obj, parts, dst=0)
    return parts
