from pathlib import Path

import numpy as np
import pytest

from vad.regions import (RegionError, YoloDetector, load_box_file, merge_boxes, motion_boxes, remove_covered,
                         video_motion_boxes)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
PED2_LENGTHS = [180, 180, 150, 180, 150, 180, 180, 180, 120, 150, 180, 180]


def _triple(x0: int, step: int, size=(10, 10), bg: int = 50, fg: int = 250):
    out = []
    for i in range(3):
        f = np.full((60, 80), bg, np.uint8)
        x = x0 + i * step
        f[20:20 + size[0], x:x + size[1]] = fg
        out.append(f)
    return out


def test_moving_square_gives_one_box_with_margin():
    boxes = motion_boxes(*_triple(20, 4), blur_ksize=3, threshold=18, min_area=50, margin=2)
    assert boxes.shape == (1, 4)
    x1, y1, x2, y2 = boxes[0]
    assert x1 <= 20 and x2 >= 38 and y1 <= 20 and y2 >= 30  # covers the square in all three frames
    assert x1 >= 14 and y1 >= 14 and x2 <= 44 and y2 <= 36  # but not much more (blur + 2 px margin)


def test_static_scene_and_tiny_or_thin_changes_give_no_box():
    static = [np.full((60, 80), 90, np.uint8)] * 3
    assert len(motion_boxes(*static)) == 0
    assert len(motion_boxes(*_triple(20, 1, size=(2, 2)), min_area=100)) == 0
    streak = [np.full((60, 80), 50, np.uint8) for _ in range(3)]
    streak[1][30:31, 2:78] = 250  # a one-pixel line 76 px long: aspect ratio > 10
    assert len(motion_boxes(*streak, blur_ksize=1, min_area=10)) == 0


def test_frame_difference_does_not_wrap_around():
    # |0-200| + |200-0| = 400 would wrap to 144 in uint8; a threshold of 300 must still fire
    a = np.zeros((40, 40), np.uint8)
    b = a.copy()
    b[10:30, 10:30] = 200
    assert len(motion_boxes(a, b, a, threshold=300, blur_ksize=1)) == 1


def test_exclusion_boxes_mask_motion():
    triple = _triple(20, 4)
    assert len(motion_boxes(*triple, exclude=np.array([[10, 10, 50, 40]], np.float32))) == 0


def test_video_motion_boxes_repeats_edge_frames():
    video = np.stack(_triple(20, 4) * 2)
    boxes = video_motion_boxes(video, min_area=50)
    assert len(boxes) == 6 and all(len(b) >= 1 for b in boxes)


def test_remove_covered():
    boxes = np.array([[0, 0, 100, 100], [10, 10, 20, 20], [90, 90, 130, 130], [200, 200, 210, 210]], np.float32)
    kept = remove_covered(boxes, 0.6)
    assert {tuple(b) for b in kept.tolist()} == {(0, 0, 100, 100), (90, 90, 130, 130), (200, 200, 210, 210)}


def test_merge_boxes_unites_sources():
    a = [np.zeros((1, 4), np.float32), np.zeros((0, 4), np.float32)]
    b = [np.ones((2, 4), np.float32), np.ones((1, 4), np.float32)]
    assert [len(x) for x in merge_boxes(a, b)] == [3, 1]


def test_real_ped2_box_file():
    per_video = load_box_file(SHARED / "ucsd_ped2_vec_boxes" / "ped2_test_boxes.npz", PED2_LENGTHS)
    assert [len(v) for v in per_video] == PED2_LENGTHS
    assert sum(len(b) for v in per_video for b in v) == 34715


def test_box_file_errors(tmp_path):
    with pytest.raises(RegionError, match="not found"):
        load_box_file(tmp_path / "missing.npz", [3])
    empty = tmp_path / "empty.npz"
    np.savez(empty, boxes_xyxy=np.zeros((0, 4), np.float32), global_frame=np.zeros(0, np.int32),
             video_lengths=np.array([3]))
    with pytest.raises(RegionError, match="empty box file"):
        load_box_file(empty, [3])
    with pytest.raises(RegionError, match="do not match"):
        load_box_file(SHARED / "ucsd_ped2_vec_boxes" / "ped2_test_boxes.npz", [10, 10])


def test_detector_missing_weights(tmp_path):
    with pytest.raises(RegionError, match="not found"):
        YoloDetector(tmp_path / "yolo.pt")
