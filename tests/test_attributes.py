"""Object attributes of cubes and their k-nearest-neighbour rarity (vad.attributes), on hand-made cases."""
from pathlib import Path

import numpy as np
import pytest

from vad.attributes import AttributeKNN, cube_attributes, mirrored_rows, relative_speed, velocity_histogram


def _flow(n: int, dx: float, dy: float, size: int = 8) -> np.ndarray:
    f = np.zeros((n, 2, size, size), np.float16)
    f[:, 0], f[:, 1] = dx, dy
    return f


def test_velocity_histogram_weights_orientations_by_magnitude():
    hist = velocity_histogram(np.concatenate([_flow(1, 3.0, 0.0), _flow(1, 0.0, -2.0), _flow(1, 0.0, 0.0)]))
    assert hist.shape == (3, 8)
    np.testing.assert_allclose(hist.sum(1), [3.0, 2.0, 0.0], rtol=1e-3)  # the bins sum to the mean speed
    assert np.count_nonzero(hist[0]) == 1 and np.count_nonzero(hist[1]) == 1
    assert np.argmax(hist[0]) != np.argmax(hist[1])  # right and up fall in different bins


def test_scale_aware_attributes_compare_near_and_far_objects():
    boxes = np.array([[0, 0, 10, 20], [0, 0, 20, 40]], np.float32)  # a far and a near person, same aspect
    flow = np.concatenate([_flow(1, 1.0, 0.0), _flow(1, 2.0, 0.0)])  # the near one moves twice the pixels
    a = cube_attributes(flow, boxes)
    np.testing.assert_allclose(a[0, :9], a[1, :9], rtol=1e-3)  # same pace per body height
    np.testing.assert_allclose(relative_speed(flow, boxes), [0.05, 0.05], rtol=1e-3)
    assert a[1, 9] - a[0, 9] == pytest.approx(np.log(2)) and a[0, 10] == pytest.approx(np.log(0.5))
    raw = cube_attributes(flow, boxes, scale_aware=False)
    assert raw[1, 8] == pytest.approx(2 * raw[0, 8], rel=1e-3)


def test_mirrored_rows_are_the_attributes_of_the_mirrored_flow():
    """Flow mirrored left-right (patch flipped, x component negated) gives the mirrored rows; a leftward walker's
    mirror image is a rightward one, near a rightward walker in the density."""
    rng = np.random.default_rng(0)
    flow = rng.normal(0, 2, (6, 2, 8, 8)).astype(np.float32)
    boxes = np.abs(rng.normal(20, 5, (6, 4))).astype(np.float32) + np.array([0, 0, 30, 30], np.float32)
    mirror = flow[..., ::-1].copy()
    mirror[:, 0] *= -1
    np.testing.assert_allclose(mirrored_rows(cube_attributes(flow, boxes)), cube_attributes(mirror, boxes),
                               rtol=1e-5, atol=1e-6)
    left, right = cube_attributes(_flow(50, -2.0, 0.1), np.tile(boxes[:1], (50, 1))), \
        cube_attributes(_flow(1, 2.0, 0.1), boxes[:1])
    plain = AttributeKNN(k=5, cleanse=0.0, pooled=9).fit(left).decision_function(right)
    both = AttributeKNN(k=5, cleanse=0.0, pooled=9).fit(np.concatenate([left, mirrored_rows(left)]))
    assert plain[0] > 1.0 and both.decision_function(right)[0] < 1e-3
    with pytest.raises(ValueError, match="even number"):
        mirrored_rows(left, bins=7)


def test_an_outlier_beside_a_planted_cluster_is_found():
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(0, 1, (300, 4)), [[6.0, 6.0, 6.0, 6.0]]]).astype(np.float32)
    model = AttributeKNN(k=5, cleanse=0.0).fit(X)
    assert np.argmax(model.decision_scores_) == 300
    assert model.decision_function(np.array([[0, 0, 0, 0], [8, 8, 8, 8]], np.float32)).argmax() == 1


def test_an_anomalys_own_temporal_copies_do_not_vouch_for_it():
    """One object tracked over 8 frames of video 0 is far from the 400 normal rows: its copies are its nearest
    neighbours unless the same-video, nearby-frame rule excludes them."""
    rng = np.random.default_rng(1)
    normal = rng.normal(0, 1, (400, 3)).astype(np.float32)
    track = (np.array([5.0, 5.0, 5.0]) + rng.normal(0, 0.05, (8, 3))).astype(np.float32)
    X = np.concatenate([normal, track])
    groups = np.r_[rng.integers(0, 4, 400), np.zeros(8, int)]
    times = np.r_[rng.integers(0, 1000, 400) + 100, np.arange(8)]
    naive = AttributeKNN(k=5, cleanse=0.0, exclude_frames=-1).fit(X, groups, times).decision_scores_
    honest = AttributeKNN(k=5, cleanse=0.0, exclude_frames=10).fit(X, groups, times).decision_scores_
    assert np.median(naive[400:]) < np.median(naive[:400]) + 1  # vouched for by its copies: looks normal
    assert honest[400:].min() > np.quantile(honest[:400], 0.99)  # every copy now among the rarest rows


def test_an_object_anomalous_for_long_does_not_vouch_for_itself_along_its_track():
    """One object stays anomalous for 200 frames of video 0 (far beyond the 10-frame window): its later cubes vouch
    for its earlier ones unless its own track is excluded too; other tracks' rows still count as neighbours."""
    rng = np.random.default_rng(4)
    normal = rng.normal(0, 1, (400, 3)).astype(np.float32)
    long = (np.array([5.0, 5.0, 5.0]) + rng.normal(0, 0.05, (200, 3))).astype(np.float32)
    X = np.concatenate([normal, long])
    groups = np.r_[rng.integers(0, 4, 400), np.zeros(200, int)]
    times = np.r_[rng.integers(0, 1000, 400), np.arange(200)]
    tracks = np.r_[np.arange(400), np.full(200, 400)]
    windowed = AttributeKNN(k=5, cleanse=0.0).fit(X, groups, times).decision_scores_
    tracked = AttributeKNN(k=5, cleanse=0.0).fit(X, groups, times, tracks).decision_scores_
    assert np.median(windowed[400:]) < np.median(windowed[:400])  # its copies 11+ frames away make it look normal
    assert tracked[400:].min() > np.quantile(tracked[:400], 0.99)
    np.testing.assert_array_equal(tracked[:400], windowed[:400])  # one-row tracks: nothing else excluded
    with pytest.raises(ValueError, match="600 rows but 600 groups, 600 times and 5 tracks"):
        AttributeKNN().fit(X, groups, times, tracks[:5])


def test_cleansing_removes_a_planted_cluster_of_anomalies_from_the_bank():
    """A loose cluster of 30 anomalies in different videos partly vouches for itself; cleansing the bank of its
    most distant 10 % first drops most of them, after which all are scored against normal rows."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(2)
    X = np.concatenate([rng.normal(0, 1, (400, 3)), 4 + rng.normal(0, 0.8, (30, 3))]).astype(np.float32)
    groups, times, y = np.arange(430), np.zeros(430, int), np.r_[np.zeros(400), np.ones(30)]
    plain = AttributeKNN(k=20, cleanse=0.0).fit(X, groups, times).decision_scores_
    cleansed = AttributeKNN(k=20, cleanse=0.1).fit(X, groups, times).decision_scores_
    assert roc_auc_score(y, plain) < 0.97 and roc_auc_score(y, cleansed) > 0.99
    assert cleansed[400:].min() > np.quantile(cleansed[:400], 0.95)


def test_the_bank_is_bounded_and_bad_input_refused():
    X = np.random.default_rng(3).normal(0, 1, (500, 2)).astype(np.float32)
    model = AttributeKNN(k=3, max_bank=100, cleanse=0.0).fit(X)
    assert len(model.bank_) == 100 and model.decision_scores_.shape == (500,)
    with pytest.raises(ValueError, match="fit needs at least 2 samples"):
        AttributeKNN().fit(np.zeros((1, 3)))
    with pytest.raises(ValueError, match=r"\(N, D\) attribute array"):
        AttributeKNN().fit(np.zeros((4, 3, 2)))
    with pytest.raises(RuntimeError, match="not fitted"):
        AttributeKNN().decision_function(X)


def test_fast_share_and_blend():
    from vad.scoring import blend, fast_share

    # 2 videos of 10 frames; one cube per frame at speed 1, and a fast cube (speed 9) in frames 0-3 of video 0
    video, frame = np.r_[np.zeros(10), np.ones(10), np.zeros(4)].astype(int), np.r_[np.arange(10), np.arange(10),
                                                                                  np.arange(4)]
    speed = np.r_[np.ones(20) + np.linspace(0, 0.1, 20), np.full(4, 9.0)]
    assert fast_share(speed, video, frame, [10, 10]) == pytest.approx(4 / 20)
    assert fast_share(speed, video, frame, [10, 10], mads=1e6) == 0.0
    # boxes of standing objects (speed 0.01, 30 in every frame) pull the median down and every frame looks fast;
    # with the floor they are left out of the reference and the share is what it was without them
    n = 30 * 20
    still = (np.r_[video, np.repeat([0, 1], n // 2)], np.r_[frame, np.tile(np.arange(10), n // 10)],
             np.r_[speed, np.full(n, 0.01)])
    assert fast_share(still[2], still[0], still[1], [10, 10]) == pytest.approx(1.0)
    assert fast_share(still[2], still[0], still[1], [10, 10], floor=0.25) == pytest.approx(4 / 20)
    model, heuristic = [np.arange(5.0), np.arange(5.0)], [np.arange(5.0)[::-1], np.arange(5.0)[::-1]]
    np.testing.assert_allclose(np.concatenate(blend(model, heuristic, 1.0)),
                               np.concatenate(heuristic) / np.concatenate(heuristic).std() - 2 / np.sqrt(2))
    assert np.argmax(blend(model, heuristic, 0.0)[0]) == 4 and np.argmax(blend(model, heuristic, 0.9)[0]) == 0


def test_tail_share_sets_the_bar_from_the_reference_frames():
    """The semi-supervised fast share: the share of scored frames above the 99th percentile of the training frames'
    own scores. A score whose normal frames are noisy (a long tail in training) sets itself a higher bar."""
    from vad.scoring import tail_share

    rng = np.random.default_rng(0)
    calm, noisy = [rng.normal(0, 1, 500), rng.normal(0, 1, 500)], [rng.standard_t(1.5, 1000)]
    scored = [np.r_[rng.normal(0, 1, 80), np.full(20, 6.0)]]  # a fifth of the frames far beyond normal
    assert tail_share(scored, calm) == pytest.approx(0.2, abs=0.02)
    assert tail_share(scored, noisy) < 0.05 < tail_share(scored, noisy, percentile=80)
    assert tail_share([np.arange(4.0)], [np.arange(101.0)], 50) == 0.0


def test_position_normalise_measures_each_cube_against_its_place():
    """Far objects (top of the frame) move fewer pixels than near ones. Against the cubes of its own cell a far
    cube at speed 2 stands out, a near one at speed 2 does not; over the run, a cell crossed mostly by fast objects
    learns them as its normal, but against normal reference cubes (the training videos') they stand out."""
    from vad.scoring import position_normalise

    rng = np.random.default_rng(0)

    def place(n, top, speed):  # n boxes of 10 x 20 pixels at random x, in the upper or lower half of a 100 x 100 frame
        x, y = rng.uniform(0, 90, n), rng.uniform(0, 30, n) + (0 if top else 50)
        return np.column_stack([x, y, x + 10, y + 20]), speed + rng.normal(0, 0.05 * speed, n)

    (far, far_speed), (near, near_speed) = place(200, True, 0.5), place(200, False, 2.0)
    boxes, speed = np.r_[far, near, [[40, 10, 50, 30]], [[40, 60, 50, 80]]], np.r_[far_speed, near_speed, 2.0, 2.0]
    z = position_normalise(speed, boxes, np.zeros(len(speed), np.int64), grid=2)
    assert z[-2] > 10 and abs(z[-1]) < 3  # the same pixel speed: rare far away, ordinary near the lens
    assert np.array_equal(z, position_normalise(speed, boxes, np.zeros(len(speed), np.int64), grid=2))
    # a test set whose lower half is crossed mostly by fast objects (speed 6): over the run they look normal there
    (fast, fast_speed), (walk, walk_speed) = place(150, False, 6.0), place(50, False, 2.0)
    test_boxes, test_speed = np.r_[far, fast, walk], np.r_[far_speed, fast_speed, walk_speed]
    over_run = position_normalise(test_speed, test_boxes, np.zeros(len(test_speed), np.int64), grid=2)
    against_training = position_normalise(test_speed, test_boxes, None, grid=2,
                                          reference=(np.r_[far_speed, near_speed], np.r_[far, near]))
    fast_rows = slice(200, 350)
    assert np.median(np.abs(over_run[fast_rows])) < 3 < np.median(against_training[fast_rows])
    assert np.median(np.abs(against_training[350:])) < 3  # the normal walkers near the lens stay ordinary


def test_place_corrected_rows_compare_a_far_runner_with_a_near_walker():
    from vad.attributes import attribute_rows, place_corrected_rows

    hist = np.array([[0, 0, 2.0, 0, 0, 0, 0, 0], [0, 0, 2.0, 0, 0, 0, 0, 0]], np.float32)  # the same pixel speed
    boxes = np.array([[0, 0, 10, 20], [0, 0, 30, 60]], np.float32)  # far (20 px tall) and near (60 px)
    X = attribute_rows(hist, boxes, scale_aware=False)
    corrected = place_corrected_rows(X, np.array([3.0, 1.0]), np.array([3.0, 1.0]))  # far objects a third the size
    assert corrected[0, 8] == pytest.approx(3 * X[0, 8]) and corrected[1, 8] == pytest.approx(X[1, 8])
    assert corrected[0, 9] == pytest.approx(corrected[1, 9])  # the same height once the perspective is out
    np.testing.assert_array_equal(corrected[:, 10], X[:, 10])  # the aspect is kept
    np.testing.assert_allclose(place_corrected_rows(X, np.ones(2), np.ones(2)), X)


def test_position_trend_takes_the_perspective_out_of_the_speed():
    """A camera looking along a walkway: walkers at the far (top) end move a third of the pixels of the near ones. The
    fitted trend brings them to one level, so a far cyclist (twice a far walker's speed) now outruns a near walker; a
    scene without perspective is left (nearly) as it is; too few cubes to fit: no change."""
    from vad.scoring import moving, position_trend

    rng = np.random.default_rng(0)
    y = rng.uniform(20, 200, 2000)  # box bottoms; scale 1/3 at the top row 20, 1 at row 200
    scale = 1 / 3 + (2 / 3) * (y - 20) / 180
    x = rng.uniform(0, 300, 2000)
    boxes = np.column_stack([x, y - 40 * scale, x + 15 * scale, y])
    walk = 3.0 * scale * rng.lognormal(0, 0.1, 2000)
    boxes = np.r_[boxes, [[100, 10, 105, 22], [100, 140, 115, 190]]]
    at = 1 / 3 + (2 / 3) * (np.array([22.0, 190.0]) - 20) / 180
    speed = np.r_[walk, 3.0 * 2 * at[0], 3.0 * at[1]]  # a far cyclist, a near walker
    factor, fit = position_trend(speed, boxes, moving(speed, 0.25))
    corrected = speed * factor
    assert speed[-2] < speed[-1] and corrected[-2] > 1.6 * corrected[-1]
    far, near = corrected[:2000][y < 60], corrected[:2000][y > 160]
    assert abs(np.median(far) / np.median(near) - 1) < 0.15 and fit["spread"] > 2 and fit["slope_y"] > 0
    level, fit = position_trend(walk / scale, boxes[:2000], np.ones(2000, bool))
    assert np.all(np.abs(level - 1) < 0.1) and fit["spread"] < 1.1
    few, fit = position_trend(speed[:20], boxes[:20], np.ones(20, bool))
    assert np.all(few == 1) and fit["spread"] == 1.0


def test_a_strong_trend_over_position_suggests_the_perspective_setting():
    from pipelines.video.report import PERSPECTIVE_HINT_SPREAD, perspective_hint

    assert perspective_hint({}) == "" and perspective_hint({"perspective_spread": 1.3}) == ""
    hint = perspective_hint({"perspective_spread": 2.41})
    assert PERSPECTIVE_HINT_SPREAD <= 2.41 and "2.4-fold" in hint and "--set score.perspective=true" in hint


def test_perspective_makes_the_transductive_energy_follow_its_trend():
    from vad.config import ConfigError, load_config, resolved_position_norm

    perspective = ["score.perspective=true"]
    assert resolved_position_norm(load_config(None, perspective)) == "trend"
    assert resolved_position_norm(load_config(None, [*perspective, "model.train_on=training"])) == "training"
    assert resolved_position_norm(load_config(None, [])) == "off"
    assert load_config(None, perspective).score.position_norm == "auto"  # kept as given: a rescoring resolves anew
    with pytest.raises(ConfigError, match="score.perspective.*position_norm is off"):
        load_config(None, [*perspective, "score.position_norm=off"])


def test_the_attribute_scorer_replaces_the_generators_in_a_run(tmp_path, monkeypatch):
    """attributes.use=alone: no generator is trained, the learned score is the attribute rarity; score.fusion=
    fast_share records what it read and chose; both score the generated anomalies above the normal frames."""
    import json

    from pipelines.video.cli import main as vad
    from pipelines.video.report import perspective_hint
    from vad.synthetic import make_synthetic_ucsd

    root = make_synthetic_ucsd(tmp_path / "data", n_videos=2, n_frames=40)
    out = tmp_path / "run"
    demo = str(Path(__file__).resolve().parents[1] / "configs" / "demo.yaml")
    assert vad(["run", "--root", str(root), "--out", str(out), "--cache", str(tmp_path / "cache"), "--quiet",
                "--config", demo, "--set", "attributes.use=alone", "--set", "score.fusion=fast_share"]) == 0
    assert not (out / "model.pt").exists()
    with np.load(out / "cube_errors.npz") as f:
        assert f["errors"].shape[1] == 0 and np.array_equal(f["component_model"], f["component_attributes"])
    metrics = json.loads((out / "metrics.json").read_text())
    fusion = metrics["fusion"]
    assert fusion["rule"] == "fast_share" and 0 <= fusion["fast_share"] <= 1
    assert fusion["heuristic_weight"] == pytest.approx(min(1, fusion["fast_share"] / 0.5))
    assert metrics["model_auc_micro"] > 0.75 and metrics["auc_micro"] > 0.75
    # the perspective is measured (not applied) in the transductive default: too few cubes here to fit a trend
    assert fusion["perspective_spread"] == 1.0 and perspective_hint(fusion) == ""
    # transductive: the heuristic is the plain motion-energy rule (no position normalisation by default)
    assert metrics["heuristic_auc_micro"] == metrics["motion_rule_auc_micro"] and metrics["position_norm"] == "off"
    assert metrics["unprocessed"]["heuristic_auc_micro"] == metrics["unprocessed"]["motion_rule_auc_micro"]
    assert "fusion.json" in json.loads((out / "run_manifest.json").read_text())["files"]
    # the stored density excludes each cube's own track; attributes.exclude_track=false scores it without that rule
    from pipelines.video.run_folder import load_run
    from pipelines.video.stages import attribute_scores

    config, info = load_run(out)
    with np.load(out / "cube_errors.npz") as f:
        plain_density = f["component_attributes"]
        np.testing.assert_allclose(attribute_scores(config, info), f["component_attributes"], rtol=1e-6)
        config.attributes.exclude_track = False
        assert not np.allclose(attribute_scores(config, info), f["component_attributes"])
    # rescored with the energy's trend over position taken out: recorded, the heuristic is no longer the plain rule
    plain = metrics["motion_rule_auc_micro"]
    with np.load(out / "cube_scores.npz") as cubes:
        energy = cubes["motion_energy"]
    # this tiny set holds too few cubes to fit a trend: a stand-in trend that halves the far half of the frame
    def far(energy, boxes, *args):
        return np.where(boxes[:, 1] < 60, 2.0, 1.0), {"slope_x": 0.0, "slope_y": 1.0, "spread": 2.0}

    monkeypatch.setattr("pipelines.video.stages.position_trend", far)
    assert vad(["score", "--out", str(out), "--set", "score.perspective=true"]) == 0  # config.yaml holds "auto"
    assert vad(["eval", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["position_norm"] == "trend" and metrics["fusion"]["position_trend"]["spread"] == 2.0
    assert "perspective_spread" not in metrics["fusion"]  # applied: the trend's own record says it
    with np.load(out / "cube_scores.npz") as cubes:
        np.testing.assert_array_equal(cubes["motion_energy"], energy)  # the plain rule's energy stays as measured
        np.testing.assert_allclose(cubes["heuristic"], energy * np.where(cubes["boxes"][:, 1] < 60, 2.0, 1.0))
    assert metrics["motion_rule_auc_micro"] == pytest.approx(plain, abs=1e-4)
    # the density's attributes lose the same trend (rule P6; `vad score` fitted it again): its far cubes' velocities
    # and heights doubled here; without any trend they are the plain ones
    persp, info = load_run(out)
    with np.load(out / "cube_errors.npz") as f:
        assert bool(f["place_corrected"]) and not np.allclose(f["component_attributes"], plain_density)
        np.testing.assert_allclose(attribute_scores(persp, info), f["component_attributes"], rtol=1e-6)
    monkeypatch.setattr("pipelines.video.stages.position_trend",
                        lambda energy, boxes, *args: (np.ones(len(boxes)), {"spread": 1.0}))
    np.testing.assert_allclose(attribute_scores(persp, info), plain_density, rtol=1e-6)
    # a learned score fitted under another perspective setting than the config's is refused, not silently used
    from pipelines.video.stages import change_score_settings, score_stage

    change_score_settings(out, ["score.perspective=false"])
    with pytest.raises(ValueError, match="perspective taken out of its attributes.*run `vad train"):
        score_stage(out)
