"""Distributed training: the batch sharding, and 1 vs 2 torchrun processes giving the same detector."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from image_od.data.samples import shard_batches

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tools" / "ddp_scores.py"
TORCHRUN = Path(sys.executable).with_name("torchrun")

# 1 vs 2 processes cannot agree exactly: each rank normalises its BatchNorm layers over its half of the global
# batch (and rank 0's running statistics, used for scoring, come from its halves only), and gradients are summed
# in another order. With BatchNorm replaced by the identity the scores agree to 4e-6 (float summation order);
# with it, measured: correlation 0.99994, max |difference| 0.16-0.18 = 0.043-0.047 score standard deviations
# (3 processes: 0.99975, 0.059 std; one process on 1 vs 2 threads alone differs by 0.015), AUROC 0.996 for both.
# The bounds leave a margin of about 3x on the difference, 15x on 1 - correlation.
MIN_CORRELATION = 0.999
MAX_DIFF_IN_STD = 0.15  # max |scores_2 - scores_1| / std(scores_1)


@pytest.mark.parametrize("n,batch_size,world_size", [(257, 32, 2), (257, 32, 3), (10, 4, 3), (1, 4, 2), (64, 32, 2)])
def test_shards_cover_each_global_batch_once_in_single_process_order(n, batch_size, world_size):
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    losses = torch.rand(n, dtype=torch.float64)  # any per-sample losses
    single = list(shard_batches(order, batch_size))
    assert all(w == 1.0 for _, w in single)
    shards = [list(shard_batches(order, batch_size, r, world_size)) for r in range(world_size)]
    assert all(len(s) == len(single) for s in shards)  # every rank takes part in every step
    for step, (batch, _) in enumerate(single):
        parts = [shards[r][step] for r in range(world_size)]
        real = [idx for idx, w in parts if w > 0]
        assert torch.equal(torch.cat(real), batch)  # each sample once, in the single-process order
        # DDP averages over ranks: the weights turn the shares' mean losses into the global batch's mean
        averaged = sum(w * losses[idx].mean() for idx, w in parts) / world_size
        assert averaged.item() == pytest.approx(losses[batch].mean().item())
        assert all(torch.equal(idx, batch) for idx, w in parts if w == 0)  # an idle rank re-runs the batch


def _run(command: list[str], out: Path) -> np.ndarray:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    subprocess.run(command + [str(SCRIPT), str(out)], check=True, env=env, cwd=ROOT, timeout=120)
    return np.load(out)


@pytest.mark.slow
def test_two_processes_match_one(tmp_path):
    one = _run([sys.executable], tmp_path / "one.npy")
    two = _run([str(TORCHRUN), "--standalone", "--nproc_per_node=2"], tmp_path / "two.npy")
    assert one.shape == two.shape == (257,)
    assert np.corrcoef(one, two)[0, 1] > MIN_CORRELATION
    assert np.abs(two - one).max() / one.std() < MAX_DIFF_IN_STD
    is_outlier = np.load(tmp_path / "one.labels.npy")
    assert roc_auc_score(is_outlier, one) > 0.95 and roc_auc_score(is_outlier, two) > 0.95  # measured 0.996
