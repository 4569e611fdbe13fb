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
