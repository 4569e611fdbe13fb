"""Multi-process training under ``torchrun``: launch detection, the process group, and rank-0-only duties.

A plain ``python`` run sees ``WORLD_SIZE`` unset (or 1) and nothing here does anything: no process group is
created and every helper is the identity, so single-process results are unchanged. Under
``torchrun --nproc_per_node=N`` the first call to :func:`setup` joins the group (gloo for CPU devices, nccl for
CUDA, each process on its ``LOCAL_RANK`` GPU).
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn


def launched() -> bool:
    """True when started by torchrun (or any launcher that sets ``WORLD_SIZE``) with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    """This process's index on its machine: the CUDA device it uses."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    """Rank 0: the process that shows progress and writes files."""
    return rank() == 0


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


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Element-wise sum of ``values`` over the ranks (in place; returned for convenience)."""
    if dist.is_initialized():
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


@torch.no_grad()
def broadcast_buffers(model: nn.Module) -> None:
    """Copy rank 0's buffers (e.g. BatchNorm running statistics, which each rank accumulates on its own shards)
    to every rank, so that all ranks hold the same model."""
    if dist.is_initialized():
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


def same_on_all_ranks(values: torch.Tensor) -> bool:
    """Whether every rank holds exactly this tensor (a consistency check)."""
    if not dist.is_initialized():
        return True
    if dist.get_backend() == "nccl":  # nccl exchanges CUDA tensors only
        values = values.to(torch.device("cuda", torch.cuda.current_device()))
    gathered = [torch.empty_like(values) for _ in range(world_size())]
    dist.all_gather(gathered, values)
    return all(torch.equal(g, values) for g in gathered)


def wrap(module: nn.Module, device: torch.device) -> nn.Module:
    """``module`` in DistributedDataParallel (gradients averaged over the ranks) when distributed, else itself."""
    if not dist.is_initialized():
        return module
    return nn.parallel.DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)
