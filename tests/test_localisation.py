"""RBDC, TBDC and the pixel-level criterion on hand-made masks and boxes (vad/localisation.py)."""
import numpy as np
import pytest

from vad.localisation import link_tracks, mask_regions, pixel_level, rbdc_tbdc
from vad.regions import iou


def _mask(boxes, shape=(40, 60)):
    m = np.zeros(shape, np.uint8)
    for x1, y1, x2, y2 in boxes:
        m[y1:y2, x1:x2] = 1
    return m


def test_regions_tracks_and_iou():
    regions = mask_regions(_mask([(2, 3, 12, 13), (30, 10, 40, 30)]))
    np.testing.assert_array_equal(regions, [[2, 3, 12, 13], [30, 10, 40, 30]])
    assert iou([[0, 0, 10, 10]], [[5, 0, 15, 10], [20, 20, 30, 30]]) == pytest.approx(np.array([[1 / 3, 0]]))
    # one object moving right, a second appearing in frame 1: two tracks, the first carried on
    frames = [np.array([[0, 0, 10, 10]]), np.array([[2, 0, 12, 10], [40, 20, 50, 30]]), np.array([[4, 0, 14, 10]])]
    ids = link_tracks(frames)
    assert [list(i) for i in ids] == [[0], [0, 1], [0]]


def test_perfect_detector_scores_one_and_false_positives_cost():
    truth = [np.array([[10, 10, 20, 20]], np.float32)] * 4 + [np.zeros((0, 4), np.float32)] * 4
    tracks = [np.array([0])] * 4 + [np.zeros(0, int)] * 4
    hit = (np.array([[10, 10, 20, 20]]), np.array([0.9]))
    nothing = (np.zeros((0, 4)), np.zeros(0))
    perfect = rbdc_tbdc([hit] * 4 + [nothing] * 4, truth, tracks)
    assert perfect["rbdc"] == pytest.approx(1.0) and perfect["tbdc"] == pytest.approx(1.0)
    # a confident false box in every normal frame: 0.5 false positives per frame before any region is found
    false = (np.array([[40, 0, 50, 10]]), np.array([0.95]))
    noisy = rbdc_tbdc([hit] * 4 + [false] * 4, truth, tracks)
    assert noisy["rbdc"] == pytest.approx(0.5) and noisy["tbdc"] == pytest.approx(0.5)
    # boxes that miss the regions (IoU < 0.1) find nothing
    miss = (np.array([[30, 30, 40, 40]]), np.array([0.9]))
    assert rbdc_tbdc([miss] * 4 + [nothing] * 4, truth, tracks)["rbdc"] == 0.0


def test_a_track_counts_when_a_tenth_of_its_regions_is_found():
    truth = [np.array([[10, 10, 20, 20]], np.float32)] * 10
    tracks = [np.array([7])] * 10
    found_once = [(np.array([[10, 10, 20, 20]]), np.array([0.8]))] + [(np.zeros((0, 4)), np.zeros(0))] * 9
    m = rbdc_tbdc(found_once, truth, tracks)
    assert m["tbdc"] == pytest.approx(1.0) and m["rbdc"] == pytest.approx(0.1) and m["n_tracks"] == 1


def test_pixel_level_criterion_needs_40_percent_of_the_mask():
    masks = [_mask([(0, 0, 10, 10)]), _mask([(0, 0, 10, 10)]), _mask([])]
    half = (np.array([[0, 0, 5, 10]]), np.array([0.9]))  # covers 50 % of the mask
    sliver = (np.array([[0, 0, 2, 10]]), np.array([0.95]))  # 20 %
    normal_box = (np.array([[30, 30, 40, 40]]), np.array([0.5]))
    m = pixel_level([half, sliver, normal_box], masks)
    # frame 1 detected at 0.9, frame 2 never, the normal frame is a false positive from 0.5
    assert m["pixel_auc"] == pytest.approx(0.5) and m["pixel_detected_share"] == pytest.approx(0.5)
    assert pixel_level([half, half, normal_box], masks)["pixel_auc"] == pytest.approx(1.0)


def test_a_runs_cubes_are_matched_to_the_masks_of_their_own_frame():
    """localisation_metrics on a run's cubes: cubes of two videos, the right cube in each abnormal frame."""
    from vad.localisation import localisation_metrics

    mask = _mask([(10, 10, 20, 20)])
    masks = [[mask, mask, _mask([])], [_mask([]), mask]]
    cubes = {"video": np.array([1, 0, 0, 1, 0]), "frame": np.array([1, 0, 1, 0, 2]),
             "boxes": np.array([[10, 10, 20, 20], [10, 10, 20, 20], [11, 10, 21, 20], [40, 0, 50, 10],
                                [40, 0, 50, 10]], np.float32)}
    scores = np.array([0.9, 0.8, 0.7, 0.1, 0.2])  # the false boxes (normal frames) score lowest
    m = localisation_metrics(cubes, scores, masks)
    assert m["n_regions"] == 3 and m["n_tracks"] == 2 and m["n_frames"] == 5
    assert m["rbdc"] == pytest.approx(1.0) and m["tbdc"] == pytest.approx(1.0) and m["pixel_auc"] == 1.0
    shuffled = {"video": cubes["video"], "frame": np.array([0, 1, 2, 1, 0]), "boxes": cubes["boxes"]}
    assert localisation_metrics(shuffled, scores, masks)["rbdc"] < 1.0  # boxes in the wrong frames miss


def test_masks_of_another_size_than_the_frames_are_named_not_scored(tmp_path):
    """A resized copy of Avenue keeps its frame labels (any set pixel) but its boxes no longer meet the masks: the
    evaluation names the mismatch and skips RBDC/TBDC instead of scoring boxes against the wrong pixels."""
    from pipelines.video.stages import _mask_mismatch
    from tests.layouts import frames, write_avi

    avi = write_avi(tmp_path / "08.avi", frames(4, h=16, w=24))
    info = {"videos": [{"name": "08", "path": str(avi), "n_frames": 4}]}
    assert _mask_mismatch(info, [[np.zeros((16, 24), np.uint8)] * 4]) == ""
    assert _mask_mismatch(info, [[np.zeros((32, 48), np.uint8)] * 4]) == (
        f"the masks of video 08 ({avi}) are 48x32 pixels, its frames 24x16")
    from pipelines.video.report import _localisation

    assert "Localisation not measured: the masks of video 08" in _localisation({"localisation_skipped": (
        "the masks of video 08 (x.avi) are 48x32 pixels, its frames 24x16")})
    assert _localisation({}) == ""


def test_videos_without_masks_are_left_out_and_counted():
    """UCSD Ped1 has pixel masks for 10 of its 36 test videos: a video without them (None) is left out of RBDC, TBDC
    and the pixel-level AUC, which then equal those of the videos that have them, and the counts say so."""
    from vad.localisation import localisation_metrics

    mask = _mask([(10, 10, 20, 20)])
    cubes = {"video": np.array([0, 0, 1, 1]), "frame": np.array([0, 1, 0, 1]),
             "boxes": np.array([[10, 10, 20, 20], [40, 0, 50, 10], [40, 0, 50, 10], [10, 10, 20, 20]], np.float32)}
    scores = np.array([0.9, 0.1, 0.95, 0.2])  # video 1's false box outscores everything: it would cost RBDC
    both = localisation_metrics(cubes, scores, [[mask, _mask([])], [_mask([]), mask]])
    first = localisation_metrics(cubes, scores, [[mask, _mask([])], None])
    assert both["rbdc"] < 1.0 and first["rbdc"] == pytest.approx(1.0) and first["pixel_auc"] == 1.0
    assert (first["n_videos"], first["n_videos_total"], first["n_frames"], first["n_regions"]) == (1, 2, 2, 1)
    from pipelines.video.report import _localisation

    assert "(1 of the 2 videos have them)" in _localisation({"localisation": first})
    assert "videos have them" not in _localisation({"localisation": both})


def test_mask_count_other_than_the_frame_count_is_named(tmp_path):
    from pipelines.video.stages import _mask_mismatch
    from tests.layouts import frames, write_avi

    avi = write_avi(tmp_path / "08.avi", frames(4, h=16, w=24))
    info = {"videos": [{"name": "08", "path": str(avi), "n_frames": 4}, {"name": "x", "path": "none", "n_frames": 9}]}
    masks = [[np.zeros((16, 24), np.uint8)] * 3, None]  # the second video has no masks: not checked
    assert _mask_mismatch(info, masks) == f"video 08 ({avi}) has 3 pixel masks for its 4 frames"
    assert _mask_mismatch(info, [[np.zeros((16, 24), np.uint8)] * 4, None]) == ""
