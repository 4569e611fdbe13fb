"""End to end: the generated surveillance set, unlabeled videos, and bad inputs."""
import json

import numpy as np
import pytest

from pipelines.vad_cli import main
from tests.layouts import write_avi, write_ucsd_official
from vad.synthetic import make_synthetic_ucsd


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    assert main(["demo", "--out", str(out), "--quiet"]) == 0
    return out


def test_demo_end_to_end_auc_floor(demo_run):
    metrics = json.loads((demo_run / "metrics.json").read_text())
    assert metrics["auc_micro"] > 0.75, metrics  # chance is 0.5
    videos = json.loads((demo_run / "videos.json").read_text())["videos"]
    assert metrics["n_frames"] == sum(v["n_frames"] for v in videos) > 0
    assert set(metrics["timings"]) == {"extract_s", "train_s", "score_s", "total_s"}
    for name in ("config.yaml", "env.json", "frame_scores.csv", "cube_scores.npz", "plots/roc.png",
                 "plots/Test001.png"):
        assert (demo_run / name).is_file(), name
    env = json.loads((demo_run / "env.json").read_text())
    assert env["seed"] == 0 and "torch" in env["versions"]
    assert env["reference_workload_s"] > 0 and env["cpu"]["torch_capability"] and "precision" not in env


def test_stages_rerun_from_run_folder(demo_run):
    before = (demo_run / "frame_scores.csv").read_text()
    assert main(["score", "--out", str(demo_run)]) == 0
    assert main(["eval", "--out", str(demo_run), "--quiet"]) == 0
    assert (demo_run / "frame_scores.csv").read_text() == before  # the saved model reproduces the scores


def test_synthetic_set_is_deterministic(tmp_path):
    a = make_synthetic_ucsd(tmp_path / "a", n_videos=1, n_frames=30)
    b = make_synthetic_ucsd(tmp_path / "b", n_videos=1, n_frames=30)
    assert (a / "Test" / "Test001" / "015.tif").read_bytes() == (b / "Test" / "Test001" / "015.tif").read_bytes()
    assert (a / "Test" / "UCSDsynth.m").read_text() == (b / "Test" / "UCSDsynth.m").read_text()


def test_unlabeled_videos_get_scores_without_auc(tmp_path):
    root = make_synthetic_ucsd(tmp_path / "syn", n_videos=1, n_frames=40)
    from vad.readers import open_dataset

    frames = open_dataset(root)[0].read_frames()
    write_avi(tmp_path / "vids" / "cam1.avi", frames)
    out = tmp_path / "run"
    assert main(["run", "--videos", str(tmp_path / "vids"), "--out", str(out), "--cache", str(tmp_path / "c"),
                 "--config", "configs/demo.yaml", "--set", "model.epochs=2", "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert "auc_micro" not in metrics and metrics["n_frames"] == 40
    assert (out / "plots" / "cam1.png").is_file()


def test_video_with_no_motion_is_a_clear_error(tmp_path, capsys):
    still = np.full((6, 24, 32), 100, np.uint8)
    root = write_ucsd_official(tmp_path / "still", [still], ["1:2"])
    code = main(["run", "--root", str(root), "--out", str(tmp_path / "run"), "--cache", str(tmp_path / "c"),
                 "--quiet"])
    assert code == 2
    assert "no cubes were extracted" in capsys.readouterr().err


def test_missing_dataset_is_a_clear_error(tmp_path, capsys):
    assert main(["run", "--root", str(tmp_path / "none"), "--out", str(tmp_path / "r"), "--quiet"]) == 2
    assert "not found" in capsys.readouterr().err


def test_lazy_cache_reading_with_workers_matches_in_memory(demo_run, tmp_path):
    """data.in_memory=false trains from the HDF5 cache through DataLoader workers; scores match in-memory ones."""
    import csv

    def scores(out):
        with (out / "frame_scores.csv").open() as f:
            return np.array([float(r["score"]) for r in csv.DictReader(f)])

    args = ["run", "--root", str(demo_run / "data"), "--cache", str(demo_run / "cache"), "--config",
            "configs/demo.yaml", "--set", "model.epochs=1", "--quiet"]
    assert main([*args, "--out", str(tmp_path / "mem")]) == 0
    assert main([*args, "--out", str(tmp_path / "lazy"), "--set", "data.in_memory=false",
                 "--set", "data.num_workers=2"]) == 0
    np.testing.assert_allclose(scores(tmp_path / "lazy"), scores(tmp_path / "mem"), rtol=1e-4, atol=1e-5)


def test_stage_by_stage_commands(demo_run, tmp_path):
    out, cache = tmp_path / "staged", tmp_path / "cache"
    base = ["--out", str(out), "--quiet"]
    assert main(["extract", "--root", str(demo_run / "data"), "--cache", str(cache), "--config",
                 "configs/demo.yaml", "--set", "model.epochs=1", *base]) == 0
    manifest = json.loads(next(cache.glob("*/manifest.json")).read_text())
    assert sorted(manifest["videos"]) == ["Test001", "Test002", "Test003", "Test004"]
    for stage in ("train", "score", "eval", "plot"):
        assert main([stage, *base]) == 0, stage
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.5 < metrics["auc_micro"] <= 1 and (out / "plots" / "roc.png").is_file()


def test_stage_out_of_order_is_a_clear_error(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "nothing"), "--quiet"]) == 2
    assert "not a run folder" in capsys.readouterr().err
