"""``image-od bench``: rows, resume, summary layout and profiles, on scikit-learn's digits with a tiny profile."""
import csv
import json

import pytest

from pipelines import image_od_bench
from pipelines.image_od_bench import COLUMNS, DiscriminativeProfile, bench, load_profile, summary_markdown
from pipelines.image_od_cli import main

TINY = ["discriminative.backbone=wrn-10-1", "discriminative.operations=RA", "discriminative.epochs=2",
        "discriminative.ops_per_image=4", "discriminative.score_ops=8", "discriminative.precision=fp32",
        "discriminative.ensemble=2"]


def test_profiles_load_and_reject_unknown_keys():
    paper, cpu = load_profile("paper"), load_profile("cpu")
    assert paper.discriminative.backbone == "wrn-10-4" and paper.discriminative.epochs is None
    assert paper.discriminative.ops_per_image is None and paper.discriminative.score_ops is None
    assert cpu.name == "cpu" and cpu.discriminative.ops_per_image is not None
    assert paper.discriminative.precision == cpu.discriminative.precision == DiscriminativeProfile().precision == "auto"
    assert load_profile("cpu", ["discriminative.ensemble=2"]).discriminative.ensemble == 2
    with pytest.raises(ValueError, match="unknown config key"):
        load_profile("cpu", ["discriminative.widht=3"])


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
        assert 0 <= float(r["auroc"]) <= 1 and float(r["fit_s"]) >= 0 and r["profile"] == "cpu"
    # the NE and GTP rows of a class come from one shared fit
    by = {(r["method"], r["class"]): r for r in table}
    assert by[("e3outlier", "0")]["fit_s"] == by[("e3outlier-gtp", "0")]["fit_s"]
    assert (out / "profile-cpu.yaml").exists()
    env = json.loads((out / "env.json").read_text())
    assert env["precision"] == "fp32" and env["reference_workload_s"] > 0 and "avx512_bf16" in env["cpu"]["flags"]
    summary = (out / "summary.md").read_text()
    assert "digits ROC" in summary and "| e3outlier |" in summary and "ρ = 0.1" in summary

    calls = []
    monkeypatch.setitem(image_od_bench.METHODS, "iforest", lambda cell: calls.append(cell) or (_ for _ in ()).throw(
        AssertionError("a finished row was recomputed")))
    again = bench("digits", methods, [0.1], ["0", "1"], [0], profile, out, progress=False)
    assert len(again) == 6 and not calls


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
