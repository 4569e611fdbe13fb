"""Sharded work under torchrun (2 CPU processes): `vad extract`, `vad score` and `image-od bench` cells against the
same commands in one process."""
import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from image_od.data.samples import ArrayData
from image_od.engine import distributed
from image_od.engine.training import TrainSettings, train
from vad.synthetic import make_synthetic_ucsd

from .test_image_bench import TINY

ROOT = Path(__file__).resolve().parents[1]
TORCHRUN = Path(sys.executable).with_name("torchrun")
CONFIG = str(ROOT / "configs" / "demo.yaml")


@pytest.mark.parametrize("costs,n", [([5, 1, 1, 1, 4], 2), ([3, 3, 3], 2), ([1], 3), ([], 2), ([2, 9, 4, 4, 1, 7], 3)])
def test_shares_split_every_item_once_and_balance_the_cost(monkeypatch, costs, n):
    shares = []
    for r in range(n):
        monkeypatch.setenv("WORLD_SIZE", str(n))
        monkeypatch.setenv("RANK", str(r))
        shares.append(distributed.my_share(costs))
    assert sorted(i for s in shares for i in s) == list(range(len(costs)))
    loads = [sum(costs[i] for i in s) for s in shares]
    assert max(loads) - min(loads) <= max(costs, default=0)  # greedy, costliest first: within one item


def test_one_process_takes_everything(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed.my_share([3, 1, 2]) == [0, 1, 2]
    assert not distributed.launched() and distributed.is_main()


def test_a_model_of_sharded_work_trains_alone_under_a_launcher(monkeypatch):
    """With ``data_parallel`` off the loop is handed this process alone: under a launcher's two ranks it joins no
    process group (which would wait for the other rank) and trains as one process does, without any global switch."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert distributed.launched() and not distributed.is_main()
    ranks = distributed.training_ranks(False, torch.device("cpu"))
    assert (ranks.rank, ranks.size, ranks.together, ranks.is_main()) == (0, 1, False, True)
    x = torch.randn(40, 3)
    settings = TrainSettings(epochs=2, batch_size=8, progress=False, data_parallel=False)
    losses = []
    for _ in range(2):
        model = torch.nn.Linear(3, 1)
        torch.nn.init.zeros_(model.weight)
        torch.nn.init.zeros_(model.bias)
        losses.append(train(model, lambda m, b: m(b["x"]).sub(1).pow(2).mean(), ArrayData({"x": x}), settings,
                            device=torch.device("cpu"), generator=torch.Generator().manual_seed(0)))
        monkeypatch.delenv("WORLD_SIZE", raising=False)  # the second time a plain process: the same training
    assert not torch.distributed.is_initialized()
    assert losses[0] == losses[1] and losses[0][1] < losses[0][0]


def _vad(launcher: list[str], *argv: str) -> None:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    done = subprocess.run([*launcher, "-m", "pipelines.video.cli", *argv, "--quiet"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr


def _cache_folder(run: Path) -> Path:
    return Path(json.loads((run / "videos.json").read_text())["cache"])


@pytest.mark.slow
def test_two_processes_extract_and_score_as_one(tmp_path):
    data = make_synthetic_ucsd(tmp_path / "data", n_videos=3, n_frames=30)
    one, two = tmp_path / "one", tmp_path / "two"
    torchrun = [str(TORCHRUN), "--standalone", "--nproc_per_node=2"]
    source = ["--config", CONFIG, "--root", str(data), "--set", "attributes.use=off", "--set", "model.epochs=1"]
    _vad([sys.executable], "extract", *source, "--out", str(one), "--cache", str(tmp_path / "cache1"))
    _vad(torchrun, "extract", *source, "--out", str(two), "--cache", str(tmp_path / "cache2"))

    first, second = _cache_folder(one), _cache_folder(two)
    assert not list(second.glob("manifest.rank*.json")) and not list(second.glob("*.tmp"))  # parts merged
    videos = json.loads((first / "manifest.json").read_text())["videos"]
    assert json.loads((second / "manifest.json").read_text())["videos"] == videos and len(videos) == 3
    for name in videos:
        with h5py.File(first / f"{name}.h5") as a, h5py.File(second / f"{name}.h5") as b:
            for field in ("cubes", "flow", "boxes", "frame"):
                assert np.array_equal(a[field][()], b[field][()]), (name, field)

    _vad([sys.executable], "train", "--out", str(one))  # one model, so that the scores can be compared
    for name in ("model.pt", "cube_errors.npz"):
        shutil.copy(one / name, two / name)
    _vad([sys.executable], "score", "--out", str(one))
    _vad(torchrun, "score", "--out", str(two))
    assert (one / "frame_scores.csv").read_text() == (two / "frame_scores.csv").read_text()
    assert (one / "events.csv").read_text() == (two / "events.csv").read_text()
    with np.load(one / "cube_scores.npz") as a, np.load(two / "cube_scores.npz") as b:
        assert a.files == b.files and all(np.array_equal(a[k], b[k]) for k in a.files)


@pytest.mark.slow
def test_a_killed_ranks_manifest_part_is_merged_by_the_next_run(tmp_path):
    """A rank killed before the merge leaves its part: the next run (any number of processes) reuses its videos."""
    data = make_synthetic_ucsd(tmp_path / "data", n_videos=2, n_frames=20)
    run, cache = tmp_path / "run", tmp_path / "cache"
    source = ["--config", CONFIG, "--root", str(data), "--out", str(run), "--cache", str(cache)]
    _vad([sys.executable], "extract", *source)
    folder = _cache_folder(run)
    manifest = json.loads((folder / "manifest.json").read_text())
    kept = sorted(manifest["videos"])[0]
    part = {"settings": manifest["settings"], "videos": {kept: manifest["videos"].pop(kept)}}
    (folder / "manifest.json").write_text(json.dumps(manifest))  # as if rank 1 had not been merged
    (folder / "manifest.rank1.json").write_text(json.dumps(part))
    stamp = (folder / f"{kept}.h5").stat().st_mtime_ns
    _vad([sys.executable], "extract", *source)
    assert not (folder / "manifest.rank1.json").exists()
    assert kept in json.loads((folder / "manifest.json").read_text())["videos"]
    assert (folder / f"{kept}.h5").stat().st_mtime_ns == stamp  # reused, not extracted again


def _bench_rows(out: Path) -> dict[tuple, tuple]:
    with (out / "results.csv").open() as f:
        return {(r["method"], r["class"]): (r["auroc"], r["aupr_in"], r["n"]) for r in csv.DictReader(f)}


@pytest.mark.slow
def test_two_processes_share_the_bench_cells_as_one(tmp_path):
    """Each rank fits its own cells alone (no data-parallel training across different cells): same rows as one
    process, merged into results.csv by rank 0."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    argv = ["-m", "pipelines.images.cli", "bench", "--dataset", "digits", "--method", "e3outlier", "iforest",
            "--classes", "0", "1", "2", "--quiet", "--profile", "cpu", *sum((["--set", s] for s in TINY), [])]
    for launcher, out in (([sys.executable], tmp_path / "one"),
                          ([str(TORCHRUN), "--standalone", "--nproc_per_node=2"], tmp_path / "two")):
        done = subprocess.run([*launcher, *argv, "--out", str(out)], env=env, cwd=ROOT, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
    one, two = _bench_rows(tmp_path / "one"), _bench_rows(tmp_path / "two")
    assert len(one) == 6 and one == two
    assert not list((tmp_path / "two").glob("results.rank*.csv")) and (tmp_path / "two" / "summary.md").is_file()
