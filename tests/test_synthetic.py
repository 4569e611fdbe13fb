"""The generated UCSD-layout test set: layout, labels, determinism, atomic writing, and that motion boxes see it."""
import re

import cv2
import numpy as np
import pytest

from vad import synthetic
from vad.regions import video_motion_boxes
from vad.synthetic import label_ranges, make_background, make_synthetic_ucsd, synthetic_video

N_VIDEOS, N_FRAMES, SIZE, SEED = 2, 30, (160, 120), 3


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    return make_synthetic_ucsd(tmp_path_factory.mktemp("syn") / "set", n_videos=N_VIDEOS, n_frames=N_FRAMES,
                               size=SIZE, seed=SEED)


def _m_ranges(m_file) -> list[list[tuple[int, int]]]:
    """The ranges of each ``gt_frame = [a:b, ...]`` line."""
    lines = re.findall(r"^TestVideoFile\{end\+1\}\.gt_frame = \[(.*)\];$", m_file.read_text(), re.M)
    return [[tuple(map(int, r.split(":"))) for r in line.split(", ")] for line in lines]


def _generated(v: int) -> tuple[np.ndarray, np.ndarray]:
    return synthetic_video(make_background(SIZE, SEED), N_FRAMES, seed=(SEED, v))


def test_layout_and_file_names(tiny_set):
    assert sorted(p.name for p in tiny_set.iterdir()) == ["Test"]  # no temporary folder left behind
    test = tiny_set / "Test"
    assert sorted(p.name for p in test.iterdir()) == ["Test001", "Test002", "UCSDsynth.m"]
    for v in (1, 2):
        names = sorted(p.name for p in (test / f"Test{v:03d}").iterdir())
        assert names == [f"{t:03d}.tif" for t in range(1, N_FRAMES + 1)]
    frame = cv2.imread(str(test / "Test002" / "017.tif"), cv2.IMREAD_UNCHANGED)
    assert frame.dtype == np.uint8 and frame.shape == (SIZE[1], SIZE[0])  # grey 8-bit, size is (width, height)


def test_frames_and_m_file_match_what_was_generated(tiny_set):
    per_video = _m_ranges(tiny_set / "Test" / "UCSDsynth.m")
    assert len(per_video) == N_VIDEOS
    for v, ranges in enumerate(per_video, 1):
        frames, labels = _generated(v)
        assert ranges == label_ranges(labels)
        ends = [t for r in ranges for t in r]
        assert ends == sorted(ends) and 1 <= ends[0] and ends[-1] <= N_FRAMES
        assert all(b >= a for a, b in ranges) and all(c > b + 1 for (_, b), (c, _) in zip(ranges, ranges[1:]))
        on_disk = cv2.imread(str(tiny_set / "Test" / f"Test{v:03d}" / "005.tif"), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(on_disk, frames[4])


def test_both_classes_in_every_video(tiny_set):
    for ranges in _m_ranges(tiny_set / "Test" / "UCSDsynth.m"):
        abnormal = sum(b - a + 1 for a, b in ranges)
        assert 0.3 <= abnormal / N_FRAMES <= 0.5


def test_same_seed_same_bytes(tiny_set, tmp_path):
    again = make_synthetic_ucsd(tmp_path / "again", n_videos=1, n_frames=N_FRAMES, size=SIZE, seed=SEED)
    other = make_synthetic_ucsd(tmp_path / "other", n_videos=1, n_frames=N_FRAMES, size=SIZE, seed=SEED + 1)
    frame = "Test/Test001/012.tif"
    assert (again / frame).read_bytes() == (tiny_set / frame).read_bytes()
    assert (other / frame).read_bytes() != (tiny_set / frame).read_bytes()
    header_and_first = (tiny_set / "Test" / "UCSDsynth.m").read_text().splitlines()[:2]
    assert (again / "Test" / "UCSDsynth.m").read_text().splitlines() == header_and_first


def test_label_ranges():
    assert label_ranges(np.array([1, 1, 0, 0, 1, 0, 1, 1, 1])) == [(1, 2), (5, 5), (7, 9)]
    assert label_ranges(np.zeros(4)) == []


def test_motion_boxes_find_the_movers():
    frames, labels = synthetic_video(make_background(SIZE, 0), 60, seed=(0, 1))
    has_box = np.array([len(b) > 0 for b in video_motion_boxes(frames)])
    assert has_box.mean() >= 0.9
    assert has_box[labels == 0].mean() >= 0.8  # the walkers alone are seen


def test_existing_set_is_not_overwritten(tiny_set):
    with pytest.raises(FileExistsError, match="Test exists"):
        make_synthetic_ucsd(tiny_set)


def test_failed_write_leaves_nothing_behind(tmp_path, monkeypatch):
    calls = []

    def fail_on_third(path, img):
        calls.append(path)
        return len(calls) < 3

    monkeypatch.setattr(synthetic.cv2, "imwrite", fail_on_third)
    with pytest.raises(OSError, match="cannot write"):
        make_synthetic_ucsd(tmp_path / "broken", n_videos=1, n_frames=N_FRAMES)
    assert list((tmp_path / "broken").iterdir()) == []
