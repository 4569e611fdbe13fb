"""The video detector's options end to end, each with a measured AUC floor: the refinements and other learned
scores on the generated set, the semi-supervised mode on the generated set and on a small real UCSD Ped2 subset,
events.csv, the top-events picture and `vad render`."""
import csv
import json
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io

from pipelines.video.cli import main
from tests.tools import load_tool
from vad.readers import load_mat_var
from vad.synthetic import make_synthetic_ucsd

CONFIG = str(Path(__file__).resolve().parents[1] / "configs" / "demo.yaml")
PED2 = Path(__file__).resolve().parents[2] / "shared" / "data" / "ucsd_ped2"


def _metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """The generated set with two normal training videos, and a transductive run of the cloze generators on it."""
    root = make_synthetic_ucsd(tmp_path_factory.mktemp("gen") / "data", n_videos=3, n_frames=60, n_train_videos=2)
    run = root.parent / "run"
    assert main(["run", "--config", CONFIG, "--root", str(root), "--out", str(run), "--cache", str(root.parent / "cache"),
                 "--set", "model.epochs=3", "--set", "attributes.use=off", "--quiet"]) == 0
    return root, run


# floors about 0.05 under the learned score's micro AUC measured on 2026-11-24 (seed 0; the default model, whose
# three targets include flow_hof: 0.910)
# the options that are not the default run in the slow tier (.ci/run runs it): each trains for 4-7 s
SLOW = pytest.mark.slow


@pytest.mark.parametrize("name, sets, floor", [
    pytest.param("self_paced", ["refine.self_paced=true", "refine.sp_warmup_epochs=1"], 0.86, marks=SLOW),  # 0.910
    pytest.param("reboot", ["refine.reboot_rounds=1"], 0.86, marks=SLOW),  # 0.910
    ("paper_targets", ["model.targets=[appearance,flow]"], 0.81),  # 0.864: flow_hof adds 0.046 here
    pytest.param("self_train", ["self_train.rounds=1", "self_train.epochs=1"], 0.87, marks=SLOW),  # 0.921
    pytest.param("discriminative", ["discriminative.use=sum", "discriminative.epochs=1", "discriminative.score_ops=4"],
                 0.90, marks=SLOW),  # 0.954
])
def test_each_option_runs_with_an_auc_floor(generated, tmp_path, name, sets, floor):
    root, _ = generated
    run = tmp_path / name
    args = ["run", "--config", CONFIG, "--root", str(root), "--out", str(run), "--cache", str(root.parent / "cache"),
            "--set", "model.epochs=3", "--set", "attributes.use=off", "--quiet"]  # options of the cloze generators
    assert main(args + sum((["--set", s] for s in sets), [])) == 0
    m = _metrics(run)
    assert m["model_auc_micro"] > floor, (name, m["model_auc_micro"])
    components = m["per_component_auc_micro"]
    assert components["model"] == pytest.approx(m["unprocessed"]["model_auc_micro"])
    if name in ("self_train", "discriminative"):
        assert name in components


def _rescored(base: Path, run: Path, sets: list[str]) -> dict:
    """``base`` copied to ``run`` and scored again with the score settings ``sets`` (no retraining)."""
    shutil.copytree(base, run)
    assert main(["score", "--out", str(run), "--quiet", *sum((["--set", s] for s in sets), [])]) == 0
    assert main(["eval", "--out", str(run), "--quiet"]) == 0
    return _metrics(run)


def test_per_video_aucs_are_reported_and_average_to_macro_auc(generated):
    """metrics.json's per_video_auc (final, learned, heuristic, plain rule), the report's line under each video's
    curve and bench_vad's per-video table all read the same figures; their mean is macro AUC."""
    _, base = generated
    m = _metrics(base)
    per_video = m["per_video_auc"]
    assert list(per_video) == [row["video"] for row in csv.DictReader((base / "frame_scores.csv").open())
                               if row["frame"] == "0"]
    for kind, key in (("final", "auc_macro"), ("model", "model_auc_macro"), ("heuristic", "heuristic_auc_macro"),
                      ("motion_rule", "motion_rule_auc_macro")):
        aucs = [a[kind] for a in per_video.values() if a[kind] is not None]
        assert aucs and np.mean(aucs) == pytest.approx(m[key]), kind
    video, a = next((v, a) for v, a in per_video.items() if a["final"] is not None)
    text = f"final {a['final']:.3f}, learned {a['model']:.3f}, heuristic {a['heuristic']:.3f}"
    assert text in (base / "report.html").read_text()
    table = load_tool("bench_vad").video_table([{"variant": "base", **m}])
    assert f"{a['final']:.3f} / {a['model']:.3f} / {a['heuristic']:.3f}" in table and video in table
    assert load_tool("bench_vad").video_table([{"variant": "unlabeled"}]) == ""


def test_rescoring_separates_learned_score_fusion_and_postprocessing(generated, tmp_path):
    _, base = generated
    b = _metrics(base)
    m = _rescored(base, tmp_path / "fused", ["score.motion_weight=1", "score.per_video=true"])
    assert m["unprocessed"]["model_auc_micro"] == pytest.approx(b["unprocessed"]["model_auc_micro"])  # same model
    assert m["unprocessed"]["heuristic_auc_micro"] == pytest.approx(b["unprocessed"]["heuristic_auc_micro"])
    assert m["auc_micro"] != pytest.approx(m["model_auc_micro"])  # fused differs from the learned score alone
    assert m["model_auc_macro"] == pytest.approx(b["model_auc_macro"])  # per-video z-scores keep each video's order
    s = _rescored(base, tmp_path / "smoothed", ["score.smoothing=mean", "score.smooth_window=9"])
    assert s["model_auc_micro"] > 0.86 and s["model_auc_micro"] != pytest.approx(b["model_auc_micro"])  # 0.910
    assert main(["score", "--out", str(tmp_path / "smoothed"), "--set", "model.epochs=1", "--quiet"]) == 2


def test_semi_supervised_mode_on_the_generated_set(generated, tmp_path):
    root, _ = generated
    run = tmp_path / "semi"
    assert main(["run", "--config", CONFIG, "--root", str(root), "--out", str(run), "--cache", str(root.parent / "cache"),
                 "--train-on", "training", "--set", "model.epochs=3", "--quiet"]) == 0
    m = _metrics(run)
    assert m["train_on"] == "training" and m["model_auc_micro"] > 0.90, m["model_auc_micro"]  # measured 0.952
    # the motion energy as fused is measured against the training videos' cubes of its place (score.position_norm:
    # auto); the plain rule, the baseline, is reported beside it and from the same cubes
    with np.load(run / "cube_scores.npz") as cubes:
        assert not np.allclose(cubes["heuristic"], cubes["motion_energy"])
    assert m["motion_rule_auc_micro"] != m["heuristic_auc_micro"] and m["motion_rule_auc_micro"] > 0.5
    assert m["position_norm"] == "training"  # what the summary and report.html read to show the plain rule beside it
    # the fusion's fast share reads the scored videos' own speeds; with score.fast_reference=training (an option) it
    # reads the training videos' own frames: their heuristic's 99th percentile is the bar
    assert json.loads((run / "fusion.json").read_text())["reference"] == "scored videos"
    assert main(["score", "--out", str(run), "--set", "score.fast_reference=training"]) == 0
    fusion = json.loads((run / "fusion.json").read_text())
    assert fusion["reference"] == "training videos" and fusion["fast_percentile"] == 99.0
    assert fusion["heuristic_weight"] == pytest.approx(min(1.0, fusion["fast_share"] / 0.5))
    info = json.loads((run / "videos.json").read_text())
    assert [v["name"] for v in info["training"]["videos"]] == ["Train001", "Train002"]
    assert info["training"]["cache"] != info["cache"]


def test_semi_supervised_bank_of_training_and_scored_cubes(generated, tmp_path):
    """attributes.semi_bank=both: the density's bank holds the training and the scored cubes (the transductive
    exclusions and cleansing, each video its own group, each object its own track); the scored cubes' rarity equals
    that of a density fitted on the union's rows directly, and differs from the training-only bank's; and
    attributes.semi_mirror adds the training rows' mirror images to the training-only bank."""
    from pipelines.video.run_folder import cache_of, load_run
    from pipelines.video.stages import attribute_scores
    from vad.attributes import VELOCITY_COLUMNS, AttributeKNN, attribute_rows, mirrored_rows, velocity_histogram
    from vad.tracks import link_tracks

    root, _ = generated
    run = tmp_path / "both"
    assert main(["run", "--config", CONFIG, "--root", str(root), "--out", str(run), "--cache", str(root.parent / "cache"),
                 "--train-on", "training", "--set", "attributes.semi_bank=both", "--quiet"]) == 0
    assert _metrics(run)["model_auc_micro"] > 0.95  # 0.99 measured
    config, info = load_run(run)
    parts = []
    for part in (info, info["training"]):
        cache = cache_of(part)
        names = [v["name"] for v in part["videos"]]
        arrays = cache.load(names, fields=("boxes", "frame"))
        hist = np.concatenate([cache.map_rows(n, "flow", velocity_histogram) for n in names])
        parts.append((attribute_rows(hist, arrays["boxes"], False), arrays))
    (X, a), (T, t) = parts
    a_cfg = config.attributes
    tracks = [link_tracks(p["video"], p["frame"], p["boxes"], config.score.track_min_iou) for p in (a, t)]
    direct = AttributeKNN(k=a_cfg.k, exclude_frames=a_cfg.exclude_frames, cleanse=a_cfg.cleanse,
                          pooled=VELOCITY_COLUMNS).fit(np.concatenate([X, T]),
                                                        np.concatenate([a["video"], 100 + t["video"]]),
                                                        np.concatenate([a["frame"], t["frame"]]),
                                                        np.concatenate([tracks[0], 10**6 + tracks[1]]))
    both = attribute_scores(config, info)
    np.testing.assert_allclose(both, direct.decision_scores_[:len(X)], rtol=1e-5)
    config.attributes.semi_bank = "training"
    training = attribute_scores(config, info)
    assert not np.allclose(training, both)
    config.attributes.semi_mirror = True  # the training bank and its left-right mirror images
    mirrored = AttributeKNN(k=a_cfg.k, exclude_frames=-1, cleanse=0.0, pooled=VELOCITY_COLUMNS).fit(
        np.concatenate([T, mirrored_rows(T)])).decision_function(X)
    np.testing.assert_allclose(attribute_scores(config, info), mirrored, rtol=1e-5)
    assert not np.allclose(mirrored, training)


def test_any_videos_learn_from_normal_footage_given_with_train_videos(generated, tmp_path, capsys):
    """--videos with --train-videos: the semi-supervised mode for footage that is not a dataset. The same test and
    training videos give the same scores as the dataset's own semi-supervised run; without normal footage, or with
    --train-on test, it refuses before touching the run folder."""
    root, _ = generated
    cache = str(root.parent / "cache")
    dataset, footage = tmp_path / "dataset", tmp_path / "footage"
    assert main(["run", "--config", CONFIG, "--root", str(root), "--train-on", "training", "--out", str(dataset),
                 "--cache", cache, "--quiet"]) == 0
    assert main(["run", "--config", CONFIG, "--videos", str(root / "Test"), "--train-videos", str(root / "Train"),
                 "--out", str(footage), "--cache", cache, "--quiet"]) == 0
    info = json.loads((footage / "videos.json").read_text())
    assert info["training"]["source"] == str((root / "Train").resolve())
    assert [v["name"] for v in info["training"]["videos"]] == ["Train001", "Train002"]
    assert _metrics(footage)["train_on"] == "training" and "auc_micro" not in _metrics(footage)  # unlabeled
    with np.load(dataset / "cube_scores.npz") as a, np.load(footage / "cube_scores.npz") as b:
        assert np.array_equal(a["final"], b["final"]) and not np.allclose(b["heuristic"], b["motion_energy"])
    other = tmp_path / "other_camera"  # normal footage at another frame size
    other.mkdir()
    for t in range(8):
        cv2.imwrite(str(other / f"{t:03d}.png"), np.full((48, 64), 100 + t, np.uint8))
    for args, says in ((["--train-on", "training"], "--train-videos PATH"),
                       (["--train-videos", str(root / "Train"), "--train-on", "test"], "--train-on test"),
                       (["--train-videos", str(other)], "has 64x48 frames, the scored videos 160x120")):
        out = tmp_path / "refused"
        assert main(["run", "--config", CONFIG, "--videos", str(root / "Test"), "--out", str(out), "--cache", cache,
                     "--quiet", *args]) == 2
        assert says in capsys.readouterr().err and not out.exists()


def test_events_and_top_events_picture(generated):
    _, run = generated
    rows = list(csv.DictReader((run / "events.csv").open()))
    assert rows, "the percentile rule always marks some frames"
    labels = {v["name"]: v["labels"] for v in json.loads((run / "videos.json").read_text())["videos"]}
    hits = 0
    for r in rows:
        first, last, peak = int(r["first_frame"]), int(r["last_frame"]), int(r["peak_frame"])
        assert first <= peak <= last and last - first + 1 >= 3
        x1, y1, x2, y2 = (float(r[k]) for k in ("x1", "y1", "x2", "y2"))
        assert 0 <= x1 < x2 <= 160 and 0 <= y1 < y2 <= 120
        hits += labels[r["video"]][peak]
    assert hits / len(rows) >= 0.6, (hits, len(rows))  # event peaks fall on abnormal frames
    assert (run / "plots" / "top_events.png").stat().st_size > 10_000


def test_render_writes_an_annotated_mp4(generated, tmp_path):
    _, run = generated
    out = tmp_path / "Test002.mp4"
    assert main(["render", "--out", str(run), "--video", "Test002", "--output", str(out), "--quiet"]) == 0
    probe = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
                            "stream=nb_read_frames,width,height", "-of", "json", str(out)],
                           capture_output=True, text=True, check=True)
    stream = json.loads(probe.stdout)["streams"][0]
    assert int(stream["nb_read_frames"]) == 60 and stream["width"] == 160 and stream["height"] == 120 + 90
    assert main(["render", "--out", str(run), "--video", "nope", "--quiet"]) == 2


@pytest.fixture(scope="module")
def ped2_subset(tmp_path_factory):
    """Real UCSD Ped2: test videos 01 and 02 (360 frames, 206 abnormal) and training videos 01 and 02, linked."""
    root = tmp_path_factory.mktemp("ped2") / "ped2"
    for split, names in (("testing", ("01", "02")), ("training", ("01", "02"))):
        (root / split / "frames").mkdir(parents=True)
        for n in names:
            (root / split / "frames" / n).symlink_to(PED2 / split / "frames" / n)
    gt = load_mat_var(PED2 / "ped2.mat", "gt").ravel()
    cell = np.empty((1, 2), dtype=object)
    cell[0, 0], cell[0, 1] = gt[0], gt[1]
    scipy.io.savemat(str(root / "ped2.mat"), {"gt": cell})
    return root


@pytest.mark.slow  # real frames, flow and training: 13-17 s each without bf16
@pytest.mark.needs("data/ucsd_ped2")
@pytest.mark.parametrize("mode, floor", [("test", 0.84), ("training", 0.93)])  # measured 0.892, 0.980
def test_real_ped2_subset(ped2_subset, tmp_path, mode, floor):
    """The cloze generators' learned score has a floor on real frames; the default (attribute density with the
    fast-share fusion) ends at least at its motion-energy heuristic there."""
    run = tmp_path / mode
    common = ["--config", str(Path(CONFIG).parent / "ucsd_ped2.yaml"), "--root", str(ped2_subset),
              "--cache", str(tmp_path / "cache"), "--train-on", mode, "--quiet"]
    assert main(["run", *common, "--out", str(run), "--set", "attributes.use=off", "--set", "model.epochs=2"]) == 0
    m = _metrics(run)
    assert m["model_auc_micro"] > floor, (mode, m["model_auc_micro"], m["heuristic_auc_micro"])
    assert main(["run", *common, "--out", str(tmp_path / f"{mode}_default")]) == 0
    d = _metrics(tmp_path / f"{mode}_default")
    assert d["auc_micro"] >= d["heuristic_auc_micro"] - 1e-9 > 0.9, (mode, d["auc_micro"], d["heuristic_auc_micro"])


@pytest.mark.slow  # real frames warped and extracted: about 10 s
@pytest.mark.needs("data/ucsd_ped2")
def test_real_ped2_subset_in_perspective(ped2_subset, tmp_path):
    """Ped2's videos 01-02 warped so that far objects are a third of the near ones (as Ped1's camera sees them): the
    motion energy with its trend over position taken out (``score.perspective``) ranks the frames better than the
    plain rule, and so does the final score (measured: heuristic 0.872 against 0.779, final 0.903 against 0.867)."""
    from tests.tools import load_tool

    load_tool("resize_dataset").main(["--root", str(ped2_subset), "--perspective", "3", "--out", str(tmp_path / "p3")])
    run = tmp_path / "run"
    assert main(["run", "--config", str(Path(CONFIG).parent / "ucsd_ped2.yaml"), "--root", str(tmp_path / "p3"),
                 "--cache", str(tmp_path / "cache"), "--out", str(run), "--set", "score.perspective=true",
                 "--quiet"]) == 0
    m = _metrics(run)
    assert m["position_norm"] == "trend" and m["fusion"]["position_trend"]["spread"] > 1.2  # measured 1.49
    assert m["heuristic_auc_micro"] > m["motion_rule_auc_micro"] + 0.05, m
    assert main(["score", "--out", str(run), "--set", "score.perspective=false", "--quiet"]) == 0
    assert main(["eval", "--out", str(run), "--quiet"]) == 0
    plain = _metrics(run)
    assert plain["position_norm"] == "off" and m["auc_micro"] > plain["auc_micro"] + 0.01, (m, plain)
    # without the setting the same trend is measured, not applied (what the perspective hint reads)
    assert plain["fusion"]["perspective_spread"] == pytest.approx(m["fusion"]["position_trend"]["spread"])


def test_the_report_shows_the_plain_rule_where_the_heuristic_was_position_normalised():
    """report.html reads the recorded setting, not whether two AUCs happen to differ."""
    from pipelines.video.report import _metrics_table

    m = {"auc_micro": 0.9, "heuristic_auc_micro": 0.8, "motion_rule_auc_micro": 0.8}
    assert "plain motion-energy rule" not in _metrics_table({**m, "position_norm": "off"})
    assert "plain motion-energy rule" in _metrics_table({**m, "position_norm": "training"})


def test_the_report_names_only_the_region_sources_used():
    from pipelines.video.report import _regions_text
    from vad.config import load_config

    weights = ["regions.detector_weights=/w/yolo.weights"]
    assert _regions_text(load_config(None, weights).regions) == "detector, motion (detector yolo.weights)"
    assert _regions_text(load_config(None, [*weights, "regions.sources=[motion]"]).regions) == "motion"


def test_the_report_says_how_the_fusion_read_the_motion_energy():
    from pipelines.video.report import _fusion_text

    share = {"rule": "fast_share", "heuristic_weight": 1.0, "fast_share": 0.69}
    assert _fusion_text(share) == "fast_share: heuristic weight 1.00 (fast share 0.69)"
    trend = _fusion_text({**share, "position_trend": {"slope_x": 0.0, "slope_y": 0.007, "spread": 1.24}})
    assert trend.endswith("its trend over image position taken out (spread 1.24)")
    assert _fusion_text({"rule": "fixed", "motion_weight": 0.5}) == "fixed, motion weight 0.5"
    slivers = {"share_of_frame_maxima": 0.56, "cubes": 1741, "left_out": True, "sliver_share": 0.25}
    assert _fusion_text({**share, "slivers": slivers}).endswith("left out of the learned score (they held 56% of its "
                                                                 "frame maxima)")
    assert _fusion_text({**share, "slivers": {**slivers, "left_out": False}}) == _fusion_text(share)
