"""Foreground regions: the cloze-test motion-box recipe, covered-box removal, box files, the YOLO detector."""
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

from vad.regions import (
    RegionError,
    YoloDetector,
    box_areas,
    filter_boxes,
    join_fragments,
    load_box_file,
    merge_boxes,
    motion_boxes,
    remove_covered,
    video_motion_boxes,
)

PED2_BOXES = Path(__file__).resolve().parents[2] / "shared" / "data" / "ucsd_ped2_vec_boxes" / "ped2_test_boxes.npz"
PED2_LENGTHS = [180, 180, 150, 180, 150, 180, 180, 180, 120, 150, 180, 180]


def _moving_square(x0: int = 20, step: int = 5, y0: int = 20, side: int = 10, shape=(60, 80)) -> list[np.ndarray]:
    """Frames t-1, t, t+1 of a bright square moving right by ``step`` px on a flat background."""
    frames = []
    for i in range(3):
        f = np.full(shape, 50, np.uint8)
        x = x0 + i * step
        f[y0:y0 + side, max(x, 0):x + side] = 250
        frames.append(f)
    return frames


def _flash(y: int, x: int, h: int, w: int, value: int = 250, shape=(60, 80)) -> list[np.ndarray]:
    """A block that appears in frame t only: with no blur the change region is exactly that block."""
    still = np.full(shape, 50, np.uint8)
    cur = still.copy()
    cur[y:y + h, x:x + w] = value
    return [still, cur, still]


def test_moving_square_box_and_margins():
    # no blur: the change covers x 20..39 (union of the three squares), y 20..29; box = rect + 2 px each side,
    # with the reference's right/bottom edge at x+w+2, y+h+2
    assert motion_boxes(*_moving_square(), blur_ksize=1).tolist() == [[18, 18, 42, 32]]
    # the default 3x3 blur spreads each edge by one pixel
    assert motion_boxes(*_moving_square()).tolist() == [[17, 17, 43, 33]]
    assert motion_boxes(*_moving_square(), blur_ksize=1, margin=0).tolist() == [[20, 20, 40, 30]]


def test_boxes_are_clipped_to_the_frame():
    boxes = motion_boxes(*_moving_square(x0=-5, y0=0), blur_ksize=1)
    assert boxes.dtype == np.float32 and boxes.tolist() == [[0, 0, 17, 12]]


def test_static_scene_gives_no_box():
    still = np.full((60, 80), 90, np.uint8)
    assert motion_boxes(still, still, still).shape == (0, 4)


def test_area_filter_is_strict_on_w_plus_1_times_h_plus_1():
    assert len(motion_boxes(*_flash(10, 10, 9, 9), blur_ksize=1)) == 0  # (9+1)*(9+1) = 100, not > 100
    assert len(motion_boxes(*_flash(10, 10, 10, 10), blur_ksize=1)) == 1
    assert len(motion_boxes(*_flash(10, 10, 2, 2))) == 0  # a tiny blob even after the blur


def test_long_thin_streak_is_dropped_by_aspect():
    assert len(motion_boxes(*_flash(30, 5, 3, 30), blur_ksize=1)) == 0  # 30/3 = 10, not < 10
    assert len(motion_boxes(*_flash(30, 5, 3, 29), blur_ksize=1)) == 1
    assert len(motion_boxes(*_flash(5, 30, 30, 3), blur_ksize=1)) == 0  # and upright


def test_frame_difference_does_not_wrap_around():
    # |0-200| + |200-0| = 400: in uint8 (as in the reference) it would wrap to 144
    prev, cur, nxt = _flash(10, 10, 20, 20, value=200)
    prev[:], nxt[:] = 0, 0
    assert len(motion_boxes(prev, cur, nxt, blur_ksize=1, threshold=300)) == 1
    assert len(motion_boxes(prev, cur, nxt, blur_ksize=1, threshold=400)) == 0  # strictly greater


def test_colour_frames_count_a_pixel_when_any_channel_changes():
    grey = _moving_square()
    bgr = [np.repeat(f[..., None], 3, axis=2) for f in grey]
    assert motion_boxes(*bgr).tolist() == motion_boxes(*grey).tolist()
    for f in bgr:
        f[..., :2] = 50  # the square is now visible in the red channel only
    assert motion_boxes(*bgr).tolist() == motion_boxes(*grey).tolist()


def test_exclusion_boxes_are_enlarged_by_the_margin():
    frames = _moving_square()  # change at x 20..39, y 20..29 (no blur)
    assert len(motion_boxes(*frames, blur_ksize=1, exclude=np.array([[22, 22, 37, 27]], np.float32))) == 0
    # the exclusion box x 10..25.7 is truncated to 25 and enlarged to 8..27: the change left is x 28..39
    cut = motion_boxes(*frames, blur_ksize=1, exclude=np.array([[10, 0, 25.7, 59]], np.float32))
    assert cut.tolist() == [[26, 18, 42, 32]]


def test_video_motion_boxes_matches_frame_triples_with_repeated_ends():
    rng = np.random.default_rng(0)
    video = np.stack([np.roll(_moving_square()[0], 10 * t, axis=1) for t in range(5)])
    video = np.clip(video + rng.integers(0, 3, video.shape), 0, 255).astype(np.uint8)
    exclude = [np.zeros((0, 4), np.float32)] * 5
    exclude[2] = np.array([[0, 0, 79, 59]], np.float32)
    got = video_motion_boxes(video, min_area=30, exclude=exclude)
    for t in range(5):
        prev, nxt = video[max(t - 1, 0)], video[min(t + 1, 4)]
        want = motion_boxes(prev, video[t], nxt, min_area=30, exclude=exclude[t])
        assert got[t].tolist() == want.tolist(), t
    assert len(got[0]) == 1 and len(got[2]) == 0
    assert video_motion_boxes(video[:0]) == []


def test_remove_covered():
    boxes = np.array([[0, 0, 100, 100],  # large
                      [10, 10, 20, 20],  # inside the large one: dropped
                      [90, 90, 130, 130],  # 121 of its 1681 px inside: kept
                      [95, 0, 115, 20],  # 126 of 441 px inside: kept
                      [200, 200, 210, 210], [200, 200, 210, 210]], np.float32)  # duplicates: one survives
    kept = remove_covered(boxes, 0.6)
    assert kept.tolist() == [[200, 200, 210, 210], [95, 0, 115, 20], [90, 90, 130, 130], [0, 0, 100, 100]]
    assert remove_covered(np.zeros((0, 4), np.float32)).shape == (0, 4)
    assert len(remove_covered(boxes[[2, 3]], 0.05)) == 2  # they do not overlap each other


def test_filter_boxes():
    boxes = np.array([[0, 0, 9, 9], [0, 0, 8, 9], [0, 0, 20, 20]], np.float32)  # areas 100, 90, 441
    assert box_areas(boxes).tolist() == [100, 90, 441]
    kept = filter_boxes(boxes, np.array([0.9, 0.9, 0.5]), score_thr=0.5, min_area=100)
    assert kept.dtype == np.float32 and kept.tolist() == [[0, 0, 9, 9]]  # score must exceed 0.5


def test_merge_boxes_unites_sources_per_frame():
    a = [np.zeros((1, 4), np.float32), np.zeros((0, 4), np.float32)]
    b = [np.ones((2, 4), np.float32), np.ones((1, 4), np.float32)]
    merged = merge_boxes(a, b)
    assert [len(x) for x in merged] == [3, 1] and merged[0].dtype == np.float32
    with pytest.raises(ValueError, match="different numbers of frames"):
        merge_boxes(a, b[:1])


def test_fragments_touching_a_detection_are_joined_into_it():
    """A person's legs boxed by the frame differences just under its detection join the detection; a fragment that
    touches two detections joins the larger; a small object far from any detection, and a large one beside a
    person (more than a quarter of its area: a cart, a bicycle of its own), stay objects of their own."""
    person, child = [10, 10, 30, 60], [33, 30, 43, 50]  # 1000 and 200 px
    legs, far, cart, between = [12, 62, 28, 70], [70, 70, 76, 76], [31, 10, 50, 25], [30, 50, 33, 55]
    detections = [np.array([person, child], np.float32), np.array([person], np.float32)]
    motion = [np.array([legs, far, between], np.float32), np.array([cart], np.float32)]
    joined, kept = join_fragments(detections, motion)
    assert joined[0].tolist() == [[10, 10, 33, 70], child] and kept[0].tolist() == [far]
    assert joined[1].tolist() == [person] and kept[1].tolist() == [cart]  # 285 px: more than a quarter of 1000
    assert detections[0].tolist() == [person, child]  # the inputs are not changed
    empty = join_fragments([np.zeros((0, 4), np.float32)], [np.array([far], np.float32)])
    assert empty[0][0].shape == (0, 4) and empty[1][0].tolist() == [far]


# ------------------------------------------------------------------------------------------ box files

def test_real_ped2_box_file():
    per_video = load_box_file(PED2_BOXES, PED2_LENGTHS)
    assert [len(v) for v in per_video] == PED2_LENGTHS
    frames = [b for v in per_video for b in v]
    assert len(frames) == 2010 and sum(len(b) for b in frames) == 34715
    assert all(b.dtype == np.float32 and b.ndim == 2 and b.shape[1] == 4 and len(b) for b in frames)
    raw = np.load(PED2_BOXES)
    assert np.array_equal(per_video[1][0], raw["boxes_xyxy"][raw["global_frame"] == 180])


def _write_boxes(path: Path, boxes, frames, lengths) -> Path:
    np.savez(path, boxes_xyxy=np.asarray(boxes, np.float32).reshape(-1, 4),
             global_frame=np.asarray(frames, np.int32), video_lengths=np.asarray(lengths, np.int32))
    return path


def test_box_file_groups_unsorted_boxes_by_video_and_frame(tmp_path):
    path = _write_boxes(tmp_path / "b.npz", [[4, 4, 8, 8], [0, 0, 5, 5], [1, 1, 6, 6]], [3, 0, 3], [2, 2])
    per_video = load_box_file(path, [2, 2])
    assert [[len(b) for b in v] for v in per_video] == [[1, 0], [0, 2]]
    assert per_video[1][1].tolist() == [[4, 4, 8, 8], [1, 1, 6, 6]]


def test_box_file_errors(tmp_path):
    with pytest.raises(RegionError, match="not found.*missing.npz"):
        load_box_file(tmp_path / "missing.npz", [3])
    empty = _write_boxes(tmp_path / "empty.npz", [], [], [3])
    with pytest.raises(RegionError, match="empty.npz: empty box file"):
        load_box_file(empty, [3])
    with pytest.raises(RegionError, match=r"do not match.*\[10, 10\]") as err:
        load_box_file(PED2_BOXES, [10, 10])
    assert "[180, 180, 150" in str(err.value)  # both lengths are named
    with pytest.raises(RegionError, match="out of range"):
        load_box_file(_write_boxes(tmp_path / "range.npz", [[0, 0, 5, 5]], [3], [3]), [3])
    np.savez(tmp_path / "keys.npz", boxes=np.zeros((1, 4)))
    with pytest.raises(RegionError, match=r"keys.npz: missing arrays \['boxes_xyxy'"):
        load_box_file(tmp_path / "keys.npz", [3])
    (tmp_path / "junk.npz").write_text("not an archive")
    with pytest.raises(RegionError, match="junk.npz: not a readable npz"):
        load_box_file(tmp_path / "junk.npz", [3])


# ------------------------------------------------------------------------------------------ YOLO

@pytest.fixture(scope="module")
def offline_yolo_weights(tmp_path_factory):
    """An untrained YOLOv8n built from ultralytics' bundled yaml and saved locally, with the network blocked.

    Yields the weights path and the list of network calls attempted (each one is refused).
    """
    import torch
    import ultralytics  # noqa: F401 - tools/dev.sh installs it; a missing install must fail, not skip

    folder = tmp_path_factory.mktemp("yolo")
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network blocked by the test")

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("YOLO_OFFLINE", "1")
        mp.setenv("YOLO_CONFIG_DIR", str(folder / "settings"))
        for name in ("getaddrinfo", "create_connection"):
            mp.setattr(socket, name, refuse)
        mp.setattr(socket.socket, "connect", refuse)
        from ultralytics import YOLO

        torch.manual_seed(0)
        weights = folder / "yolov8n-untrained.pt"
        YOLO("yolov8n.yaml").save(weights)
        yield weights, attempts


def test_yolo_detector_loads_local_weights_offline(offline_yolo_weights):
    weights, attempts = offline_yolo_weights
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (2, 96, 128), dtype=np.uint8)
    # random weights give low scores: a zero score threshold lets boxes through to exercise the filters
    detector = YoloDetector(weights, score_thr=0.0, min_area=100.0, imgsz=128, batch=1, allow_pickle=True)
    per_frame = detector.detect(grey)
    assert len(per_frame) == 2 and sum(len(b) for b in per_frame) > 0
    for boxes in per_frame:
        assert boxes.dtype == np.float32 and boxes.ndim == 2 and boxes.shape[1] == 4
        assert np.all(box_areas(boxes) >= 100.0)
        assert len(remove_covered(boxes, 0.6)) == len(boxes)  # nothing left that is mostly covered
    bgr = np.repeat(grey[..., None], 3, axis=3)
    assert [b.tolist() for b in detector.detect(bgr)] == [b.tolist() for b in per_frame]
    strict = YoloDetector(weights, score_thr=0.5, imgsz=128, allow_pickle=True).detect(grey)
    assert [b.shape for b in strict] == [(0, 4), (0, 4)]  # an untrained model is never confident
    assert attempts == []


def test_yolo_detector_errors(tmp_path):
    with pytest.raises(RegionError, match="not found.*nowhere.pt"):
        YoloDetector(tmp_path / "nowhere.pt")
    (tmp_path / "yolov8n.yaml").write_text("nc: 80")
    with pytest.raises(RegionError, match="not trained weights"):
        YoloDetector(tmp_path / "yolov8n.yaml")
    import ultralytics  # noqa: F401
    (tmp_path / "junk.pt").write_text("not a model")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("YOLO_OFFLINE", raising=False)
        with pytest.raises(RegionError, match="junk.pt: cannot be loaded"):
            YoloDetector(tmp_path / "junk.pt", allow_pickle=True)
        assert "YOLO_OFFLINE" not in os.environ  # offline while ultralytics ran, the environment restored after


class _Payload:
    """Unpickling this runs code: it creates the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_a_crafted_yolo_pt_never_runs_without_the_opt_in(tmp_path, capsys):
    from pipelines.video.cli import main as vad
    from tests.layouts import frames, write_frames

    marker, weights = tmp_path / "pwned", tmp_path / "model.pt"
    torch.save({"model": _Payload(marker)}, weights)
    with pytest.raises(RegionError, match="model.pt: refusing to load an ultralytics .pt file.*unsafe_pickle=true"):
        YoloDetector(weights)
    write_frames(tmp_path / "videos" / "clip", frames(8))
    code = vad(["run", "--videos", str(tmp_path / "videos"), "--out", str(tmp_path / "run"), "--quiet",
                "--cache", str(tmp_path / "cache"), "--set", "regions.sources=[detector,motion]",
                "--set", f"regions.detector_weights={weights}"])
    assert code == 2 and "refusing to load an ultralytics .pt file" in capsys.readouterr().err
    assert not marker.exists()


def test_box_files_with_float_frames_or_no_bytes_name_the_file(tmp_path):
    float_frames = tmp_path / "float.npz"
    np.savez(float_frames, boxes_xyxy=np.array([[1, 1, 5, 5]], np.float32), global_frame=np.array([0.0]),
             video_lengths=np.array([3]))
    with pytest.raises(RegionError, match="float.npz: global_frame must hold integer frame indices, not float64"):
        load_box_file(float_frames, [3])
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    with pytest.raises(RegionError, match="empty.npz: not a readable npz box file \\(empty file\\)"):
        load_box_file(empty, [3])
