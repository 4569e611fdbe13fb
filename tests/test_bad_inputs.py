"""Bad inputs (issue 8, "Reliability"): each gets a clear error naming the file and what is wrong, or a documented
handling. One test per row of the issue, in its order."""
import json
import os
import pickle
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from image_od.data.samples import ArrayData
from image_od.engine.training import TrainSettings, seed_everything, train
from image_od.files.settings import ConfigError
from pipelines.video import run_folder
from pipelines.video import stages as P
from pipelines.video.cli import main as vad
from tests.layouts import frames, write_avi, write_frames, write_ucsd_official
from vad.config import load_config
from vad.readers import DatasetError, open_dataset, open_videos
from vad.synthetic import make_synthetic_ucsd

REPO = Path(__file__).resolve().parents[1]
DEMO = str(REPO / "configs" / "demo.yaml")
TINY = ["--config", DEMO, "--set", "attributes.use=off", "--set", "model.epochs=2", "--set", "model.widths=[8,16,32]",
        "--quiet"]  # the cloze generators: their checkpoints and model files are what several rows test


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A finished run on a generated 2-video set: (dataset root, run folder, cache root)."""
    base = tmp_path_factory.mktemp("tiny")
    root = make_synthetic_ucsd(base / "data", n_videos=2, n_frames=30)
    out, cache = base / "run", base / "cache"
    assert vad(["run", "--root", str(root), "--out", str(out), "--cache", str(cache), *TINY]) == 0
    return root, out, cache


# ----------------------------------------------------------------------------------------------- row 1
class _Interrupted(Exception):
    pass


def _fit(data: ArrayData, checkpoint: Path | None, *, lr: float = 1e-2, width: int = 4, context: dict | None = None,
         stop_after: int | None = None):
    """Train a tiny model for 3 epochs; ``stop_after=k`` interrupts once k epochs are checkpointed."""
    generator = seed_everything(0)
    model = nn.Sequential(nn.Linear(6, width), nn.ReLU(), nn.Linear(width, 6))

    def stop(epoch: int) -> None:  # runs before the epoch's checkpoint: epoch k-1 ends -> k-1 epochs on disk
        if stop_after is not None and epoch == stop_after:
            raise _Interrupted

    return train(model, lambda m, b: ((m(b["x"]) - b["x"]) ** 2).mean(), data,
                 TrainSettings(epochs=3, batch_size=8, lr=lr, progress=False), device=torch.device("cpu"),
                 generator=generator, checkpoint=checkpoint, context=context, on_epoch_end=stop)


def test_checkpoint_of_other_data_or_settings_is_discarded_aloud(tmp_path, capsys):
    data_a = ArrayData({"x": torch.randn(40, 6, generator=torch.Generator().manual_seed(1))})
    data_b = ArrayData({"x": torch.randn(40, 6, generator=torch.Generator().manual_seed(2))})
    ckpt = tmp_path / "train_checkpoint.pt"

    def interrupted_run_on_a() -> None:
        ckpt.unlink(missing_ok=True)
        with pytest.raises(_Interrupted):
            _fit(data_a, ckpt, stop_after=1)
        assert torch.load(ckpt, weights_only=True)["epoch"] == 1
        capsys.readouterr()

    for change, kwargs, data in (("data", {}, data_b), ("settings", {"lr": 5e-3}, data_a),
                                 ("model", {"width": 5}, data_a), ("context", {"context": {"loss": "other"}}, data_a)):
        interrupted_run_on_a()
        history = _fit(data, ckpt, **kwargs)
        err = capsys.readouterr().err
        assert f"discarding training checkpoint {ckpt}" in err and f"different {change}" in err, (change, err)
        np.testing.assert_allclose(history, _fit(data, None, **kwargs), rtol=1e-6)  # from scratch, as a clean run
    interrupted_run_on_a()
    resumed = _fit(data_a, ckpt)  # the same run: resumed, without a warning
    err = capsys.readouterr().err
    assert "resuming training" in err and "discarding" not in err
    np.testing.assert_allclose(resumed, _fit(data_a, None), rtol=1e-6)


# ----------------------------------------------------------------------------------------------- row 2
def test_video_replaced_under_the_same_name_is_extracted_again(tmp_path, capsys):
    a = open_dataset(make_synthetic_ucsd(tmp_path / "a", n_videos=1, n_frames=24, seed=1))[0].read_frames()
    b = open_dataset(make_synthetic_ucsd(tmp_path / "b", n_videos=1, n_frames=24, seed=2))[0].read_frames()
    videos, cache_root, out = tmp_path / "videos", tmp_path / "cache", tmp_path / "run"
    config = load_config(DEMO)

    def extract(cache: Path = cache_root) -> dict:
        found = P.open_run(out, config, root=None, videos_path=str(videos), cache_root=cache)
        return P.extract(config, found, cache, progress=False).load(["cam"])

    write_avi(videos / "cam.avi", a)
    old = extract()
    write_avi(videos / "cam.avi", b)  # another video, same name
    assert vad(["train", "--out", str(out), "--quiet"]) == 2  # the cache no longer matches the video
    assert "run `vad extract` again" in capsys.readouterr().err
    new = extract()
    said = capsys.readouterr().out
    assert "video cam" in said and "changed since it was cached" in said and "extracting it again" in said
    clean = extract(tmp_path / "clean_cache")
    assert len(new["frame"]) != len(old["frame"]) or not np.array_equal(new["cubes"], old["cubes"])
    for k in clean:
        np.testing.assert_array_equal(new[k], clean[k])


# ----------------------------------------------------------------------------------------------- row 3
class _RunsCode:
    """Unpickling this calls os.mkdir(marker): the shape of a malicious model file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def test_files_whose_unpickling_would_run_code_are_refused(tmp_path):
    from image_od.data.benchmarks import load_cifar_pickles
    from image_od.e3outlier.generative import GenerativeE3Outlier
    from image_od.files.safe_io import UnsafeFileError
    from image_od.operations.generative import image_tasks

    marker = tmp_path / "code-ran"
    model_pt = tmp_path / "model.pt"
    torch.save({"tasks": ["flip"], "nets": {}, "normaliser": _RunsCode(marker), "history": []}, model_pt)
    data = ArrayData({"image": torch.zeros(4, 3, 32, 32)})
    with pytest.raises(UnsafeFileError, match=f"refusing to load {model_pt}.*could run code"):
        GenerativeE3Outlier(image_tasks()).load(model_pt, data)
    (tmp_path / "ckpt").mkdir()
    shutil.copy(model_pt, tmp_path / "ckpt" / "train_checkpoint.pt")
    with pytest.raises(UnsafeFileError, match="train_checkpoint.pt"):
        _fit(ArrayData({"x": torch.zeros(8, 6)}), tmp_path / "ckpt" / "train_checkpoint.pt")
    cifar = tmp_path / "cifar"
    cifar.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
        (cifar / name).write_bytes(pickle.dumps({"data": _RunsCode(marker), "labels": [0]}))
    with pytest.raises(UnsafeFileError, match="data_batch_1.*not a plain-data pickle"):
        load_cifar_pickles(cifar)
    assert not marker.exists()  # nothing was executed


# ----------------------------------------------------------------------------------------------- row 4
@pytest.mark.parametrize("box, problem", [
    ([np.nan, 2, 8, 9], "NaN or infinite"),
    ([1, 2, np.inf, 9], "NaN or infinite"),
    ([8, 2, 1, 9], "inverted box"),
    ([1, 2, 8, 60], "outside the 24x16 frame"),
    ([-9, 2, 8, 9], "outside the 24x16 frame"),
])
def test_box_file_with_bad_coordinates_names_file_video_and_row(tmp_path, box, problem):
    from vad.regions import RegionError, load_box_file

    path = tmp_path / "boxes.npz"
    boxes = np.array([[1, 1, 5, 5], [2, 2, 6, 6], box], np.float32)
    np.savez(path, boxes_xyxy=boxes, global_frame=np.array([0, 3, 4]), video_lengths=np.array([3, 2]))
    with pytest.raises(RegionError, match=rf"{path}: row 2 of boxes_xyxy \(video cam2, frame 1 of the video\)"
                                          rf".*{problem}"):
        load_box_file(path, [3, 2], [(16, 24), (16, 24)], ["cam1", "cam2"])
    np.savez(path, boxes_xyxy=np.array([[-1, 0, 25, 16.5]], np.float32), global_frame=np.array([1]),
             video_lengths=np.array([3, 2]))
    clipped = load_box_file(path, [3, 2], [(16, 24), (16, 24)])  # within the tolerance: clipped to the frame
    assert clipped[0][1].tolist() == [[0, 0, 24, 16]]


# ----------------------------------------------------------------------------------------------- row 5
def test_truncated_jpeg_frame_fails_or_is_skipped_per_setting(tmp_path, capsys):
    video = frames(5, 32, 32)
    folder = write_frames(tmp_path / "clip", video, ".jpg", 0)
    data = (folder / "002.jpg").read_bytes()
    (folder / "002.jpg").write_bytes(data[:len(data) * 2 // 3])  # cut inside the scan: libjpeg would grey-fill it
    clip = open_videos(folder)[0]
    with pytest.raises(DatasetError, match=r"truncated JPEG.*clip/002\.jpg.*data\.bad_frames=skip"):
        clip.read_frames()
    skipped = clip.read_frames(bad_frames="skip")
    assert len(skipped) == 5  # one frame per file: labels stay aligned
    np.testing.assert_array_equal(skipped[2], skipped[1])  # the previous good frame repeated
    assert str(folder / "002.jpg") in capsys.readouterr().err
    assert load_config(None, ["data.bad_frames=skip"]).data.bad_frames == "skip"
    with pytest.raises(ConfigError, match="data.bad_frames"):
        load_config(None, ["data.bad_frames=ignore"])


# ----------------------------------------------------------------------------------------------- row 6
def test_frame_missing_in_the_middle_is_named(tmp_path):
    labels = [np.r_[0, 1, 1, 0, 0, 0, 0, 0], np.r_[1, 1, 0, 0, 0, 0]]
    root = write_ucsd_official(tmp_path / "ucsd", [frames(8), frames(6)], None, masks=labels)  # labels from masks
    (root / "Test" / "Test001" / "005.tif").unlink()
    with pytest.raises(DatasetError, match=r"Test001: 1 frame file\(s\) missing .*001\.tif\.\.008\.tif: 005;"):
        open_dataset(root)
    (root / "Test" / "Test001" / "008.tif").rename(root / "Test" / "Test001" / "005.tif")  # now the last is missing
    with pytest.raises(DatasetError, match=r"Test001 .*8 labels .* but 7 frames \(a frame file missing"):
        open_dataset(root)


# ----------------------------------------------------------------------------------------------- row 7
@pytest.mark.parametrize("override, key", [
    ("model.epochs=0", "model.epochs"), ("model.epochs=-3", "model.epochs"), ("model.batch_size=0", "model.batch_size"),
    ("model.normalisation=softmax", "model.normalisation"), ("model.targets=[appearance, colour]", "model.targets"),
    ("model.widths=[8, 0]", "model.widths"), ("model.lr=.nan", "model.lr"), ("cubes.frames=4", "cubes.frames"),
    ("cubes.size=30", "cubes.size"), ("flow.method=flownet2", "flow.method"), ("flow.preset=slow", "flow.preset"),
    ("regions.sources=[]", "regions.sources"), ("regions.sources=[file]", "regions.box_file"),
    ("regions.motion_blur=4", "regions.motion_blur"), ("data.layout=kitti", "data.layout"),
    ("data.num_workers=-1", "data.num_workers"), ("score.smooth_window=0", "score.smooth_window"),
    ("seed=-1", "seed"), ("device=gpu7", "device"), ("model.train_on=both", "model.train_on"),
    ("self_train.normal_fraction=1.5", "self_train.normal_fraction"), ("self_train.combine=max", "self_train.combine"),
    ("discriminative.backbone=vgg16", "discriminative.backbone"), ("discriminative.use=both", "discriminative.use"),
    ("refine.sp_init_range=0", "refine.sp_init_range"), ("score.smoothing=median", "score.smoothing"),
    ("events.percentile=100", "events.percentile"), ("events.min_length=0", "events.min_length"),
    ("score.track_window=-1", "score.track_window"), ("score.track_min_iou=0", "score.track_min_iou"),
    ("flow.energy_aspect=-0.5", "flow.energy_aspect"), ("flow.energy_aspect=.inf", "flow.energy_aspect"),
    ("score.position_norm=training", "score.position_norm"),  # the demo is transductive: no training videos
])
def test_invalid_settings_fail_before_any_work(tmp_path, capsys, override, key):
    with pytest.raises(ConfigError, match=rf"invalid settings: .*{key}="):
        load_config(DEMO, [override])
    out = tmp_path / "run"
    assert vad(["run", "--videos", str(tmp_path / "none"), "--out", str(out), "--set", override, "--quiet"]) == 2
    assert key in capsys.readouterr().err and not out.exists()  # refused before the videos were even looked for


# ----------------------------------------------------------------------------------------------- row 8
def test_input_errors_are_one_line_with_exit_2_and_bugs_keep_tracebacks(tiny_run, tmp_path, capsys, monkeypatch):
    from pipelines.images.cli import main as image_od

    root, run, cache = tiny_run
    a_file = tmp_path / "file"
    a_file.write_text("")
    (tmp_path / "empty.npy").write_bytes(b"")
    for cli, argv, named in (
            (vad, ["run", "--root", str(root), "--out", str(a_file), "--cache", str(cache), *TINY], a_file),  # OSError
            (image_od, ["score", "--images", str(tmp_path / "empty.npy"), "--out", str(tmp_path / "o")],  # EOFError
             tmp_path / "empty.npy")):
        assert cli(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and str(named) in err and "Traceback" not in err, err
        with pytest.raises((OSError, ValueError)):  # --debug: the same error with its traceback
            cli([*argv, "--debug"])
    out = tmp_path / "run"
    shutil.copytree(run, out)
    (out / "train_checkpoint.pt").write_bytes(b"PK\x03\x04 cut short")  # torch raises RuntimeError on it
    assert vad(["train", "--out", str(out), "--quiet"]) == 0  # documented: discarded aloud, training restarts
    err = capsys.readouterr().err
    assert f"discarding training checkpoint: {out / 'train_checkpoint.pt'}: truncated or corrupt" in err
    monkeypatch.setattr(P, "eval_stage", lambda *args, **kwargs: {}["auc_micro"])  # a bug, not an input error
    with pytest.raises(KeyError):
        vad(["eval", "--out", str(out)])


# ----------------------------------------------------------------------------------------------- row 9
def test_outputs_are_written_atomically_and_a_rerun_removes_only_what_the_run_wrote(tiny_run, tmp_path, capsys,
                                                                                     monkeypatch):
    root, run, cache = tiny_run
    out = tmp_path / "run"
    shutil.copytree(run, out)
    before = (out / "cube_scores.npz").read_bytes()

    def fails_half_way(file, **arrays):
        file.write(b"half an archive")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez_compressed", fails_half_way)
    with pytest.raises(OSError, match="No space"):
        P.score_stage(out)
    monkeypatch.undo()
    assert (out / "cube_scores.npz").read_bytes() == before and not list(out.glob("*.tmp"))
    written = json.loads((out / run_folder.MANIFEST).read_text())["files"]
    assert {"metrics.json", "frame_scores.csv", "cube_scores.npz", "model.pt", "config.yaml"} <= set(written)
    assert any(name.startswith("plots/") for name in written)
    (out / "model.pt.tmp").write_bytes(b"left by a killed write")
    (out / "train_checkpoint.pt").write_bytes(b"kept: resumed only if it belongs to the new run")
    user_files = {"plots/my_figure.png": b"the user's", "notes.txt": b"mine", "draft.tmp": b"mine too"}
    for name, data in user_files.items():
        (out / name).write_bytes(data)
    P.open_run(out, load_config(out / "config.yaml"), root=str(root), videos_path=None, cache_root=cache)
    said = capsys.readouterr().out
    assert f"{out} held a previous run: removed the files it wrote" in said and "model.pt.tmp" in said
    assert all(not (out / name).exists() for name in written if name not in ("train_checkpoint.pt", "config.yaml",
                                                                              "env.json", "videos.json")), said
    assert all((out / name).read_bytes() == data for name, data in user_files.items())  # not written by a run
    assert (out / "train_checkpoint.pt").exists() and (out / "config.yaml").is_file()
    assert not (out / "model.pt.tmp").exists()
    assert len(list(cache.glob("*/*.h5"))) == 2  # the cache is kept


def test_a_folder_that_holds_no_run_is_refused_and_nothing_is_deleted(tmp_path, capsys):
    folder = tmp_path / "thesis"
    user_files = {"plots/mythesis_fig.png": b"fig", "metrics.json": b"{}", "draft.tmp": b"draft", "notes.txt": b"n"}
    for name, data in user_files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    videos = tmp_path / "videos"
    write_frames(videos / "clip", frames(8))
    code = vad(["run", "--videos", str(videos), "--out", str(folder), "--cache", str(tmp_path / "cache"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and f"--out {folder} is not empty and holds no run" in err and "nothing was written" in err
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) == sorted(user_files)
    assert all((folder / name).read_bytes() == data for name, data in user_files.items())
    with pytest.raises(run_folder.RunFolderError, match="not empty and holds no run"):
        run_folder.claim(folder)
    (folder / "file").write_text("x")
    with pytest.raises(run_folder.RunFolderError, match="is a file"):
        run_folder.claim(folder / "file")


# ----------------------------------------------------------------------------------------------- row 10
def test_short_video_and_a_root_that_is_one_frame_folder_are_said_aloud(tmp_path, capsys):
    videos, config = tmp_path / "videos", load_config(DEMO)
    write_frames(videos / "short", frames(3))
    write_frames(videos / "long", frames(12))
    P.open_run(tmp_path / "a", config, root=None, videos_path=str(videos), cache_root=tmp_path / "cache")
    err = capsys.readouterr().err
    assert f"video short ({videos / 'short'}) has only 3 frames" in err and "video long" not in err
    P.open_run(tmp_path / "b", config, root=str(videos / "long"), videos_path=None, cache_root=tmp_path / "cache")
    err = capsys.readouterr().err
    assert f"--root {videos / 'long'} is a single folder of frames: it runs UNLABELED" in err
    assert f"--videos {videos / 'long'}" in err


# ----------------------------------------------------------------------------------------------- row 11
def test_image_od_skip_bad_scores_the_rest_and_lists_what_it_skipped(tmp_path, capsys):
    from pipelines.images.cli import main as image_od

    folder, out = tmp_path / "images", tmp_path / "out"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        cv2.imwrite(str(folder / f"{i}.png"), rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
    ok, jpeg = cv2.imencode(".jpg", rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
    (folder / "cut.jpg").write_bytes(jpeg.tobytes()[:400])  # truncated
    (folder / "junk.png").write_bytes(b"not an image")
    args = ["score", "--images", str(folder), "--out", str(out), "--epochs", "1", "--set", "generative.widths=[4,8,16]",
            "--quiet"]
    assert image_od(args) == 2  # stops at the first bad file, named
    assert f"truncated JPEG (no end-of-image marker after its last scan): {folder / 'cut.jpg'}" in \
        capsys.readouterr().err
    assert image_od([*args, "--skip-bad"]) == 0
    err = capsys.readouterr().err
    rows = (out / "scores.csv").read_text().splitlines()
    assert len(rows) == 7 and not any("cut.jpg" in r or "junk.png" in r for r in rows)  # header + 6 images
    listed = (out / "skipped.txt").read_text().splitlines()
    assert len(listed) == 2 and "cut.jpg" in listed[0] and "junk.png" in listed[1]
    assert "skipped 2 bad image file(s)" in err and all(line in err for line in listed)


# ----------------------------------------------------------------------------------------------- round 2
def test_bad_frames_skip_holds_in_every_stage_and_render_refuses_changed_footage(tmp_path, capsys):
    """data.bad_frames=skip is the run's policy for plot and render too; a video changed after the run is refused
    by render instead of having the run's boxes drawn on other footage."""
    folder = write_frames(tmp_path / "videos" / "clip", frames(12, 32, 32), ".jpg", 0)
    data = (folder / "005.jpg").read_bytes()
    (folder / "005.jpg").write_bytes(data[:len(data) * 2 // 3])
    out = tmp_path / "run"
    common = ["--out", str(out), "--quiet"]
    assert vad(["run", "--videos", str(folder.parent), "--cache", str(tmp_path / "cache"), *common, *TINY,
                "--set", "data.bad_frames=skip", "--set", "regions.motion_min_area=4"]) == 0
    assert (out / "metrics.json").is_file() and (out / "plots" / "top_events.png").is_file()
    assert vad(["render", "--video", "clip", *common]) == 0 and (out / "render" / "clip.mp4").stat().st_size > 0
    capsys.readouterr()
    write_frames(folder, frames(12, 32, 32, seed=5)[:1], ".jpg", 0)  # another first frame, another size
    os.utime(folder / "000.jpg", (1, 1))
    assert vad(["render", "--video", "clip", *common]) == 2
    assert "cached cubes of video clip" in capsys.readouterr().err


def test_every_entry_a_videos_folder_skips_is_said(tmp_path, capsys):
    folder = tmp_path / "videos"
    write_frames(folder / "clip", frames(6))
    (folder / "loop").symlink_to(folder / "loop")
    (folder / "broken.avi").symlink_to(tmp_path / "nowhere.avi")
    (folder / "notes.txt").write_text("not a video")
    assert [v.name for v in open_videos(folder)] == ["clip"]
    err = capsys.readouterr().err
    assert f"skipped {folder / 'loop'}: a broken or looping link" in err
    assert f"skipped {folder / 'broken.avi'}: a broken or looping link" in err
    assert f"skipped {folder / 'notes.txt'}: not a video file or a folder of frames" in err


def test_a_last_batch_of_one_sample_joins_the_batch_before():
    """129 images in batches of 128 reached BatchNorm as a batch of one (issue 26): every training loop cuts its
    batches with split_batches, which merges such a batch into the one before."""
    from image_od.data.samples import shard_batches, split_batches

    assert [len(b) for b in split_batches(torch.arange(129), 128)] == [129]
    assert [len(b) for b in split_batches(torch.arange(17), 8)] == [8, 9]
    assert [len(b) for b in split_batches(torch.arange(18), 8)] == [8, 8, 2]
    assert [len(b) for b in split_batches(torch.arange(1), 8)] == [1]  # nothing to merge with: callers refuse it
    assert torch.equal(torch.cat(split_batches(torch.arange(17), 8)), torch.arange(17))
    assert [len(b) for b, _ in shard_batches(torch.arange(17), 8)] == [8, 9]


def test_image_od_score_on_one_image_says_how_many_it_needs(tmp_path, capsys):
    from pipelines.images.cli import main as image_od

    folder = tmp_path / "images"
    folder.mkdir()
    cv2.imwrite(str(folder / "only.png"), np.zeros((32, 32), np.uint8))
    assert image_od(["score", "--images", str(folder), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    assert f"{folder}: e3outlier-g needs at least 2 images to learn what is normal, found 1" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("value", ["0", "100000000000000000000000", "2.5"])
def test_epoch_and_batch_counts_are_checked_when_read(tmp_path, capsys, value):
    from pipelines.images.cli import main as image_od

    assert image_od(["score", "--images", str(tmp_path), "--out", str(tmp_path / "out"), "--quiet",
                     "--set", f"generative.batch_size={value}"]) == 2
    assert "generative.batch_size must be an integer from 1 to 1,048,576" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="model.batch_size=.* must be from 1 to 1,048,576"):
        load_config(DEMO, [f"model.batch_size={value}"] if value != "2.5" else ["model.batch_size=0"])


@pytest.mark.slow
@pytest.mark.parametrize("method", __import__("pipelines.images.methods", fromlist=["x"]).SCORE_METHODS)
def test_every_image_detector_fits_a_set_one_past_a_whole_batch(method):
    """Each detector of `image-od score`, batches of 8, on 17 images (2 x 8 + 1): scores for all, no crash; fit
    returns the detector with decision_scores_ set, and decision_function scores new data."""
    import inspect

    from image_od.data.protocol import to_model_input
    from pipelines.images.methods import METHODS, SECTIONS, detector_settings, load_profile

    section = METHODS[method].section
    known = inspect.signature(SECTIONS[section]).parameters
    overrides = [f"{section}.{k}=1" for k in ("epochs", "epochs_joint", "epochs_discriminator") if k in known]
    overrides += [f"{section}.batch_size=8"] if "batch_size" in known else []
    settings = detector_settings(load_profile("cpu", overrides), section, False, METHODS[method].fixed)
    images = np.random.default_rng(0).integers(0, 255, (17, 32, 32, 1), dtype=np.uint8)
    model = SECTIONS[section](**settings, seed=0, device="cpu", progress=False)
    x = to_model_input(images, 32)
    assert model.fit(x) is model  # the contract (issue 25): fit returns self and sets decision_scores_
    scores = np.asarray(model.decision_scores_, float)
    assert scores.shape == (17,) and np.isfinite(scores).all()
    assert np.asarray(model.decision_function(x[:3])).shape == (3,)  # new data


def test_a_jpeg_cut_short_with_its_end_marker_put_back_is_caught_per_file(tmp_path, capfd):
    """libjpeg decodes such a file half grey and only prints "Corrupt JPEG data" without the file's name; that
    warning is caught per file and becomes the error (image-od) or the bad-frame policy (vad)."""
    from image_od.data.user_images import ImageReadError, read_image_file

    video = frames(5, 48, 48)
    folder = write_frames(tmp_path / "clip", video, ".jpg", 0)
    data = (folder / "002.jpg").read_bytes()
    (folder / "002.jpg").write_bytes(data[:len(data) // 2] + b"\xff\xd9")
    with pytest.raises(ImageReadError, match=r"corrupt JPEG \(libjpeg: Corrupt JPEG data: .*\): .*002\.jpg"):
        read_image_file(folder / "002.jpg")
    assert read_image_file(folder / "001.jpg").shape == (48, 48, 3)
    clip = open_videos(folder)[0]
    with pytest.raises(DatasetError, match=r"corrupt JPEG.*clip/002\.jpg"):
        clip.read_frames()
    assert len(clip.read_frames(bad_frames="skip")) == 5
    said = [line for line in capfd.readouterr().err.splitlines() if "Corrupt JPEG data" in line]
    assert said and all(str(folder / "002.jpg") in line for line in said)  # never libjpeg's bare line


def test_sixteen_bit_png_is_scaled_by_its_real_bit_depth_or_refused(tmp_path):
    """12-bit data in a 16-bit PNG was read nearly black (OpenCV shifts 16 bits down to 8 before any check)."""
    import struct
    import zlib

    from image_od.data.user_images import ImageReadError, decode_image

    twelve = np.random.default_rng(0).integers(0, 4096, (20, 30), dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "raw12.png"), twelve)
    with pytest.raises(ImageReadError, match=r"fit in 12 bits .*no PNG sBIT chunk.*raw12\.png"):
        decode_image(tmp_path / "raw12.png", grey=True)
    data = (tmp_path / "raw12.png").read_bytes()
    chunk = b"sBIT" + bytes([12])  # declares 12 significant bits, right after IHDR (8 + 25 bytes)
    sbit = struct.pack(">I", 1) + chunk + struct.pack(">I", zlib.crc32(chunk))
    (tmp_path / "sbit12.png").write_bytes(data[:33] + sbit + data[33:])
    grey = decode_image(tmp_path / "sbit12.png", grey=True)
    assert grey.dtype == np.uint8 and np.abs(grey - twelve / 4095 * 255).max() <= 0.5 + 1e-6
    full = np.random.default_rng(1).integers(0, 65536, (20, 30), dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "raw16.png"), full)
    assert np.abs(decode_image(tmp_path / "raw16.png", grey=True) - full / 65535 * 255).max() <= 0.5 + 1e-6
    assert decode_image(tmp_path / "raw16.png", grey=False).shape == (20, 30, 3)


def test_a_second_process_extracting_into_the_same_cache_says_so_and_waits(tmp_path, capsys):
    """Two `vad run` on one --cache failed with lock and .tmp errors that did not say why; now the second waits for
    the first's write lock, then finds the videos it finished and extracts nothing twice."""
    import threading

    root = make_synthetic_ucsd(tmp_path / "data", n_videos=1, n_frames=16)
    config, cache_root = load_config(DEMO), tmp_path / "cache"
    found = P.open_run(tmp_path / "run", config, root=str(root), videos_path=None, cache_root=cache_root)
    first = P.extract(config, found, cache_root, progress=False)
    made = {v: first.path(v).stat().st_mtime_ns for v in first.manifest["videos"]}
    result = {}
    with first.writing():  # this "process" holds the lock: the other must wait
        other = threading.Thread(target=lambda: result.update(cache=P.extract(config, found, cache_root, False)))
        other.start()
        other.join(timeout=1.5)
        assert other.is_alive()
    other.join(timeout=60)
    assert not other.is_alive()
    assert f"is extracting into the cache folder {first.folder}: waiting for it to finish" in capsys.readouterr().err
    assert {v: result["cache"].path(v).stat().st_mtime_ns for v in made} == made  # reused, not written again


def test_content_fingerprint_catches_swapped_frames_that_the_fast_one_misses(tmp_path, capsys):
    """Two frames swapped with their modification times restored keep size, count and newest time: the fast
    fingerprint (the default, its limit documented) reuses the cache; data.fingerprint=content extracts again, and
    reuses the cache when only the times changed (a copy to another machine)."""
    folder = write_frames(tmp_path / "videos" / "clip", frames(10, 32, 32), ".png", 0)

    def extract(mode: str) -> str:
        config = load_config(DEMO, [f"data.fingerprint={mode}", "regions.motion_min_area=4"])
        cache_root = tmp_path / f"cache_{mode}"
        found = P.open_run(tmp_path / "run", config, root=None, videos_path=str(folder.parent), cache_root=cache_root)
        P.extract(config, found, cache_root, progress=False)
        return capsys.readouterr().out

    extract("fast"), extract("content")
    a, b = folder / "003.png", folder / "007.png"
    times = [(p.stat().st_atime_ns, p.stat().st_mtime_ns) for p in (a, b)]
    data_a, data_b = a.read_bytes(), b.read_bytes()
    a.write_bytes(data_b), b.write_bytes(data_a)
    for p, t in zip((a, b), times):
        os.utime(p, ns=t)
    assert "extracting it again" not in extract("fast")  # the fast fingerprint's documented limit
    assert "changed since it was cached (sha256 differ)" in extract("content")
    for p in folder.iterdir():
        os.utime(p, ns=(1, 1))  # times change, content does not
    assert "extracting it again" not in extract("content")
    assert "changed since it was cached (newest_mtime_ns differ)" in extract("fast")
    with pytest.raises(ConfigError, match="data.fingerprint"):
        load_config(DEMO, ["data.fingerprint=md5"])


def test_a_full_disk_is_one_clear_line_and_a_rerun_after_freeing_space_gives_the_same_cubes(tmp_path, capsys,
                                                                                            monkeypatch):
    """Extraction checks the free space before each HDF5 step (h5py on a full disk printed pages and then crashed
    with a segfault); a checkpoint that fails to save on a full disk says so instead of torch's "unexpected pos"."""
    from image_od.files import atomic

    root = make_synthetic_ucsd(tmp_path / "data", n_videos=2, n_frames=16)
    out, cache = tmp_path / "run", tmp_path / "cache"
    real = atomic.shutil.disk_usage
    usage = real(tmp_path)
    monkeypatch.setattr(atomic.shutil, "disk_usage", lambda p: usage._replace(free=10 << 20))
    assert vad(["extract", "--root", str(root), "--out", str(out), "--cache", str(cache), "--config", DEMO,
                "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "No space left on device" not in err and "not enough free disk space for the cubes of video" in err
    assert "10 MiB free" in err and not list(cache.rglob("*.tmp"))
    monkeypatch.setattr(atomic.shutil, "disk_usage", real)  # space freed
    assert vad(["extract", "--root", str(root), "--out", str(out), "--cache", str(cache), "--config", DEMO,
                "--quiet"]) == 0
    fresh = tmp_path / "fresh"
    assert vad(["extract", "--root", str(root), "--out", str(tmp_path / "run2"), "--cache", str(fresh), "--config",
                DEMO, "--quiet"]) == 0
    for a, b in zip(sorted(cache.rglob("*.h5")), sorted(fresh.rglob("*.h5"))):
        with __import__("h5py").File(a) as fa, __import__("h5py").File(b) as fb:
            assert all(np.array_equal(fa[k][()], fb[k][()]) for k in fa)

    def full(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 640 vs 534")

    monkeypatch.setattr(torch, "save", full)
    monkeypatch.setattr(atomic.shutil, "disk_usage", lambda p: usage._replace(free=1 << 20))
    with pytest.raises(OSError, match="No space left on the device") as caught:
        _fit(ArrayData({"x": torch.randn(32, 6)}), tmp_path / "ck" / "train_checkpoint.pt")
    assert caught.value.filename == str(tmp_path / "ck" / "train_checkpoint.pt")
    assert not (tmp_path / "ck" / "train_checkpoint.pt.tmp").exists()


def test_a_cached_file_partly_overwritten_with_zeros_is_an_error_naming_it(tmp_path):
    """Every HDF5 chunk of the cube cache carries a Fletcher-32 checksum: zeros written over part of a cached file
    no longer shift the scores silently. Files of the earlier format (no checksums) are extracted again."""
    from vad.cache import FORMAT, CacheError, CubeCache, CubeDataset

    cache, rng, n = CubeCache(tmp_path, {"k": 1}), np.random.default_rng(0), 300
    cache.write("v", {"cubes": rng.integers(0, 255, (n, 5, 32, 32), dtype=np.uint8),
                      "flow": rng.random((n, 2, 32, 32)).astype(np.float16), "energy": rng.random(n).astype(np.float32),
                      "boxes": rng.random((n, 4)).astype(np.float32), "frame": np.arange(n, dtype=np.int32)}, 10)
    good = cache.load(["v"])
    path = cache.path("v")
    data = bytearray(path.read_bytes())
    data[len(data) // 2:len(data) // 2 + 4096] = bytes(4096)
    path.write_bytes(bytes(data))
    for read in (lambda: cache.load(["v"]), lambda: list(cache.iter_slices(["v"], ["cubes", "flow"])),
                 lambda: [CubeDataset(cache, ["v"])[i] for i in range(n)]):
        with pytest.raises(CacheError, match=rf"the cached file {path} is damaged"):
            read()
    assert len(good["frame"]) == n
    entry = cache.manifest["videos"]["v"]
    assert entry["format"] == FORMAT and cache.has("v")
    del entry["format"]  # as an earlier version wrote it
    assert not cache.has("v") and "older version" in cache.stale_reason("v", entry.get("source") or {})


def test_a_state_dict_that_does_not_fit_is_described_key_by_key():
    from image_od.files.safe_io import state_dict_mismatch

    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))
    expected = net.state_dict()
    assert state_dict_mismatch(dict(expected), expected) == ""
    given = {k: v for k, v in expected.items() if k not in ("1.bias", "1.num_batches_tracked")}
    given["0.weight"], given["extra"] = torch.zeros(2, 1, 5, 5), torch.zeros(1)
    assert state_dict_mismatch(given, expected) == ("missing keys 1: 1.bias; unexpected keys 1: extra; shape "
                                                    "mismatches 1: 0.weight (2, 1, 5, 5) (expected (2, 1, 3, 3))")
    assert "missing" not in state_dict_mismatch(given, expected, may_miss=lambda k: k.startswith("1."))
