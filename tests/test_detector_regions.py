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
    held_detections,
    make_detector,
    network_size,
    remove_covered,
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


def test_held_detections_run_the_detector_on_every_nth_frame():
    seen = []

    def detect(frames):  # one box per frame whose corner is the frame's value
        seen.append(frames[:, 0, 0].tolist())
        return [np.array([[f, f, f + 10, f + 10]], np.float32) for f in frames[:, 0, 0]]

    frames = np.arange(7, dtype=np.uint8)[:, None, None].repeat(4, 1).repeat(4, 2)
    held = held_detections(detect, frames, every=3)
    assert seen == [[0, 3, 6]]
    assert [int(b[0, 0]) for b in held] == [0, 0, 0, 3, 3, 3, 6]
    assert [int(b[0, 0]) for b in held_detections(detect, frames)] == list(range(7))


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


def test_detector_and_boxes_are_exclusive(capsys):
    with pytest.raises(SystemExit):
        vad(["extract", "--videos", "v", "--out", "o", "--boxes", "b.npz", "--detector", "d.weights"])
    assert "not allowed with argument" in capsys.readouterr().err
