"""tools/make_exposure_crops.py: an outlier-exposure corpus cut from videos, in the `folders` image-set layout."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from image_od.data.benchmarks import load_dataset
from tests.tools import load_tool


def _tool():
    return load_tool("make_exposure_crops")


def _frames(folder: Path, n: int, h: int = 60, w: int = 80) -> None:
    """n colour frames whose pixel (r, c) of frame t is (t, r, c): a crop says where it came from."""
    folder.mkdir(parents=True)
    rows, cols = np.mgrid[0:h, 0:w]
    for t in range(n):
        cv2.imwrite(str(folder / f"{t:03d}.png"), np.stack([np.full((h, w), t), rows, cols], -1).astype(np.uint8))


def test_plan_stays_inside_the_frames_and_is_seeded():
    tool = _tool()
    plans = tool.plan_crops([10, 30], [(60, 80), (40, 50)], 200, 8, 30, seed=3)
    assert sum(map(len, plans)) == 200 and len(plans[1]) > len(plans[0])  # drawn in proportion to frame counts
    for plan, n, (h, w) in zip(plans, [10, 30], [(60, 80), (40, 50)]):
        assert plan == sorted(plan)
        for frame, top, left, side in plan:
            assert 0 <= frame < n and 8 <= side <= min(30, h, w) and top + side <= h and left + side <= w
    assert plans == tool.plan_crops([10, 30], [(60, 80), (40, 50)], 200, 8, 30, seed=3)
    with pytest.raises(ValueError, match="min-side 70"):
        tool.plan_crops([10], [(60, 80)], 5, 70, None, seed=0)


def test_writes_a_folders_image_set_of_the_planned_crops(tmp_path):
    tool = _tool()
    _frames(tmp_path / "videos" / "a", 6)
    _frames(tmp_path / "videos" / "b", 4)
    out = tmp_path / "corpus"
    info = tool.main(["--video", str(tmp_path / "videos"), "--n", "12", "--min-side", "32", "--max-side", "32",
                      "--out", str(out)])
    assert info["n"] == 12 and info["test"] == 6 and json.loads((out / "exposure.json").read_text())["n"] == 12
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".corpus")]  # no temporary folder left
    data = load_dataset("folders", out)
    assert data.train_images.shape == (6, 32, 32, 3) and data.test_images.shape == (6, 32, 32, 3)
    # side 32 = no resizing: each crop is a window of one frame (blue = frame index, green = row, red = column)
    blue, green, red = (data.train_images[..., c].astype(int) for c in (2, 1, 0))
    assert np.all(blue == blue[:, :1, :1]) and blue.max() < 6
    assert np.all(np.diff(green, axis=1) == 1) and np.all(np.diff(red, axis=2) == 1)
    with pytest.raises(SystemExit, match="exists"):
        tool.main(["--video", str(tmp_path / "videos"), "--out", str(out)])
