"""Alarm thresholds without labels (issue 27): how each ``events.threshold`` rule's alarms meet the labels.

For every labelled run folder given, each rule is applied to the run's final frame scores exactly as ``vad score``
applies it (``vad.events.event_threshold`` and ``find_events`` with the run's ``min_length`` and ``merge_gap``),
and the alarms are measured (``vad.metrics.alarm_metrics``): frame-level precision, recall and F1, the share of
abnormal intervals hit by an event, and false alarms per minute. The rule is chosen on ``--choose-on`` (the
generated development set by default: never a dataset a figure is reported for) by frame F1; the table marks that
run "chosen on this data" and the others "transfer".

  python tools/bench_thresholds.py --run demo=runs/demo,25 --run ped2=runs/ped2,10 --run avenue=runs/avenue,25 \
      --choose-on demo --out runs/bench_thresholds
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from pipelines.video.run_folder import read_frame_scores  # noqa: E402
from vad.config import load_config  # noqa: E402
from vad.events import event_threshold, find_events  # noqa: E402
from vad.metrics import alarm_metrics  # noqa: E402

RULES = {"percentile": {"threshold": "percentile", "percentile": 95.0}, "mad": {"threshold": "mad", "mad_k": 3.0},
         "mixture": {"threshold": "mixture"}}


def measure(run: Path, fps: float) -> dict[str, dict]:
    config = load_config(run / "config.yaml")
    frames = read_frame_scores(run)
    if any(d["label"] is None for d in frames.values()):
        raise ValueError(f"{run}: unlabelled videos; the rules can only be measured against labels")
    scores, labels = [d["score"] for d in frames.values()], [d["label"] for d in frames.values()]
    out = {}
    for name, settings in RULES.items():
        s = SimpleNamespace(**{"percentile": 95.0, "mad_k": 3.0, **settings})
        value, rule = event_threshold(scores, s)
        events = [find_events(x, value, config.events.min_length, config.events.merge_gap) for x in scores]
        out[name] = {"threshold": value, "rule": rule, **alarm_metrics(events, labels, fps)}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", action="append", required=True, metavar="NAME=FOLDER,FPS",
                   help="a labelled vad run folder and its videos' frame rate")
    p.add_argument("--choose-on", required=True, help="the run (NAME) the rule is chosen on, by frame F1")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    runs = {}
    for spec in args.run:
        name, rest = spec.split("=", 1)
        folder, fps = rest.rsplit(",", 1)
        runs[name] = measure(Path(folder), float(fps))
    chosen = max(RULES, key=lambda r: runs[args.choose_on][r]["f1"])
    lines = [f"Rule chosen on {args.choose_on} by frame F1: **{chosen}**\n",
             "| data | rule | threshold | precision | recall | F1 | intervals hit | events | false alarms / min "
             "| status |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name, rows in runs.items():
        for rule, m in rows.items():
            status = "chosen on this data" if name == args.choose_on else ("transfer" if rule == chosen else "")
            lines.append(f"| {name} | {m['rule']}{' (chosen)' if rule == chosen else ''} | {m['threshold']:.3g} | "
                         f"{m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | {m['hits']:.2f} of "
                         f"{m['abnormal_intervals']} | {m['events']} | {m['false_alarms_per_min']:.2f} | {status} |")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "thresholds.json").write_text(json.dumps({"chosen_on": args.choose_on, "chosen": chosen, "runs": runs},
                                                    indent=1))
    (out / "thresholds.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
