import numpy as np
import pytest

from vad.metrics import auc_macro, auc_micro, eer, video_aucs
from vad.scoring import frame_scores, motion_energy, smooth


def test_micro_macro_auc_by_hand():
    s = [np.array([0.1, 0.9, 0.4]), np.array([0.2, 0.3, 0.8])]
    y = [np.array([0, 1, 0]), np.array([0, 1, 1])]
    # micro: positives {0.9, 0.3, 0.8} vs negatives {0.1, 0.4, 0.2}: 8 of 9 pairs ordered right
    assert auc_micro(s, y) == pytest.approx(8 / 9)
    assert auc_macro(s, y) == pytest.approx((1.0 + 1.0) / 2)
    assert np.isnan(auc_macro([np.array([1.0, 2.0])], [np.array([1, 1])]))  # one-class videos are skipped
    assert video_aucs(s + [np.array([1.0, 2.0])], y + [np.array([1, 1])]) == [1.0, 1.0, None]


def test_eer_of_perfect_and_inverted_scores():
    y = [np.array([0, 0, 1, 1])]
    assert eer([np.array([0.1, 0.2, 0.8, 0.9])], y) == pytest.approx(0.0)
    assert eer([np.array([0.9, 0.8, 0.2, 0.1])], y) == pytest.approx(1.0)


def test_frame_score_is_max_cube_and_empty_frames_are_least_anomalous():
    cube = np.array([0.5, 2.0, -1.0, 3.0])
    video = np.array([0, 0, 0, 1])
    frame = np.array([1, 1, 2, 0])
    out = frame_scores(cube, video, frame, [4, 2])
    assert out[0].tolist() == [-1.0, 2.0, -1.0, -1.0]
    assert out[1].tolist() == [3.0, -1.0]


def test_smoothing_stays_inside_videos():
    out = smooth([np.array([0, 0, 3, 0, 0.0]), np.array([9.0, 9.0])], 3)
    assert out[0].tolist() == pytest.approx([0, 1, 1, 1, 0])
    assert out[1].tolist() == [9.0, 9.0]
    assert smooth([np.array([1.0, 5.0])], 1)[0].tolist() == [1.0, 5.0]


def test_motion_energy_is_mean_magnitude():
    flow = np.zeros((1, 2, 4, 4), np.float16)
    flow[0, 0] = 3
    flow[0, 1] = 4
    assert motion_energy(flow).tolist() == [5.0]


def test_fusion_adds_weighted_zscores_across_all_frames():
    from vad.scoring import fuse

    model = [np.array([0.0, 2.0]), np.array([4.0])]
    heur = [np.array([1.0, 1.0]), np.array([4.0])]
    assert all(np.array_equal(a, b) for a, b in zip(fuse(model, heur, 0.0), model))
    fused = fuse(model, heur, 2.0)
    z = lambda x: (x - x.mean()) / x.std()
    expected = z(np.array([0.0, 2, 4])) + 2 * z(np.array([1.0, 1, 4]))
    assert [len(f) for f in fused] == [2, 1]
    assert np.allclose(np.concatenate(fused), expected)


def test_alarm_metrics_on_a_hand_made_case():
    from vad.metrics import alarm_metrics, runs

    labels = [np.r_[np.zeros(10), np.ones(5), np.zeros(10), np.ones(5)], np.zeros(30)]
    assert runs(labels[0]) == [(10, 14), (25, 29)]
    events = [[(12, 16)], [(0, 2), (20, 21)]]  # one hit of two intervals; two false alarms in video 2
    m = alarm_metrics(events, labels, fps=1.0)  # 60 frames at 1 fps: one minute
    assert m["precision"] == pytest.approx(3 / 10) and m["recall"] == pytest.approx(3 / 10)
    assert m["f1"] == pytest.approx(0.3) and m["hits"] == 0.5 and m["false_alarms"] == 2
    assert m["false_alarms_per_min"] == pytest.approx(2.0) and m["events"] == 3 and m["abnormal_intervals"] == 2
    assert alarm_metrics([[], []], labels, 1.0)["f1"] == 0.0


def _sliver_frames():
    """Three frames of one video: a slow walker with a foot box beside it (frame 0), a fast rider with its bicycle
    box beside it (frame 1), a slow walker and a small box far from it (frame 2)."""
    boxes = np.array([[10, 10, 30, 70], [12, 71, 20, 77],      # walker 20x60, foot 8x6 touching its bottom
                      [10, 10, 30, 70], [14, 72, 28, 80],      # rider, bicycle 14x8 within 4 px below it
                      [10, 10, 30, 70], [80, 80, 88, 86]], np.float32)  # walker, a small box 50 px away
    video, frame = np.zeros(6, int), np.repeat([0, 1, 2], 2)
    speed = np.array([1.0, 1.5, 6.0, 6.5, 1.0, 1.2])
    return boxes, video, frame, speed


def test_slivers_of_slow_objects_are_found_and_a_fast_objects_parts_are_not():
    from vad.scoring import fast_bar, slow_slivers

    boxes, video, frame, speed = _sliver_frames()
    assert fast_bar(speed, mads=1.0) == pytest.approx(np.median(speed) + 1.4826 * np.median(np.abs(speed - 1.35)))
    assert fast_bar(np.zeros(3), floor=0.25) is None
    np.testing.assert_array_equal(slow_slivers(boxes, video, frame, speed, bar=3.0), [0, 1, 0, 0, 0, 0])
    # with no fast object at all, every part touching a larger box is a sliver; the largest box of a frame never is
    np.testing.assert_array_equal(slow_slivers(boxes, video, frame, speed, bar=None), [0, 1, 0, 1, 0, 0])
    # the same boxes in another video are another frame
    np.testing.assert_array_equal(slow_slivers(boxes[:2], np.array([0, 1]), np.zeros(2, int), speed[:2], 3.0), [0, 0])


def test_slivers_leave_the_frame_maximum_only_where_they_hold_it_often():
    from vad.scoring import frame_max_share, frame_scores, without_slivers

    boxes, video, frame, speed = _sliver_frames()
    scores = np.array([0.2, 0.9, 0.5, 0.4, 0.3, 0.8])  # the foot tops frame 0, the far box frame 2
    slivers = np.array([0, 1, 0, 0, 0, 0], bool)
    assert frame_max_share(scores, slivers, video, frame) == pytest.approx(1 / 3)
    assert frame_max_share(scores, np.zeros(6, bool), video, frame) == 0.0
    kept = without_slivers(scores, slivers)
    np.testing.assert_allclose(kept, [0.2, 0.2, 0.5, 0.4, 0.3, 0.8])  # the lowest other score
    np.testing.assert_allclose(frame_scores(kept, video, frame, [3])[0], [0.2, 0.5, 0.8])
    np.testing.assert_allclose(without_slivers(scores, np.zeros(6, bool)), scores)


def test_the_score_stage_leaves_slivers_out_above_its_share_only():
    from pipelines.video.stages import _without_texture_slivers
    from vad.config import load_config

    boxes, video, frame, speed = _sliver_frames()
    arrays = {"boxes": boxes, "video": video, "frame": frame}
    scores = np.array([0.2, 0.9, 0.5, 0.4, 0.3, 0.8])
    for share, left_out in ((0.25, True), (0.5, False)):
        config = load_config(None, [f"score.sliver_share={share}", "score.fast_mad=1", "score.fast_floor=0"])
        kept, record = _without_texture_slivers(config, scores, speed, arrays)
        assert record["left_out"] is left_out and record["share_of_frame_maxima"] == pytest.approx(1 / 3)
        assert record["cubes"] == 1 and bool(kept[1] == 0.2) is left_out
