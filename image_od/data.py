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


def iterate_batches(
    data: SampleSource,
    batch_size: int,
    *,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    num_workers: int = 0,
    indices: torch.Tensor | None = None,
) -> Iterator[Batch]:
    """Yield dict batches from either source; ``indices`` restricts to a subset (e.g. a distributed shard)."""
    n = len(data)
    order = indices if indices is not None else torch.arange(n)
    if shuffle:
        order = order[torch.randperm(len(order), generator=generator)]
    if isinstance(data, ArrayData):
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            yield {k: v[idx] for k, v in data.arrays.items()}
        return
    loader = DataLoader(
        torch.utils.data.Subset(data, order.tolist()),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        persistent_workers=False,
        generator=torch.Generator().manual_seed(0),  # worker seeds must not draw from the global RNG
    )
    yield from loader


def to_device(batch: Batch, device: torch.device) -> Batch:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}
