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
