"""Dataset readers: every on-disk layout on tiny fixtures, bad inputs, and the real shared data (labels only)."""
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest

from tests.layouts import frames, write_avenue, write_avi, write_frames, write_ucsd_official, write_ucsd_preprocessed
from vad.readers import DatasetError, Video, detect_layout, open_dataset, open_videos

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"  # ../shared/data from the repo root


def labels_of(videos: list[Video]) -> list[list[int]]:
    return [v.labels.tolist() for v in videos]


# ---------------------------------------------------------------- official UCSD

def test_ucsd_m_file_with_several_ranges_single_frames_and_empty(tmp_path):
    root = write_ucsd_official(tmp_path / "UCSDped1", [frames(8), frames(5), frames(4)],
                               [[(2, 3), (6, 8)], [(4, 4)], []])
    (root / "Test" / "Test001" / "._001.tif").write_bytes(b"macOS resource fork")  # hidden: ignored
    write_frames(root / "Test" / "Test002_gt", frames(5), ".bmp")  # a _gt folder is not a video
    assert detect_layout(root) == "ucsd"
    videos = open_dataset(root)
    assert [v.name for v in videos] == ["Test001", "Test002", "Test003"]
    assert labels_of(videos) == [[0, 1, 1, 0, 0, 1, 1, 1], [0, 0, 0, 1, 0], [0, 0, 0, 0]]
    assert videos[0].label_source.endswith("UCSDped2.m")
    assert np.array_equal(videos[0].read_frames(), frames(8))  # .tif is lossless; order 001..008
    assert [v.name for v in open_dataset(root / "Test")] == ["Test001", "Test002", "Test003"]


def test_ucsd_m_file_is_preferred_over_masks(tmp_path):
    """Ped1 has masks for only some videos: the .m file must be used even where masks exist."""
    root = write_ucsd_official(tmp_path, [frames(3)], [[(1, 1)]], masks=[np.array([0, 1, 1])])
    assert labels_of(open_dataset(root)) == [[1, 0, 0]]


def test_ucsd_bmp_masks_without_m_file(tmp_path):
    masks = [np.array([0, 1, 1, 0]), np.array([1, 0, 0])]
    root = write_ucsd_official(tmp_path, [frames(4), frames(3)], None, masks=masks)
    videos = open_dataset(root)
    assert labels_of(videos) == [m.tolist() for m in masks]
    assert "Test001_gt" in videos[0].label_source


def test_ucsd_without_any_labels(tmp_path):
    root = write_ucsd_official(tmp_path, [frames(3)], None)
    with pytest.raises(DatasetError, match=r"no labels for video Test001.*no \.m file"):
        open_dataset(root)


def test_ucsd_m_file_with_wrong_number_of_lines(tmp_path):
    root = write_ucsd_official(tmp_path, [frames(3), frames(3)], [[(1, 2)]])
    with pytest.raises(DatasetError, match=r"UCSDped2\.m: 1 gt_frame lines for 2 test videos"):
        open_dataset(root)


def test_ucsd_m_range_beyond_the_video(tmp_path):
    root = write_ucsd_official(tmp_path, [frames(3), frames(4)], [[(1, 2)], [(2, 9)]])
    with pytest.raises(DatasetError, match=r"UCSDped2\.m \(Test002\): range 2:9 .* 1\.\.4"):
        open_dataset(root)


def test_ucsd_masks_fewer_than_frames_names_the_video(tmp_path):
    root = write_ucsd_official(tmp_path, [frames(4), frames(4)], None, masks=[np.zeros(4), np.zeros(4)])
    (root / "Test" / "Test002_gt" / "004.bmp").unlink()
    with pytest.raises(DatasetError, match=r"video Test002 .*3 labels .* but 4 frames"):
        open_dataset(root)


def test_m_file_free_spacing_and_comments(tmp_path):
    root = write_ucsd_official(tmp_path, [frames(6)], ["2 : 3 5"])
    (root / "Test" / "UCSDped2.m").write_text(
        "% gt_frame = [1:6]; commented out\n" + (root / "Test" / "UCSDped2.m").read_text())
    assert labels_of(open_dataset(root)) == [[0, 1, 1, 0, 1, 0]]


def test_m_file_with_unreadable_range(tmp_path):
    root = write_ucsd_official(tmp_path, [frames(6)], ["2:end"])
    with pytest.raises(DatasetError, match=r"UCSDped2\.m: cannot read frame range '2:end'"):
        open_dataset(root)


# ---------------------------------------------------------------- preprocessed UCSD (ano_pred / MNAD)

def test_preprocessed_uint8_cell_ranges(tmp_path):
    root = write_ucsd_preprocessed(tmp_path, [frames(6), frames(5)], [[(2, 3)], [(1, 2), (5, 5)]])
    assert detect_layout(root) == "ucsd_preprocessed"
    videos = open_dataset(root)
    assert [v.name for v in videos] == ["01", "02"]
    assert labels_of(videos) == [[0, 1, 1, 0, 0, 0], [1, 1, 0, 0, 1]]
    assert videos[1].read_frames(grey=False).shape == (5, 16, 24, 3)
    assert videos[1].read_frames().dtype == np.uint8


def test_preprocessed_mat_v73_through_h5py(tmp_path):
    """A MATLAB v7.3 (HDF5) ``gt``: a cell of object references, arrays stored transposed."""
    root = write_ucsd_preprocessed(tmp_path, [frames(4), frames(3)], [[(1, 1)], [(1, 1)]])
    (root / "ped2.mat").unlink()
    with h5py.File(root / "ped2_v73.mat", "w", userblock_size=512) as f:
        refs = [f.create_dataset(f"#refs#/{i}", data=np.array(r, float)).ref  # (K,2) = MATLAB 2xK transposed
                for i, r in enumerate([[(2, 3)], [(1, 1), (3, 3)]])]
        f.create_dataset("gt", data=np.array(refs, dtype=h5py.ref_dtype)[:, None])  # MATLAB 1x2 cell
    assert labels_of(open_dataset(root)) == [[0, 1, 1, 0], [1, 0, 1]]


def test_preprocessed_gt_entries_must_match_videos(tmp_path):
    root = write_ucsd_preprocessed(tmp_path, [frames(4), frames(4)], [[(1, 2)]])
    with pytest.raises(DatasetError, match=r"ped2\.mat: 'gt' has 1 entries for 2 videos"):
        open_dataset(root)


def test_corrupt_frame_names_the_file(tmp_path):
    root = write_ucsd_preprocessed(tmp_path, [frames(4)], [[(1, 2)]])
    (root / "testing" / "frames" / "01" / "002.jpg").write_bytes(b"\xff\xd8 garbage, not a JPEG")
    video = open_dataset(root)[0]  # listing does not decode
    with pytest.raises(DatasetError, match=r"unreadable frame image: .*01/002\.jpg"):
        video.read_frames()


def test_frames_of_different_sizes(tmp_path):
    folder = write_frames(tmp_path / "clip", frames(3), ".png")
    cv2.imwrite(str(folder / "004.png"), np.zeros((8, 8), np.uint8))
    with pytest.raises(DatasetError, match="differ in size"):
        open_videos(folder)[0].read_frames()


def test_unlabeled_testing_frames_is_refused_by_open_dataset(tmp_path):
    write_frames(tmp_path / "testing" / "frames" / "01", frames(3), ".jpg")
    with pytest.raises(DatasetError, match=r"testing/frames has no labels"):
        open_dataset(tmp_path)


# ---------------------------------------------------------------- Avenue

def test_avenue_avi_with_masks_only_present_videos(tmp_path):
    masks = {2: np.array([0, 0, 1, 1, 0]), 8: np.array([1, 1, 1, 0]), 9: np.array([1])}  # video 9 absent: ignored
    root = write_avenue(tmp_path, {"02": frames(5), "08": frames(4, seed=1)}, masks,
                        npy_labels=np.zeros(10))  # masks take precedence over the .npy
    assert detect_layout(root) == "avenue"
    videos = open_dataset(root)
    assert [v.name for v in videos] == ["02", "08"]
    assert labels_of(videos) == [[0, 0, 1, 1, 0], [1, 1, 1, 0]]
    assert videos[1].label_source.endswith("8_label.mat")
    grey = videos[0].read_frames()
    assert grey.shape == (5, 16, 24) and np.abs(grey.astype(int) - frames(5)).mean() < 8  # MJPG is lossy
    assert videos[0].read_frames(grey=False).shape == (5, 16, 24, 3)


def test_avenue_mask_count_differs_from_frames(tmp_path):
    root = write_avenue(tmp_path, {"03": frames(5)}, {3: np.zeros(4)})
    with pytest.raises(DatasetError, match=r"video 03 .*4 labels .* but 5 frames"):
        open_dataset(root)


def test_avenue_frames_with_npy_when_all_videos_present(tmp_path):
    root = write_avenue(tmp_path, {"01": frames(4), "02": frames(3)}, npy_labels=[0, 1, 1, 0, 1, 0, 0],
                        as_frames=True)
    assert detect_layout(root) == "avenue"
    videos = open_dataset(root)
    assert labels_of(videos) == [[0, 1, 1, 0], [1, 0, 0]]
    assert videos[0].label_source.startswith("avenue_npy:")


def test_avenue_npy_total_must_match(tmp_path):
    root = write_avenue(tmp_path, {"01": frames(4), "02": frames(3)}, npy_labels=[0, 1, 1], as_frames=True)
    with pytest.raises(DatasetError, match=r"3 concatenated labels but the 2 test videos have 7 frames"):
        open_dataset(root)


def test_avenue_npy_of_partial_set_split_by_mask_lengths(tmp_path):
    masks = {1: np.zeros(2), 2: np.zeros(3), 3: np.zeros(2)}
    root = write_avenue(tmp_path, {"02": frames(3)}, masks, npy_labels=[1, 1, 0, 1, 0, 1, 1], as_frames=True)
    assert labels_of(open_dataset(root, avenue_labels="npy")) == [[0, 1, 0]]
    assert labels_of(open_dataset(root)) == [[0, 0, 0]]  # auto: the masks


def test_avenue_npy_of_partial_set_without_lengths(tmp_path):
    root = write_avenue(tmp_path, {"02": frames(3)}, npy_labels=[1, 1, 0, 1, 0, 1, 1], as_frames=True)
    with pytest.raises(DatasetError, match=r"cannot split its 7 concatenated labels by video: only videos 02"):
        open_dataset(root)


# ---------------------------------------------------------------- unlabeled videos

def test_open_videos_file_frame_folder_and_mixed_folder(tmp_path):
    write_avi(tmp_path / "cams" / "cam1.avi", frames(5))
    write_frames(tmp_path / "cams" / "clip", frames(3), ".png")
    (tmp_path / "cams" / "notes.txt").write_text("not a video")
    videos = open_videos(tmp_path / "cams")
    assert {v.name: v.frame_count() for v in videos} == {"cam1": 5, "clip": 3}
    assert all(v.labels is None for v in videos)
    assert open_videos(tmp_path / "cams" / "cam1.avi")[0].read_frames().shape == (5, 16, 24)
    assert [v.name for v in open_dataset(tmp_path / "cams" / "clip")] == ["clip"]
    assert detect_layout(tmp_path / "cams") == "videos"


def test_frame_shape_reads_the_first_frame_once(tmp_path, monkeypatch):
    """The run's set-up and each video's extraction both ask a video's size: its first frame is read once."""
    import vad.readers as readers

    write_avi(tmp_path / "cam1.avi", frames(4))
    video = open_videos(tmp_path / "cam1.avi")[0]
    reads = []
    opened = readers.cv2.VideoCapture
    monkeypatch.setattr(readers.cv2, "VideoCapture", lambda *a: reads.append(a) or opened(*a))
    assert video.frame_shape() == video.frame_shape() == (16, 24) and len(reads) == 1


def test_open_videos_from_several_paths_refuses_two_videos_of_one_name(tmp_path):
    """Several paths (a shell glob) give their videos in order; a video's name names its output rows and its cache
    entry, so two of one name (cam1.avi beside cam1.mp4, or the same clip in two folders) are refused, naming both."""
    write_avi(tmp_path / "a" / "cam1.avi", frames(5))
    write_frames(tmp_path / "b" / "cam2", frames(3), ".png")
    videos = open_videos([tmp_path / "a" / "cam1.avi", str(tmp_path / "b")])
    assert [(v.name, v.frame_count()) for v in videos] == [("cam1", 5), ("cam2", 3)]
    write_avi(tmp_path / "c" / "cam1.avi", frames(4))
    with pytest.raises(DatasetError, match=r"two videos would both be called 'cam1' .*a/cam1.avi and .*c/cam1.avi"):
        open_videos([tmp_path / "a", tmp_path / "c"])
    write_avi(tmp_path / "a" / "cam1.mp4", frames(4))
    with pytest.raises(DatasetError, match=r"'cam1' .*cam1.avi and .*cam1.mp4|'cam1' .*cam1.mp4 and .*cam1.avi"):
        open_videos(tmp_path / "a")


def test_a_run_records_its_videos_by_absolute_path(tmp_path, monkeypatch):
    """videos.json keeps absolute paths, so that `vad report`, `render` and `plot` find the frames from any working
    directory after a run given relative paths (they failed with 'No such file or directory: ../data/...')."""
    from pipelines.video.stages import _video_set
    from vad.cache import CubeCache

    write_frames(tmp_path / "data" / "clip", frames(3), ".png")
    monkeypatch.chdir(tmp_path / "data")
    info = _video_set("clip", open_videos("clip"), CubeCache(tmp_path / "cache", {}))
    assert info["videos"][0]["path"] == str((tmp_path / "data" / "clip").resolve())
    assert info["source"] == str((tmp_path / "data" / "clip").resolve())


def test_frame_images_in_natural_order(tmp_path):
    folder = tmp_path / "clip"
    folder.mkdir()
    for t in range(1, 11):  # 1.png ... 10.png: "10" sorts after "9", not after "1"
        cv2.imwrite(str(folder / f"{t}.png"), np.full((4, 6), t, np.uint8))
    assert open_videos(folder)[0].read_frames()[:, 0, 0].tolist() == list(range(1, 11))


def test_ffmpeg_fallback_when_opencv_cannot_open(tmp_path, monkeypatch):
    path = write_avi(tmp_path / "cam.avi", frames(6))

    class ClosedCapture:
        def __init__(self, *args):
            pass

        def isOpened(self) -> bool:
            return False

        def release(self) -> None:
            pass

    monkeypatch.setattr(cv2, "VideoCapture", ClosedCapture)
    video = open_videos(path)[0]
    assert video.frame_count() == 6
    grey = video.read_frames()
    assert grey.shape == (6, 16, 24) and np.abs(grey.astype(int) - frames(6)).mean() < 8
    assert video.read_frames(grey=False).shape == (6, 16, 24, 3)


def test_missing_and_empty_inputs(tmp_path):
    with pytest.raises(DatasetError, match=r"not found: .*nope"):
        open_dataset(tmp_path / "nope")
    with pytest.raises(DatasetError, match=r"not found: .*nope"):
        open_videos(tmp_path / "nope")
    with pytest.raises(DatasetError, match=r"no videos in .*: expected video files"):
        open_videos(tmp_path)
    with pytest.raises(DatasetError, match="unknown layout 'kitti'"):
        open_dataset(tmp_path, "kitti")


# ---------------------------------------------------------------- the real shared data (labels and counts only)

@pytest.mark.needs("data/ucsd_ped2")
def test_real_ped2_preprocessed():
    videos = open_dataset(SHARED / "ucsd_ped2")
    assert [v.frame_count() for v in videos] == [180, 180, 150, 180, 150, 180, 180, 180, 120, 150, 180, 180]
    abnormal = sum(int(v.labels.sum()) for v in videos)
    assert (abnormal, sum(len(v.labels) for v in videos) - abnormal) == (1648, 362)
    assert videos[0].labels[59:61].tolist() == [0, 1]  # Test001: [61:180], 1-based


@pytest.mark.needs("data/avenue_partial")
def test_real_avenue_partial_masks_and_literature_npy():
    videos = open_dataset(SHARED / "avenue_partial")
    assert [v.name for v in videos] == ["08", "17", "18", "19", "20", "21"]
    assert [v.frame_count() for v in videos] == [36, 426, 294, 248, 273, 76]
    assert all(v.label_source.startswith("avenue_masks:") for v in videos)
    assert videos[0].labels.all() and videos[2].labels.all()  # clips 08 and 18: abnormal in every frame
    assert videos[0].read_frames().shape == (36, 360, 640)
    npy = open_dataset(SHARED / "avenue_partial", avenue_labels="npy")
    assert [len(v.labels) for v in npy] == [36, 426, 294, 248, 273, 76]  # split by the 21 masks' lengths
    assert int(npy[0].labels.sum()) == 10  # the literature labels differ from the masks here


def test_iter_frames_decodes_lazily_and_repeats_good_frames_over_bad_ones(tmp_path, capsys):
    video = frames(6)
    folder = write_frames(tmp_path / "clip", video, ".png")
    for name in ("001.png", "002.png", "005.png"):
        (folder / name).write_bytes(b"not a png")
    stream = open_videos(folder)[0].iter_frames(bad_frames="skip")
    assert np.array_equal(next(stream), video[2])  # the leading bad frames repeat the first good one
    assert capsys.readouterr().err == ""  # the warning comes once the last file is read
    got = [video[2], *stream]
    assert [int(np.abs(g.astype(int) - video).sum((1, 2)).argmin()) for g in got] == [2, 2, 2, 3, 3, 5]
    assert "3 unreadable, truncated or corrupt frame(s)" in capsys.readouterr().err
    avi = open_videos(write_avi(tmp_path / "cam.avi", video))[0]
    assert np.array_equal(np.stack(list(avi.iter_frames())), avi.read_frames()) and avi.frame_count() == 6


def test_pixel_masks_where_a_ucsd_video_has_a_gt_folder(tmp_path):
    """The official UCSD release has TestNNN_gt mask folders for some videos (Ped1: 10 of 36): ``pixel_masks`` reads
    them, one per frame at the frames' size, and gives None for a video without one and for the preprocessed
    layout (no masks)."""
    import shutil

    from vad.readers import pixel_masks

    root = write_ucsd_official(tmp_path / "ucsd", [frames(4), frames(3)], [[(2, 3)], []],
                               masks=[np.array([0, 1, 1, 0]), np.array([0, 0, 0])])
    shutil.rmtree(root / "Test" / "Test002_gt")
    first, second = (pixel_masks(v.path) for v in open_dataset(root))
    assert second is None and len(first) == 4 and first[0].shape == (16, 24)
    assert [bool(m.any()) for m in first] == [False, True, True, False]
    pre = write_ucsd_preprocessed(tmp_path / "pre", [frames(3)], [[(1, 1)]])
    assert pixel_masks(open_dataset(pre)[0].path) is None
