"""tools/resize_dataset.py: a UCSD or Avenue copy at another frame size, with its labels and scaled box files."""
from __future__ import annotations

import numpy as np
import pytest

from tests.layouts import frames, write_avenue, write_ucsd_preprocessed
from tests.tools import load_tool
from vad.readers import open_dataset


def test_resized_ucsd_copy_keeps_labels_and_scales_boxes(tmp_path):
    tool = load_tool("resize_dataset")
    root = write_ucsd_preprocessed(tmp_path / "ped", [frames(6, h=40, w=60), frames(5, h=40, w=60, seed=1)],
                                   [[(2, 4)], [(1, 1)]])
    vec = tmp_path / "vec"
    vec.mkdir()
    np.savez(vec / "ped2_test_boxes.npz", boxes_xyxy=np.array([[0, 0, 59, 39], [30, 10, 45, 20]], np.float32),
             global_frame=np.array([0, 7]), video_lengths=np.array([6, 5]))
    tool.main(["--root", str(root), "--vec", str(vec), "--size", "30", "20", "--out", str(tmp_path / "small")])
    before, after = open_dataset(root), open_dataset(tmp_path / "small")
    assert [v.frame_shape() for v in after] == [(20, 30)] * 2
    assert all(np.array_equal(a.labels, b.labels) for a, b in zip(before, after))
    with np.load(tmp_path / "small" / "vec" / "ped2_test_boxes.npz") as boxes:
        np.testing.assert_allclose(boxes["boxes_xyxy"], [[0, 0, 29, 19], [15, 5, 22.5, 10]])
        assert boxes["global_frame"].tolist() == [0, 7] and boxes["video_lengths"].tolist() == [6, 5]
    assert not (tmp_path / "small.partial").exists()
    with pytest.raises(SystemExit, match="already exists"):
        tool.main(["--root", str(root), "--size", "30", "20", "--out", str(tmp_path / "small")])
    with pytest.raises(SystemExit, match="neither"):
        tool.main(["--root", str(tmp_path / "vec"), "--size", "30", "20", "--out", str(tmp_path / "none")])


def test_resized_avenue_copy_keeps_its_mask_labels(tmp_path):
    tool = load_tool("resize_dataset")
    root = write_avenue(tmp_path / "avenue", {"08": frames(6, h=32, w=48)}, mask_labels={8: [0, 0, 1, 1, 0, 0]})
    tool.main(["--root", str(root), "--size", "24", "16", "--out", str(tmp_path / "small")])
    before, after = open_dataset(root), open_dataset(tmp_path / "small")
    assert after[0].frame_shape() == (16, 24) and after[0].frame_count() == 6
    assert np.array_equal(before[0].labels, after[0].labels) and after[0].labels.tolist() == [0, 0, 1, 1, 0, 0]


def test_perspective_warps_frames_and_boxes_alike(tmp_path):
    tool = load_tool("resize_dataset")
    warp = tool.Perspective((120, 80), 3.0)
    assert warp.size == (73, 80)  # 120 (1 - 1/3) / ln 3 columns keep every source column
    image = np.zeros((80, 120), np.uint8)
    boxes = np.array([[2, 30, 12, 50], [100, 30, 110, 50]], np.float64)
    for x1, y1, x2, y2 in boxes.astype(int):
        image[y1:y2 + 1, x1:x2 + 1] = 255
    warped, moved = warp.image(image), warp.boxes(boxes)
    for (x1, y1, x2, y2) in moved:
        ys, xs = np.nonzero(warped[:, int(x1):int(np.ceil(x2)) + 1] > 127)
        assert abs(ys.min() - y1) <= 1 and abs(ys.max() - y2) <= 1
    heights = moved[:, 3] - moved[:, 1]
    assert heights[0] < 0.45 * 20 and heights[1] > 0.85 * 20  # far (left) objects about a third of the near ones

    root = write_ucsd_preprocessed(tmp_path / "ped", [frames(4, h=40, w=60)], [[(1, 2)]])
    vec = tmp_path / "vec"
    vec.mkdir()
    np.savez(vec / "ped2_test_boxes.npz", boxes_xyxy=np.array([[50, 10, 59, 30]], np.float32),
             global_frame=np.array([2]), video_lengths=np.array([4]))
    tool.main(["--root", str(root), "--vec", str(vec), "--perspective", "2", "--out", str(tmp_path / "far")])
    after = open_dataset(tmp_path / "far")
    assert after[0].frame_shape() == (40, 43) and after[0].labels.tolist() == open_dataset(root)[0].labels.tolist()
    with np.load(tmp_path / "far" / "vec" / "ped2_test_boxes.npz") as box_file:
        assert box_file["boxes_xyxy"][0, 2] <= 42 and box_file["boxes_xyxy"][0, 0] > 30
    with pytest.raises(SystemExit, match="nothing to do"):
        tool.main(["--root", str(root), "--out", str(tmp_path / "none")])


def test_perspective_with_the_far_side_at_the_top_is_the_transpose():
    tool = load_tool("resize_dataset")
    left, top = tool.Perspective((80, 120), 3.0), tool.Perspective((120, 80), 3.0, far="top")
    assert top.size == left.size[::-1]
    image = np.random.default_rng(0).integers(0, 255, (120, 80), np.uint8)
    np.testing.assert_array_equal(top.image(image.T), left.image(image).T)
    boxes = np.array([[5.0, 10, 20, 40], [60, 90, 75, 110]])
    np.testing.assert_allclose(top.boxes(boxes[:, [1, 0, 3, 2]]), left.boxes(boxes)[:, [1, 0, 3, 2]])
