"""Sample containers the training loop understands.

A sample is a dict of named arrays (``{"image": ...}``, ``{"cube": ..., "flow": ...}``), so that operations can
read several modalities of one datum. Two sources are supported:

- :class:`ArrayData`: everything in memory; batches are cut by indexing, the fastest path on a CPU;
- any ``torch.utils.data.Dataset`` whose items are such dicts, read through a ``DataLoader`` (for data
  that does not fit in memory; see ``vad.cache.CubeDataset``).
"""
from __future__ import annotations

from typing import Iterator, Mapping

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

Batch = dict[str, torch.Tensor]


class ArrayData:
    """Named arrays of equal length held in memory (numpy arrays are wrapped without copying)."""

    def __init__(self, arrays: Mapping[str, np.ndarray | torch.Tensor]):
        if not arrays:
            raise ValueError("ArrayData needs at least one array")
        self.arrays = {k: torch.as_tensor(v) for k, v in arrays.items()}
        lengths = {k: len(v) for k, v in self.arrays.items()}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"arrays have different lengths: {lengths}")

    def __len__(self) -> int:
        return len(next(iter(self.arrays.values())))

    def subset(self, index: np.ndarray | torch.Tensor) -> "ArrayData":
        index = torch.as_tensor(index)
        return ArrayData({k: v[index] for k, v in self.arrays.items()})


SampleSource = ArrayData | Dataset


def split_batches(order: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """``order`` cut into batches of ``batch_size``, a last batch of one sample merged into the one before: a
    batch of one has no batch statistics (BatchNorm fails on it, or trains on garbage), so 129 images in
    batches of 128 make one step of 129."""
    parts = list(order.split(batch_size))
    if len(parts) > 1 and len(parts[-1]) == 1:
        parts[-2:] = [torch.cat(parts[-2:])]
    return parts


def iterate_batches(
    data: SampleSource,
    batch_size: int,
    *,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    num_workers: int = 0,
    indices: torch.Tensor | None = None,
) -> Iterator[Batch]:
    """Yield dict batches from either source (:func:`split_batches`); ``indices`` restricts to a subset."""
    n = len(data)
    order = indices if indices is not None else torch.arange(n)
    if shuffle:
        order = order[torch.randperm(len(order), generator=generator)]
    yield from load_batches(data, split_batches(order, batch_size), num_workers)


def shard_batches(order: torch.Tensor, batch_size: int, rank: int = 0,
                  world_size: int = 1) -> Iterator[tuple[torch.Tensor, float]]:
    """Cut ``order`` into global batches of ``batch_size``; yield this rank's contiguous share of each and its loss
    weight ``world_size * len(share) / len(batch)``.

    Averaged over the ranks (as DDP averages gradients), the weighted batch-mean losses of the shares are the mean
    loss of the whole batch, so a step sees what a single process would. A rank left without samples (a final
    batch smaller than ``world_size``) gets the whole batch with weight 0: it still takes part in the step.
    With one rank this is the plain batching, weight 1.
    """
    for batch in split_batches(order, batch_size):
        share = torch.tensor_split(batch, world_size)[rank]
        yield (share, world_size * len(share) / len(batch)) if len(share) else (batch, 0.0)


def load_batches(data: SampleSource, index_batches: list[torch.Tensor], num_workers: int = 0) -> Iterator[Batch]:
    """Yield the dict batch of each index tensor, in order."""
    if isinstance(data, ArrayData):
        for idx in index_batches:
            yield {k: v[idx] for k, v in data.arrays.items()}
        return
    loader = DataLoader(
        data,
        batch_sampler=[idx.tolist() for idx in index_batches],
        num_workers=num_workers,
        persistent_workers=False,
        generator=torch.Generator().manual_seed(0),  # worker seeds must not draw from the global RNG
    )
    yield from loader


def to_device(batch: Batch, device: torch.device) -> Batch:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}
