"""The detector as a region source of the video pipeline: choosing the weights format, the input size, the default
sources, the cache key, and the boxes written out as a box file and read back with --boxes.

Needs the real Yolo-Fastest weights and UCSD Ped2 frames in ../shared (the ``needs`` marker says so)."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from image_od.files.settings import ConfigError
from pipelines.video import run_folder
from pipelines.video.cli import main as vad
from vad.config import load_config
from vad.regions import (
    DarknetBoxes,
    RegionError,
    box_areas,
    keyframe_detections,
    make_detector,
    network_size,
    remove_covered,
    resolve_detector_precision,
    resolve_runtime,
)

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SHARED = Path(__file__).resolve().parents[1].parent / "shared"
XL = SHARED / "weights" / "yolo-fastest-1.1-coco" / "yolo-fastest-1.1-xl.weights"
PED2_TEST = SHARED / "data" / "ucsd_ped2" / "testing" / "frames"
needs_real = pytest.mark.needs("weights/yolo-fastest-1.1-coco", "data/ucsd_ped2")


def test_network_size_keeps_the_aspect_in_multiples_of_32():
    assert network_size((240, 360), 416) == (416, 288)
    assert network_size((240, 360), 320) == (320, 224)
    assert network_size((360, 640), 416) == (416, 224)
    assert network_size((576, 768), 320) == (320, 256)
    assert network_size((10, 1000), 320) == (320, 32)  # never below one stride


def test_default_sources_follow_the_detector():
    assert load_config().regions.sources == ["motion"]
    assert load_config(None, ["regions.detector_weights=x.weights"]).regions.sources == ["detector", "motion"]
    assert load_config(None, ["regions.detector_weights=x.weights", "regions.sources=[detector]"]).regions.sources \
        == ["detector"]
    with pytest.raises(ConfigError, match="regions.detector_imgsz"):
        load_config(None, ["regions.detector_imgsz=300"])
    with pytest.raises(ConfigError, match="regions.detector_precision"):
        load_config(None, ["regions.detector_precision=fp16"])
    with pytest.raises(ConfigError, match="regions.detector_every"):
        load_config(None, ["regions.detector_every=0"])
    with pytest.raises(ConfigError, match="regions.detector_runtime"):
        load_config(None, ["regions.detector_runtime=tensorrt"])


def test_runtime_auto_is_onnxruntime_for_fp32_on_a_cpu():
    assert resolve_runtime("auto", "cpu", "fp32") == "onnxruntime"
    assert resolve_runtime("auto", "cpu", "bf16") == "torch"
    assert resolve_runtime("auto", "cuda:0", "fp32") == "torch"
    assert resolve_runtime("torch", "cpu", "fp32") == "torch"


def test_detector_precision_auto_is_fp32_on_any_cpu(monkeypatch):
    import image_od.engine.precision as precision

    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)  # as on an AMX or AVX512-BF16 CPU
    assert precision.resolve_precision("auto", "cpu") == "bf16"  # what the training loop would pick there
    assert resolve_detector_precision("auto", "cpu") == "fp32"  # the detector: ONNX Runtime's fp32 is faster
    assert resolve_runtime("auto", "cpu", resolve_detector_precision("auto", "cpu")) == "onnxruntime"
    assert resolve_detector_precision("bf16", "cpu") == "bf16"  # an explicit choice is kept


def _frames(n: int) -> np.ndarray:
    """n tiny frames whose pixels hold the frame's index (what the fake detectors below read)."""
    return np.arange(n, dtype=np.uint8)[:, None, None].repeat(4, 1).repeat(4, 2)


def _detector(objects):
    """A fake detector: ``objects(t)`` gives frame t's boxes; the frames it was run on are recorded, per call."""
    calls = []

    def detect(frames):
        calls.append(frames[:, 0, 0].tolist())
        return [np.array(objects(int(t)), np.float32).reshape(-1, 4) for t in frames[:, 0, 0]]
    return detect, calls


def test_keyframe_detections_run_the_detector_on_key_frames_and_interpolate_between():
    detect, calls = _detector(lambda t: [[10 * t, 0, 10 * t + 40, 40], [100, 50, 120, 90]])  # 10 px a frame; still
    boxes = keyframe_detections(detect, _frames(8), every=3)
    assert calls == [[0, 3, 6, 7]]  # key frames: every third and the last
    np.testing.assert_allclose(np.stack([b[0] for b in boxes])[:, 0], 10 * np.arange(8))  # constant speed followed
    assert all(len(b) == 2 for b in boxes)
    detect, calls = _detector(lambda t: [[10 * t, 0, 10 * t + 40, 40]])
    assert [int(b[0, 0]) for b in keyframe_detections(detect, _frames(8))] == list(range(0, 80, 10))
    assert calls == [list(range(8))]  # every frame


def test_keyframe_detections_keep_an_unpaired_box_on_the_frames_nearer_its_key_frame():
    # an object leaving after frame 0 and one appearing on frame 2 (or detections that flicker)
    detect, calls = _detector(lambda t: [[0, 0, 20, 20]] + ([[200, 200, 220, 220]] if t == 0 else [])
                              + ([[50, 50, 70, 70]] if t >= 2 else []))
    boxes = keyframe_detections(detect, _frames(7), every=3)
    assert calls == [[0, 3, 6]]
    assert [len(b) for b in boxes] == [2, 2, 2, 2, 2, 2, 2]
    np.testing.assert_array_equal(boxes[1][1], [200, 200, 220, 220])  # nearer frame 0
    np.testing.assert_array_equal(boxes[2][1], [50, 50, 70, 70])  # nearer frame 3


def test_keyframe_detections_pair_the_overlapping_boxes():
    def objects(t):  # two far objects moving 2 px a frame, listed in another order on odd frames
        a, b = [2 * t, 0, 2 * t + 20, 20], [100 + 2 * t, 0, 120 + 2 * t, 20]
        return [a, b] if t % 2 == 0 else [b, a]

    detect, calls = _detector(objects)
    boxes = keyframe_detections(detect, _frames(5), every=4)
    assert calls == [[0, 4]]
    np.testing.assert_allclose(np.sort(boxes[1][:, 0]), [2, 102])


def test_make_detector_by_file_type(tmp_path):
    settings = dict(classes=None, score_thr=0.3, nms_iou=0.45, min_area=100.0, cover_thr=0.6, imgsz=320,
                    device="cpu", precision="fp32", allow_pickle=False)
    (tmp_path / "model.onnx").write_bytes(b"x")
    with pytest.raises(RegionError, match="model.onnx: detector weights must be Darknet .weights"):
        make_detector(tmp_path / "model.onnx", **settings)
    (tmp_path / "lonely.weights").write_bytes(b"\0" * 32)
    with pytest.raises(RegionError, match="lonely.weights.*lonely.cfg is missing"):
        make_detector(tmp_path / "lonely.weights", **settings)


@needs_real
def test_darknet_boxes_apply_the_vec_filters_on_real_frames():
    import cv2

    frames = np.stack([cv2.imread(str(PED2_TEST / "01" / f"{t:03d}.jpg"), cv2.IMREAD_GRAYSCALE) for t in (0, 60)])
    det = make_detector(XL, classes=None, score_thr=0.2, nms_iou=0.45, min_area=400.0, cover_thr=0.6, imgsz=416,
                        device="cpu", precision="fp32", allow_pickle=False)
    assert isinstance(det, DarknetBoxes)
    per_frame = det.detect(frames)
    for boxes in per_frame:
        assert boxes.dtype == np.float32 and len(boxes) >= 8  # the people of the frame
        assert np.all(box_areas(boxes) >= 400.0) and len(remove_covered(boxes, 0.6)) == len(boxes)
    assert det.detect(frames[:0]) == []


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """The first 14 frames of Ped2 test video 01 as an unlabeled folder of frames."""
    folder = tmp_path_factory.mktemp("clip") / "videos" / "01"
    folder.mkdir(parents=True)
    for t in range(14):
        shutil.copy(PED2_TEST / "01" / f"{t:03d}.jpg", folder / f"{t:03d}.jpg")
    return folder.parent


@needs_real
def test_detector_boxes_are_cached_written_out_and_read_back(clip, tmp_path):
    cache = tmp_path / "cache"
    common = ["--videos", str(clip), "--cache", str(cache), "--quiet", "--config", str(CONFIGS / "ucsd_ped2.yaml")]
    assert vad(["extract", *common, "--detector", str(XL), "--out", str(tmp_path / "a")]) == 0
    config = load_config(tmp_path / "a" / "config.yaml")
    assert config.regions.sources == ["detector", "motion"] and config.regions.detector_weights == str(XL.resolve())
    (folder,) = cache.iterdir()
    key = json.loads((folder / "manifest.json").read_text())["settings"]["regions"]["detector_weights"]
    assert len(key["sha256"]["weights"]) == 64 and len(key["sha256"]["cfg"]) == 64  # content, not only mtime

    assert vad(["boxes", "--out", str(tmp_path / "a")]) == 0
    exported = tmp_path / "a" / "boxes_test.npz"
    with np.load(exported) as f:
        boxes, frame, lengths = f["boxes_xyxy"], f["global_frame"], f["video_lengths"]
    assert lengths.tolist() == [14] and boxes.shape[1] == 4 and frame.dtype == np.int32
    assert np.bincount(frame, minlength=14).min() >= 8  # people in every frame
    assert "boxes_test.npz" in json.loads((tmp_path / "a" / "run_manifest.json").read_text())["files"]

    # the same boxes read back as a box file give the same cubes
    assert vad(["extract", *common, "--boxes", str(exported), "--out", str(tmp_path / "b")]) == 0
    cached = {}
    for run in ("a", "b"):
        _, info = run_folder.load_run(tmp_path / run)
        cached[run] = run_folder.ready_cache(info).load(["01"], fields=("boxes", "frame", "cubes"))
    for k in ("boxes", "frame", "cubes"):
        np.testing.assert_array_equal(cached["a"][k], cached["b"][k])

    # another detector setting is another cache entry
    assert vad(["extract", *common, "--detector", str(XL), "--set", "regions.detector_score=0.9",
                "--out", str(tmp_path / "c")]) == 0
    assert len(list(cache.iterdir())) == 3

    # regions.join_fragments, another cache entry: every box of the default run lies inside a box of the joined run
    # (these 14 frames hold no fragment to join: joining itself is tested in test_regions.py)
    assert vad(["extract", *common, "--detector", str(XL), "--set", "regions.join_fragments=true",
                "--out", str(tmp_path / "d")]) == 0
    _, info = run_folder.load_run(tmp_path / "d")
    joined = run_folder.ready_cache(info).load(["01"], fields=("boxes", "frame"))
    assert len(joined["boxes"]) <= len(cached["a"]["boxes"]) and len(list(cache.iterdir())) == 4
    for box, t in zip(cached["a"]["boxes"], cached["a"]["frame"]):
        mine = joined["boxes"][joined["frame"] == t]
        assert np.any(np.all(mine[:, :2] <= box[:2] + 1e-3, axis=1) & np.all(mine[:, 2:] >= box[2:] - 1e-3, axis=1))


def test_detector_and_boxes_are_exclusive(capsys):
    with pytest.raises(SystemExit):
        vad(["extract", "--videos", "v", "--out", "o", "--boxes", "b.npz", "--detector", "d.weights"])
    assert "not allowed with argument" in capsys.readouterr().err
