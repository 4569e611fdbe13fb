"""``image-od bench``: rows, resume, summary layout and profiles, on scikit-learn's digits with a tiny profile."""
import csv
import json

import pytest

from image_od.files.settings import ConfigError
from pipelines.images.bench import COLUMNS, bench, load_profile, summary_markdown
from pipelines.images.cli import main
from pipelines.images.methods import METHODS, SECTIONS

TINY = ["discriminative.backbone=wrn-10-1", "discriminative.operations=RA", "discriminative.epochs=2",
        "discriminative.ops_per_image=4", "discriminative.score_ops=8", "discriminative.precision=fp32",
        "e3outlier-ens.ensemble=2"]


def test_profiles_load_and_reject_unknown_keys():
    paper, cpu = load_profile("paper"), load_profile("cpu")
    grey = paper.settings("discriminative", colour=False)
    assert grey["backbone"] == "wrn-10-4" and grey["epochs"] is None and grey["optimizer"] == "sgd"
    assert paper.settings("discriminative", colour=True)["optimizer"] == "adam"
    assert grey["ops_per_image"] is None and grey["score_ops"] is None
    assert cpu.name == "cpu" and cpu.settings("discriminative", False)["ops_per_image"] is not None
    assert paper.settings("e3outlier-mcd", False, "discriminative")["dropout"] == 0.05
    assert load_profile("cpu", ["e3outlier-ens.ensemble=2"]).settings("e3outlier-ens", False)["ensemble"] == 2
    # the cpu profile widens the network on colour data only; a plain override applies to both kinds
    assert (cpu.settings("discriminative", False)["backbone"], cpu.settings("discriminative", True)["backbone"]) \
        == ("wrn-10-1", "wrn-10-2")
    assert (cpu.settings("discriminative", False)["score_ops_rule"],
            cpu.settings("discriminative", True)["score_ops_rule"]) == ("random", "confident")
    small = load_profile("cpu", ["discriminative.backbone=wrn-10-1"])
    assert small.settings("discriminative", True)["backbone"] == "wrn-10-1"
    assert load_profile("cpu", ["discriminative.colour.backbone=wrn-10-4"]).settings(
        "discriminative", True)["backbone"] == "wrn-10-4"
    with pytest.raises(ConfigError, match="unknown setting discriminative.widht"):
        load_profile("cpu", ["discriminative.widht=3"])
    with pytest.raises(ConfigError, match="unknown profile section 'nope'"):
        load_profile("cpu", ["nope.epochs=3"])
    with pytest.raises(ConfigError, match="unknown setting cae.grey.lrr"):
        load_profile("cpu", ["cae.grey.lrr=3"])


@pytest.mark.parametrize("name", ["paper", "cpu"])
def test_every_method_builds_its_detector_from_the_profile(name):
    """Every profile section and every registry line make valid detectors (the settings reach __init__ unchanged,
    the line's fixed settings over its section's; RATIO becomes the cell's ratio)."""
    from image_od.data.benchmarks import load_digits
    from pipelines.images.methods import RATIO, Cell

    profile = load_profile(name)
    cell = Cell(load_digits(), 0.1, 0, 0, profile, "cpu", False)
    for section in SECTIONS:
        model = cell.detector(section)
        for key, value in profile.settings(section, False).items():
            assert getattr(model, key) == value, (section, key)
    for method, line in METHODS.items():
        model = cell.detector(line.section, **line.fixed)
        for key, value in line.fixed.items():
            assert getattr(model, key) == (0.1 if value is RATIO else value), (method, key)
    assert len(METHODS) >= 40


def test_score_offers_the_methods_that_need_only_images():
    from pipelines.images.methods import SCORE_METHODS

    for method in ("e3outlier-g", "e3outlier", "e3outlier-rrw", "e3outlier-c", "cae-if", "iforest", "csi-synth",
                   "ae"):  # ELITE's autoencoder without re-weighting needs no labels
        assert method in SCORE_METHODS
    for method in ("adib", "adib-scratch", "adra", "res50-lof", "res50-if", "elite", "elite-ae", "pyod-iforest"):
        assert method not in SCORE_METHODS and METHODS[method].needs


@pytest.mark.slow  # 12 small trainings
@pytest.mark.parametrize("rule", ["random", "confident"])
def test_a_bench_row_equals_its_detector_fitted_alone(rule):
    """The bench shares networks between the discriminative rows of a cell; each row's scores are still those of
    the registry line's own detector, fitted and scored alone (as ``image-od score`` runs it), also where the
    ensemble's later members skip choosing their scored operations (``confident``)."""
    import numpy as np

    from image_od.data.benchmarks import load_digits
    from pipelines.images.methods import Cell, detector_settings

    profile = load_profile("cpu", TINY + ["max_size=100", "discriminative.epochs=1", "discriminative.ops_per_image=2",
                                          "e3outlier-jsr.ensemble=2", f"discriminative.score_ops_rule={rule}",
                                          "discriminative.score_ops_images=16"])
    cell = Cell(load_digits(), 0.1, 3, 0, profile, "cpu", False)
    for method in ("e3outlier-mp", "e3outlier-rrw", "e3outlier-ens", "e3outlier-jsr"):
        line = METHODS[method]
        alone = SECTIONS[line.section](**detector_settings(profile, line.section, False, line.fixed), seed=0,
                                       device="cpu", progress=False)
        np.testing.assert_allclose(alone.fit_score(cell.x), line(cell)[0], rtol=1e-5, atol=1e-6, err_msg=method)


def test_bench_writes_rows_resumes_and_summarises(tmp_path, monkeypatch):
    out = tmp_path / "bench"
    profile = load_profile("cpu", TINY)
    methods = ["e3outlier", "e3outlier-gtp", "iforest"]
    rows = bench("digits", methods, [0.1], ["0", "1"], [0], profile, out, progress=False)
    assert len(rows) == 6
    with (out / "results.csv").open() as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == COLUMNS and len(table) == 6
    assert {(r["method"], r["class"]) for r in table} == {(m, c) for m in methods for c in ("0", "1")}
    for r in table:
        assert float(r["fit_s"]) >= 0 and r["profile"] == "cpu"
    # above chance (measured on 2026-12-06: iforest 0.996 / 0.955, NE 0.64 / 0.64, GTP 0.72 / 0.87 after 2 epochs):
    # a constant or sign-flipped score fails
    assert all(float(r["auroc"]) > (0.9 if r["method"] == "iforest" else 0.55) for r in table), table
    # the NE and GTP rows of a class come from one shared fit
    by = {(r["method"], r["class"]): r for r in table}
    assert by[("e3outlier", "0")]["fit_s"] == by[("e3outlier-gtp", "0")]["fit_s"]
    assert (out / "profile-cpu.yaml").exists()
    env = json.loads((out / "env.json").read_text())
    assert env["precision"] == "fp32" and env["reference_workload_s"] > 0 and "avx512_bf16" in env["cpu"]["flags"]
    summary = (out / "summary.md").read_text()
    assert "digits ROC" in summary and "| e3outlier |" in summary and "ρ = 0.1" in summary

    from dataclasses import replace

    calls = []
    forest = METHODS["iforest"]
    monkeypatch.setitem(METHODS, "iforest", replace(forest, run=lambda cell: calls.append(cell) or (
        _ for _ in ()).throw(AssertionError("a finished row was recomputed"))))
    again = bench("digits", methods, [0.1], ["0", "1"], [0], profile, out, progress=False)
    assert len(again) == 6 and not calls

    # another setting of one method (issue 25: the old rows were reported as the new run's): its rows are computed
    # anew, the other methods' reused; results.csv keeps both versions, the summary and the return only this run's
    monkeypatch.setitem(METHODS, "iforest", replace(forest, run=lambda cell: calls.append(cell) or
                                                                 forest(cell)))
    other = load_profile("cpu", [*TINY, "iforest.n_estimators=7"])
    rows = bench("digits", methods, [0.1], ["0", "1"], [0], other, out, progress=False)
    assert len(calls) == 2 and len(rows) == 6
    with (out / "results.csv").open() as f:
        table = list(csv.DictReader(f))
    assert len(table) == 8 and len({r["settings"] for r in table if r["method"] == "iforest"}) == 2
    assert {r["settings"] for r in rows if r["method"] == "iforest"} == {table[-1]["settings"]}


def test_summary_reports_std_over_seeds():
    rows = [{"dataset": "d", "method": "m", "ratio": 0.1, "class": c, "seed": s, "auroc": a, "aupr_in": a,
             "aupr_out": a, "fit_s": 60.0, "score_s": 0.0} for s, c, a in
            [(0, "a", 0.8), (0, "b", 0.6), (1, "a", 0.9), (1, "b", 0.7)]]
    md = summary_markdown(rows)
    assert "| m | 75.0 ± 5.0 | 75.0 ± 5.0 | 75.0 ± 5.0 | 1.00 |" in md


def test_cli_bench_errors_are_clear(tmp_path, capsys):
    assert main(["bench", "--dataset", "digits", "--method", "nope", "--out", str(tmp_path)]) == 2
    assert "unknown methods" in capsys.readouterr().err
    assert main(["bench", "--dataset", "digits", "--classes", "11", "--out", str(tmp_path)]) == 2
    assert "has no class" in capsys.readouterr().err


def test_pyod_adapter_flattens_orients_and_names_the_missing_extra(monkeypatch):
    import sys
    import types

    import numpy as np

    from image_od.baselines.pyod import PyODDetector

    class FakeGAAL:  # PyOD's MO_GAAL interface: decision_scores_ = D(x) = P(real)
        def __init__(self, stop_epochs=20, contamination=0.1):
            self.stop_epochs = stop_epochs

        def fit(self, X):
            self.decision_scores_ = self.decision_function(X)
            return self

        def decision_function(self, X):
            return 1.0 / (1.0 + np.abs(X).sum(1))  # far from 0 = less "real"

    fake = types.ModuleType("pyod.models.mo_gaal")
    fake.MO_GAAL = FakeGAAL
    monkeypatch.setitem(sys.modules, "pyod.models.mo_gaal", fake)
    x = np.zeros((5, 1, 4, 4), np.float32)
    x[4] = 1.0
    model = PyODDetector(model="mo-gaal", settings={"stop_epochs": 2}).fit(x)
    assert model.model_.stop_epochs == 2 and np.argmax(model.decision_scores_) == 4  # 1 - D(x): higher = outlier
    np.testing.assert_array_equal(model.decision_function(x), model.decision_scores_)
    monkeypatch.setitem(sys.modules, "pyod.models.iforest", None)  # as if PyOD were not installed
    with pytest.raises(ImportError, match="pip install pyod"):
        PyODDetector(model="iforest").fit(x)


def test_one_class_and_polluted_protocols_fit_on_training_data_and_score_the_test_split(tmp_path, monkeypatch):
    import numpy as np

    from image_od.detector import OutlierDetector
    from pipelines.images.methods import own

    seen = {}

    class Spy(OutlierDetector):  # records what the protocol gives to fit
        def __init__(self, *, seed=0, device="auto", progress=False):
            pass

        def fit(self, X, X_val=None, y_val=None):
            seen.update(n_fit=len(X), val=None if y_val is None else (len(X_val), int(y_val.sum())))
            return self

        def decision_function(self, X):
            return -np.abs(X).mean(axis=(1, 2, 3))

    monkeypatch.setitem(SECTIONS, "spy", Spy)
    monkeypatch.setitem(METHODS, "spy", own("spy"))
    profile = load_profile("cpu", ["max_size=150"])  # SECTIONS holds the spy now
    rows = bench("digits", ["spy", "iforest"], [0.2], ["3"], [0], profile, tmp_path / "oc", progress=False,
                 protocol="one-class")
    assert {r["protocol"] for r in rows} == {"one-class"} and len(rows) == 2
    assert seen["val"] is None and seen["n_fit"] <= 150 and rows[0]["n"] == 150  # inliers only / test subsample
    assert 0 < rows[0]["n_outliers"] < 150
    profile.max_size = 100  # digits has 121 training 3s: 80 in the pool, 10 for validation
    rows = bench("digits", ["spy"], [0.2], ["3"], [0], profile, tmp_path / "pol", progress=False, protocol="polluted")
    assert seen["n_fit"] == 100 and seen["val"] == (20, 10)  # the pool; 10 + 10 labelled validation images
    assert "digits (polluted)" in (tmp_path / "pol" / "summary.md").read_text()


@pytest.mark.slow
def test_transfer_methods_get_the_profiles_exposure_corpus(tmp_path, monkeypatch):
    """ADIB is fitted against the profile's outlier-exposure corpus (named Fashion-MNIST, digits images here) and
    theta0 from a local file written by the pretraining function; other methods never load the corpus."""
    import torch

    from image_od.data.benchmarks import load_digits
    from image_od.data.protocol import to_model_input
    from image_od.related.transfer import pretrain_resnet26
    from pipelines.images import methods

    train = load_digits()
    keep = train.train_labels >= 5
    net, _ = pretrain_resnet26(to_model_input(train.train_images[keep]), train.train_labels[keep] - 5, epochs=1,
                               widths=(8, 16, 32), blocks=1, precision="fp32", device="cpu")
    torch.save(net.state_dict(), tmp_path / "theta0.pt")
    profile = load_profile("cpu", ["max_size=120", f"adib.weights={tmp_path / 'theta0.pt'}", "adib.widths=[8,16,32]",
                                   "adib.blocks=1", "adib.epochs=1", "adib.precision=fp32",
                                   "exposure.grey.dataset=fashion-mnist"])
    loads = []
    monkeypatch.setattr(methods, "exposure_images",
                        lambda *a: loads.append(a) or to_model_input(train.train_images[keep][:120]))
    rows = bench("digits", ["iforest", "adib"], [0.0], ["1"], [0], profile, tmp_path / "oc", progress=False,
                 protocol="one-class")
    assert [r["method"] for r in rows] == ["iforest", "adib"] and len(loads) == 1 and loads[0][0] == "fashion-mnist"
    assert 0.5 < rows[1]["auroc"] <= 1.0
    # a corpus that is the dataset under test would hold its anomaly classes: refused
    leaky = load_profile("cpu", ["max_size=120", "exposure.grey.dataset=digits"])
    with pytest.raises(ValueError, match="corpus of the profile is digits, the dataset under test"):
        bench("digits", ["adib"], [0.0], ["1"], [0], leaky, tmp_path / "leak", progress=False, protocol="one-class")


def test_table_puts_methods_of_several_runs_side_by_side(tmp_path, capsys):
    """``image-od table``: one column group per dataset/protocol/ratio, means over classes, "-" where missing."""
    from pipelines.images.bench import write_rows

    def row(dataset, protocol, method, cls, auroc, seconds):
        return {"dataset": dataset, "protocol": protocol, "method": method, "ratio": 0.1, "class": cls, "seed": 0,
                "auroc": auroc, "aupr_in": 0.9, "aupr_out": 0.5, "ap_out": 0.5, "fit_s": seconds, "score_s": 0.0,
                "n": 100, "n_outliers": 10, "profile": "cpu", "settings": "abc"}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    write_rows(tmp_path / "a" / "results.csv", [row("digits", "transductive", "iforest", "0", 0.8, 0.0),
                                                row("digits", "transductive", "iforest", "1", 0.9, 0.0),
                                                row("digits", "transductive", "cae", "0", 0.6, 120.0)])
    write_rows(tmp_path / "b" / "results.csv", [row("digits", "one-class", "csi", "0", 0.95, 60.0)])
    table = ["table", str(tmp_path / "a"), str(tmp_path / "b" / "results.csv"), "--out", str(tmp_path / "t.md")]
    assert main(table) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == ("| method | digits transductive ρ=0.1 ROC | classes | min/class | digits one-class ROC "
                        "| classes | min/class |")
    assert lines[2:] == ["| iforest | 85.0 | 2 | 0.00 | - | - | - |", "| cae | 60.0 | 1 | 2.00 | - | - | - |",
                         "| csi | - | - | - | 95.0 | 1 | 1.00 |"]
    assert (tmp_path / "t.md").read_text().splitlines() == lines
    assert main(["table", str(tmp_path / "a"), str(tmp_path / "b"), "--method", "csi", "iforest"]) == 0
    assert [line.split(" |")[0] for line in capsys.readouterr().out.splitlines()[2:]] == ["| csi", "| iforest"]
    assert main(["table", str(tmp_path / "a"), "--method", "nope"]) == 2
    # ratios ascend within a dataset/protocol group, whatever order the runs hold them in
    (tmp_path / "d").mkdir()
    write_rows(tmp_path / "d" / "results.csv", [dict(row("digits", "polluted", "ae", "0", 0.7, 6.0), ratio=r)
                                                for r in (0.3, 0.1, 0.2)])
    capsys.readouterr()
    assert main(["table", str(tmp_path / "d")]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert [part.rsplit("=", 1)[-1] for part in header.split(" ROC")[:-1]] == ["0.1", "0.2", "0.3"]
    # the same rows in two runs (a variant) are refused, not averaged
    (tmp_path / "c").mkdir()
    write_rows(tmp_path / "c" / "results.csv", [row("digits", "transductive", "cae", "0", 0.7, 30.0)])
    assert main(["table", str(tmp_path / "a"), str(tmp_path / "c")]) == 2
    assert "both hold cae on digits (transductive, ratio 0.1, class 0, seed 0)" in capsys.readouterr().err
    # the Table 1 summary names the ratio r_p when the rows are polluted, and no ratio when they are one-class
    polluted = [row("digits", "polluted", "elite", "0", 0.9, 1.0)]
    assert "| **r_p = 0.1** |" in summary_markdown(polluted)
    assert "| **no outliers in training (one-class)** |" in summary_markdown(
        [dict(row("digits", "one-class", "csi", "0", 0.9, 1.0), ratio=0.0)])


def test_a_labelled_folder_set_runs_with_the_settings_of_its_kind(tmp_path, capsys):
    """``--dataset folders``: grey or colour settings follow the images, not the dataset's name."""
    import cv2
    import numpy as np

    from image_od.data.benchmarks import load_dataset
    from pipelines.images.methods import Cell

    rng = np.random.default_rng(0)
    for split, n in (("train", 30), ("test", 10)):
        for cls, level in (("dark", 60), ("light", 190)):
            (tmp_path / "set" / split / cls).mkdir(parents=True)
            for i in range(n):
                cv2.imwrite(str(tmp_path / "set" / split / cls / f"{i}.png"),
                            np.clip(rng.normal(level, 20, (28, 28)), 0, 255).astype(np.uint8))
    out = tmp_path / "run"
    assert main(["bench", "--dataset", "folders", "--root", str(tmp_path / "set"), "--method", "iforest",
                 "--classes", "dark", "--out", str(out), "--quiet"]) == 0
    (row,) = list(csv.DictReader((out / "results.csv").open()))
    assert row["dataset"] == "set" and row["class"] == "dark" and float(row["auroc"]) > 0.95
    cpu = load_profile("cpu")
    grey = Cell(load_dataset("folders", tmp_path / "set"), 0.1, 0, 0, cpu, "cpu", False)
    assert grey.detector("discriminative").backbone == "wrn-10-1"
    cv2.imwrite(str(tmp_path / "set" / "test" / "dark" / "rgb.png"), np.zeros((28, 28, 3), np.uint8) + [0, 0, 90])
    colour = Cell(load_dataset("folders", tmp_path / "set"), 0.1, 0, 0, cpu, "cpu", False)
    assert colour.x.shape[1] == 3 and colour.detector("discriminative").backbone == "wrn-10-2"
    with pytest.raises(SystemExit):
        main(["bench", "--dataset", "nope", "--out", str(out)])
    assert "invalid choice: 'nope'" in capsys.readouterr().err


def test_the_readme_method_table_is_the_registry():
    """README's table of image methods is printed by tools/method_table.py from the registry: regenerate it when
    a method is added."""
    import importlib.util
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("method_table", repo / "tools" / "method_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.table() in (repo / "README.md").read_text()
