"""tools/plant_anomalies.py: walkers copied into another clip at three times their speed (or at their own pace, the
control), with the labels."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from tests.tools import load_tool
from vad.readers import open_dataset


def _footage(tmp_path):
    """60 frames of a textured street with two walkers, one per half: A walks right in frames 2-25, B left in
    32-55, 2 pixels a frame; and the run's tracks of them (boxes of 8 x 16 pixels)."""
    rng = np.random.default_rng(0)
    street = rng.integers(90, 110, (96, 128, 3)).astype(np.uint8)
    rows = []
    writer = cv2.VideoWriter(str(tmp_path / "street.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10, (128, 96))
    for t in range(60):
        frame = street.copy()
        for track, (first, y, x0, step) in enumerate([(2, 20, 10, 2), (32, 60, 100, -2)]):
            if first <= t < first + 24:
                x = x0 + step * (t - first)
                frame[y:y + 16, x:x + 8] = 230
                rows.append((t, x, y, x + 8, y + 16, track))
        writer.write(frame)
    writer.release()
    run = tmp_path / "run"
    run.mkdir()
    rows = np.array(rows, np.float32)
    np.savez(run / "cube_scores.npz", video=np.zeros(len(rows), np.int64), frame=rows[:, 0].astype(np.int64),
             boxes=rows[:, 1:5], track=rows[:, 5].astype(np.int64))
    return tmp_path / "street.avi", run


def test_a_walker_is_copied_into_the_next_clip_three_times_as_fast(tmp_path):
    tool = load_tool("plant_anomalies")
    video, run = _footage(tmp_path)
    out = tmp_path / "planted"
    tool.main(["--video", str(video), "--run", str(run), "--out", str(out), "--clips", "2", "--min-frames", "12"])
    frames = tool.read_video(video)
    clips = open_dataset(out)
    assert [v.name for v in clips] == ["Test001", "Test002"]
    # each walker lasts 24 frames from offset 2: at 3x it crosses in frames 2..9 of the other clip
    assert [np.flatnonzero(v.labels).tolist() for v in clips] == [list(range(2, 10))] * 2
    planted = np.stack([cv2.imread(str(p)) for p in sorted((out / "Test" / "Test002").glob("*.png"))])
    for t in range(30):
        if not 2 <= t <= 9:
            assert np.array_equal(planted[t], frames[30 + t])  # nothing else touched
            continue
        u = 2 + 3 * (t - 2)  # walker A as it was in frame u of the first clip
        x = 10 + 2 * (u - 2)
        assert np.array_equal(planted[t, 22:34, x + 1:x + 7], frames[u, 22:34, x + 1:x + 7])
        assert planted[t, 22:34, x + 1:x + 7].mean() > 200 and frames[30 + t, 22:34, x + 1:x + 7].mean() < 150
    control = tmp_path / "control"  # the same walker over the same frames at its own pace: the same labels
    tool.main(["--video", str(video), "--run", str(run), "--out", str(control), "--clips", "2", "--min-frames", "12",
               "--control"])
    assert [v.labels.tolist() for v in open_dataset(control)] == [v.labels.tolist() for v in clips]
    pasted = cv2.imread(str(control / "Test" / "Test002" / "010.png"))  # frame 9: walker A as in frame 9
    assert np.array_equal(pasted[22:34, 25:31], frames[9, 22:34, 25:31]) and pasted[22:34, 25:31].mean() > 200
    record = json.loads((out / "planted.json").read_text())
    assert [c["walker_track"] for c in record["clips"]] == [1, 0] and not (tmp_path / "planted.partial").exists()
    with pytest.raises(SystemExit, match="exists"):
        tool.main(["--video", str(video), "--run", str(run), "--out", str(out), "--clips", "2"])
    with pytest.raises(SystemExit, match="no cube_scores.npz"):
        tool.main(["--video", str(video), "--run", str(tmp_path), "--out", str(tmp_path / "none"), "--clips", "2"])
    with pytest.raises(SystemExit, match="no track"):
        tool.main(["--video", str(video), "--run", str(run), "--out", str(tmp_path / "none"), "--clips", "2"])


def test_several_footages_are_planted_into_one_set_and_one_without_a_walker_is_skipped(tmp_path):
    tool = load_tool("plant_anomalies")
    video, run = _footage(tmp_path)
    short = tmp_path / "short_run"  # the same footage, but its tracks last 10 frames: no walker to copy
    short.mkdir()
    with np.load(run / "cube_scores.npz") as f:
        keep = np.isin(f["frame"], np.r_[2:12, 32:42])
        np.savez(short / "cube_scores.npz", **{k: f[k][keep] for k in f.files})
    out = tmp_path / "planted"
    tool.main(["--video", str(video), str(video), str(video), "--run", str(run), str(short), str(run), "--out",
               str(out), "--clips", "2", "--min-frames", "12"])
    clips = open_dataset(out)
    assert [v.name for v in clips] == ["Test001", "Test002", "Test003", "Test004"]
    assert [np.flatnonzero(v.labels).tolist() for v in clips] == [list(range(2, 10))] * 4
    record = json.loads((out / "planted.json").read_text())
    assert record["runs"] == [str(run), str(short), str(run)] and len(record["clips"]) == 4
    with pytest.raises(SystemExit, match="one run per footage"):
        tool.main(["--video", str(video), str(video), "--run", str(run), "--out", str(tmp_path / "x")])
    with pytest.raises(SystemExit, match="no footage could be planted"):
        tool.main(["--video", str(video), str(video), "--run", str(short), str(short), "--out", str(tmp_path / "x"),
                   "--clips", "2", "--min-frames", "12"])
