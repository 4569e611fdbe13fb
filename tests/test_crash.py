"""Crash safety (issue 8): a `vad run` killed with SIGKILL at a point the test chooses, then rerun with the same
command, ends exactly as an uninterrupted run: finished videos are reused, nothing half-written is read as
finished, and an interrupted training resumes from its last checkpoint."""
import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import h5py
import numpy as np
import pytest

from pipelines.video.cli import main as vad
from vad.synthetic import make_synthetic_ucsd

REPO = Path(__file__).resolve().parents[1]
# the cloze generators: their checkpoints are what the training crash tests kill and resume
SETTINGS = ["--config", str(REPO / "configs" / "demo.yaml"), "--set", "attributes.use=off",
            "--set", "model.widths=[8,16,32]", "--quiet"]


def _run_killed(argv: list[str], kill_point: Callable[[], bool], log: Path, timeout: float = 300) -> None:
    """Run ``vad ARGV`` in a subprocess and SIGKILL it as soon as ``kill_point()`` holds (polled every 5 ms)."""
    with log.open("w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "pipelines.video.cli", *argv], cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.monotonic() + timeout
        try:
            while not kill_point():
                if proc.poll() is not None:
                    pytest.fail(f"the run ended (code {proc.returncode}) before the kill point: {log.read_text()}")
                if time.monotonic() > deadline:
                    pytest.fail("the kill point was not reached in time")
                time.sleep(0.005)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    assert proc.returncode == -signal.SIGKILL


def _listed_videos(cache: Path) -> list[str]:
    """The videos that a cache folder's manifest lists as finished (its .h5 file lands just before the listing)."""
    for manifest in cache.glob("*/manifest.json"):
        try:
            return list(json.loads(manifest.read_text())["videos"])
        except (OSError, ValueError, KeyError):  # replaced while being read
            return []
    return []


def _h5_arrays(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as f:
        return {k: f[k][()] for k in f}


def _frame_scores(out: Path) -> dict[str, np.ndarray]:
    with (out / "frame_scores.csv").open() as f:
        rows = list(csv.DictReader(f))
    return {k: np.array([float(r[k]) for r in rows]) for k in ("score", "heuristic")}


@pytest.mark.slow  # a subprocess per run (each imports torch): the slow tier
def test_killed_extraction_reuses_finished_videos_and_ends_as_a_clean_run(tmp_path):
    root = make_synthetic_ucsd(tmp_path / "data", n_videos=3, n_frames=30)
    videos = [f"Test{i:03d}" for i in range(1, 4)]
    cache, clean_cache = tmp_path / "cache", tmp_path / "clean_cache"
    common = ["--root", str(root), *SETTINGS, "--set", "model.epochs=1"]
    argv = ["run", "--out", str(tmp_path / "run"), "--cache", str(cache), *common]
    _run_killed(argv, lambda: _listed_videos(cache), tmp_path / "killed.log")  # the first video is cached
    (folder,) = cache.iterdir()
    listed = json.loads((folder / "manifest.json").read_text())["videos"]
    finished = {v: (folder / f"{v}.h5").stat().st_mtime_ns for v in listed}
    assert 1 <= len(finished) < len(videos), finished  # killed inside the extraction
    unfinished = [v for v in videos if v not in finished]
    (folder / f"{unfinished[-1]}.h5").write_bytes(b"no manifest entry vouches for me")  # killed after the rename,
    (folder / f"{unfinished[0]}.h5.tmp").write_bytes(b"half a write")  # or during the write

    assert vad(argv) == 0  # the same command again
    assert {v: (folder / f"{v}.h5").stat().st_mtime_ns for v in finished} == finished  # reused, not redone
    assert not list(folder.glob("*.tmp"))
    assert vad(["run", "--out", str(tmp_path / "clean"), "--cache", str(clean_cache), *common]) == 0
    clean_folder = clean_cache / folder.name  # the same settings key
    for video in videos:
        got, want = _h5_arrays(folder / f"{video}.h5"), _h5_arrays(clean_folder / f"{video}.h5")
        assert got.keys() == want.keys()
        for k in want:
            np.testing.assert_array_equal(got[k], want[k], err_msg=f"{video} {k}")
    got, want = _frame_scores(tmp_path / "run"), _frame_scores(tmp_path / "clean")
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_killed_training_resumes_from_its_checkpoint_and_matches_an_uninterrupted_run(tmp_path, capsys):
    import torch

    root = make_synthetic_ucsd(tmp_path / "data", n_videos=2, n_frames=30)
    epochs = 6
    common = ["--root", str(root), "--cache", str(tmp_path / "cache"), *SETTINGS, "--set", f"model.epochs={epochs}"]
    assert vad(["run", "--out", str(tmp_path / "clean"), *common]) == 0  # uninterrupted; also fills the cache
    out = tmp_path / "run"
    checkpoint = out / "train_checkpoint.pt"
    argv = ["run", "--out", str(out), *common]
    _run_killed(argv, checkpoint.exists, tmp_path / "killed.log")  # the first epoch is checkpointed
    done = torch.load(checkpoint, weights_only=True)["epoch"]
    assert 1 <= done < epochs and not (out / "frame_scores.csv").exists()  # killed inside the training
    capsys.readouterr()

    assert vad(argv) == 0  # the same command again
    assert f"resuming training from {checkpoint} (epoch {done} of {epochs} done)" in capsys.readouterr().err
    assert not checkpoint.exists()
    got, want = _frame_scores(out), _frame_scores(tmp_path / "clean")
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-6)
