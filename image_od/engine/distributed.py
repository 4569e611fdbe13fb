"""Multi-process training under ``torchrun``: launch detection, the process group, and rank-0-only duties.

A plain ``python`` run sees ``WORLD_SIZE`` unset (or 1) and nothing here does anything: no process group is
created and every helper is the identity, so single-process results are unchanged. Under
``torchrun --nproc_per_node=N`` the first call to :func:`setup` joins the group (gloo for CPU devices, nccl for
CUDA, each process on its ``LOCAL_RANK`` GPU).

Two ways to use the ranks: data-parallel training (one model, each global batch split between the ranks: the
:class:`Ranks` the training loop is handed), or sharded work (each rank its own share of videos or benchmark
cells: :func:`my_share`; the models of sharded work train with ``data_parallel`` off, each rank its own).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.distributed as dist
from torch import nn


def shard_count() -> int:
    """The number of processes the launcher started (``WORLD_SIZE``)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def shard_index() -> int:
    """This process's global rank (``RANK``)."""
    return int(os.environ.get("RANK", "0"))


def launched() -> bool:
    """True when started by torchrun (or any launcher that sets ``WORLD_SIZE``) with more than one process."""
    return shard_count() > 1


def local_rank() -> int:
    """This process's index on its machine: the CUDA device it uses."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    """The launcher's rank 0 (or a plain process): the process that shows progress and writes shared files."""
    return shard_index() == 0


def setup(device: torch.device) -> None:
    """Join the launcher's process group, once (nccl for a CUDA ``device``, gloo otherwise)."""
    if launched() and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")


def shutdown() -> None:
    """Leave the process group, if one was joined (call once at the end of a torchrun script)."""
    if dist.is_initialized():
        dist.barrier()  # no rank tears down its connections while another still uses them (gloo aborts then)
        dist.destroy_process_group()


def same_on_all_ranks(values: torch.Tensor) -> bool:
    """Whether every rank of the launcher holds exactly this tensor (a consistency check)."""
    if not dist.is_initialized():
        return True
    if dist.get_backend() == "nccl":  # nccl exchanges CUDA tensors only
        values = values.to(torch.device("cuda", torch.cuda.current_device()))
    gathered = [torch.empty_like(values) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, values)
    return all(torch.equal(g, values) for g in gathered)


# ------------------------------------------------------------------------------------ data-parallel training
@dataclass(frozen=True)
class Ranks:
    """The processes that train one model together, handed to the training loop: this process's ``rank`` among
    ``size`` of them. ``size`` 1 (a plain run, or sharded work where each rank trains its own models): every
    helper below is the identity. Built by :func:`training_ranks`."""

    rank: int = 0
    size: int = 1

    @property
    def together(self) -> bool:
        return self.size > 1

    def is_main(self) -> bool:
        """Rank 0: the process that shows the training's progress and writes its checkpoint."""
        return self.rank == 0

    def barrier(self) -> None:
        if self.together:
            dist.barrier()

    def all_reduce_sum(self, values: torch.Tensor) -> torch.Tensor:
        """Element-wise sum of ``values`` over the ranks (in place; returned for convenience)."""
        if self.together:
            dist.all_reduce(values, op=dist.ReduceOp.SUM)
        return values

    @torch.no_grad()
    def broadcast_buffers(self, model: nn.Module) -> None:
        """Copy rank 0's buffers (e.g. BatchNorm running statistics, which each rank accumulates on its own
        shards) to every rank, so that all ranks hold the same model."""
        if self.together:
            for buffer in model.buffers():
                dist.broadcast(buffer, src=0)

    def wrap(self, module: nn.Module, device: torch.device) -> nn.Module:
        """``module`` in DistributedDataParallel (gradients averaged over the ranks) when together, else itself."""
        if not self.together:
            return module
        return nn.parallel.DistributedDataParallel(module,
                                                   device_ids=[device.index] if device.type == "cuda" else None)


def training_ranks(data_parallel: bool, device: torch.device) -> Ranks:
    """The ranks that train one model: with ``data_parallel``, every process the launcher started (joining its
    process group on ``device``); otherwise, or in a plain run, this process alone."""
    if not (data_parallel and launched()):
        return Ranks()
    setup(device)
    return Ranks(dist.get_rank(), dist.get_world_size())


# ----------------------------------------------------------------------------------------- sharded work
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
