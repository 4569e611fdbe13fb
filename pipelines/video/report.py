"""``report.html``: one self-contained page per video run, for a person reviewing the footage.

What the run was (data, settings, versions), how well it did where labels exist (final score, learned score alone,
motion-energy heuristic; ROC; localisation against pixel masks), every video's score curve with abnormal frames
shaded and the alarms marked, and the alarms themselves in a sortable table with a thumbnail of each one's peak
frame and box, linking to rendered MP4s (``vad report --render-top N``). Curves and the ROC are inline SVG and the
thumbnails inline JPEG, so the page opens offline and alone; its links (CSV, JSON, MP4) point into the run folder.
"""
from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from sklearn.metrics import roc_curve

from image_od.files.atomic import atomic_path
from pipelines.figures import PAGE_SCRIPT
from pipelines.video import run_folder
from pipelines.video.render import read_frames_at, render_video
from vad.config import RegionConfig

MAX_THUMBNAILS = 300  # events with a thumbnail, by peak score: bounds the page on long footage
THUMB_WIDTH = 192
CURVE_POINTS = 600  # a curve's samples at most (max-pooled, so peaks survive)
CURVE_W, CURVE_H = 900, 110


def _json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def _thumbnails(info: dict[str, Any], events: list[dict[str, Any]], bad_frames: str) -> dict[int, str]:
    """Data URIs of small JPEGs of each event's peak frame with its box (the ``MAX_THUMBNAILS`` highest events)."""
    chosen = sorted(range(len(events)), key=lambda i: -events[i]["peak_score"])[:MAX_THUMBNAILS]
    paths = {v["name"]: Path(v["path"]) for v in info["videos"]}
    thumbs = {}
    for name in {events[i]["video"] for i in chosen}:
        mine = [i for i in chosen if events[i]["video"] == name]
        frames = read_frames_at(paths[name], {events[i]["peak_frame"] for i in mine}, bad_frames)
        for i in mine:
            img = frames.get(events[i]["peak_frame"])
            if img is None:
                continue
            img = img.copy()
            if events[i]["box"] is not None:
                x1, y1, x2, y2 = (int(round(c)) for c in events[i]["box"])
                cv2.rectangle(img, (x1, y1), (x2, y2), (0, 0, 255), max(2, img.shape[1] // 160))
            scale = THUMB_WIDTH / img.shape[1]
            img = cv2.resize(img, (THUMB_WIDTH, max(1, round(img.shape[0] * scale))), interpolation=cv2.INTER_AREA)
            ok, jpeg = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 75])
            if ok:
                thumbs[i] = "data:image/jpeg;base64," + base64.b64encode(jpeg.tobytes()).decode()
    return thumbs


def _pool(x: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(frame positions, values) of ``x`` max-pooled to at most ``n`` points."""
    if len(x) <= n:
        return np.arange(len(x), dtype=float), x
    edges = np.linspace(0, len(x), n + 1).astype(int)
    return (edges[:-1] + edges[1:] - 1) / 2, np.maximum.reduceat(x, edges[:-1])


def _curve_svg(name: str, d: dict[str, np.ndarray], events: list[tuple[int, dict]], lo: float, hi: float,
               threshold: float | None) -> str:
    """One video's final score (blue) and motion energy (grey, rescaled) over its frames, abnormal frames shaded
    red, alarms as orange bars linking to their table rows, the alarm threshold dashed."""
    n = len(d["score"])
    sx = CURVE_W / max(n - 1, 1)

    def y(v: np.ndarray | float) -> np.ndarray | float:
        return CURVE_H - 6 - (np.asarray(v) - lo) / max(hi - lo, 1e-9) * (CURVE_H - 16)

    parts = [f'<svg viewBox="0 0 {CURVE_W} {CURVE_H}" class="curve" role="img" aria-label="scores of video '
             f'{html.escape(name)}">']
    if d["label"] is not None:
        edges = np.flatnonzero(np.diff(np.r_[0, d["label"].astype(int), 0]))
        for a, b in zip(edges[::2], edges[1::2]):
            parts.append(f'<rect x="{(a - 0.5) * sx:.1f}" y="0" width="{(b - a) * sx:.1f}" height="{CURVE_H}" '
                         f'class="abnormal"><title>abnormal frames {a}-{b - 1} (label)</title></rect>')
    h = d["heuristic"]
    h_scaled = lo + (h - h.min()) / max(np.ptp(h), 1e-9) * (hi - lo)
    for values, cls in ((h_scaled, "heuristic"), (d["score"], "final")):
        xs, vs = _pool(values, CURVE_POINTS)
        points = " ".join(f"{x * sx:.1f},{v:.1f}" for x, v in zip(xs, y(vs)))
        parts.append(f'<polyline points="{points}" class="{cls}"/>')
    if threshold is not None and lo <= threshold <= hi:
        parts.append(f'<line x1="0" x2="{CURVE_W}" y1="{y(threshold):.1f}" y2="{y(threshold):.1f}" class="thr"/>')
    for k, e in events:
        parts.append(f'<a href="#event-{k}"><rect x="{(e["first_frame"] - 0.5) * sx:.1f}" y="0" '
                     f'width="{max((e["last_frame"] - e["first_frame"] + 1) * sx, 3):.1f}" height="6" class="event">'
                     f'<title>alarm {k}: frames {e["first_frame"]}-{e["last_frame"]}, peak {e["peak_score"]:.2f}'
                     f'</title></rect></a>')
    parts.append("</svg>")
    return "".join(parts)


def _roc_svg(frames: dict[str, dict[str, np.ndarray]]) -> str:
    y = np.concatenate([d["label"] for d in frames.values()])
    size, pad = 320, 36
    parts = [f'<svg viewBox="0 0 {size + pad} {size + pad}" class="roc" role="img" aria-label="ROC">',
             f'<rect x="{pad}" y="0" width="{size}" height="{size}" class="frame"/>',
             f'<line x1="{pad}" y1="{size}" x2="{pad + size}" y2="0" class="chance"/>',
             f'<text x="{pad + size / 2}" y="{size + 28}" text-anchor="middle">false positive rate</text>',
             f'<text x="12" y="{size / 2}" transform="rotate(-90 12 {size / 2})" text-anchor="middle">'
             f'true positive rate</text>']
    for key, cls in (("heuristic", "heuristic"), ("model", "model"), ("score", "final")):
        fpr, tpr, _ = roc_curve(y, np.concatenate([d[key] for d in frames.values()]))
        keep = np.unique(np.r_[np.linspace(0, len(fpr) - 1, min(len(fpr), 400)).astype(int), len(fpr) - 1])
        points = " ".join(f"{pad + f * size:.1f},{size - t * size:.1f}" for f, t in zip(fpr[keep], tpr[keep]))
        parts.append(f'<polyline points="{points}" class="{cls}"/>')
    parts.append("</svg>")
    return "".join(parts)


# the spread of the motion energy's trend over position (vad.scoring.position_trend; fusion.json's
# perspective_spread) from which a transductive run without score.perspective suggests it: side views measured
# 1.03-1.51 (Ped2, Avenue partial, the generated set, Avenue shrunk to 320x180), Ped2 warped into perspective
# 1.38-2.29 (the setting helped every one), vtest.avi's street 2.41 (docs/BENCHMARKS_LOG.md, "A hint where the
# camera sees its scene in perspective"); a hint, no score changes
PERSPECTIVE_HINT_SPREAD = 1.6


def perspective_hint(fusion: dict[str, Any]) -> str:
    """A sentence for the user where the score stage measured (``fusion["perspective_spread"]``) that the moving
    objects' motion energy changes strongly with image position, as under a camera that looks along its scene;
    "" otherwise."""
    spread = fusion.get("perspective_spread", 1.0)
    if spread < PERSPECTIVE_HINT_SPREAD:
        return ""
    return (f"hint: the moving objects' motion energy changes {spread:.1f}-fold across the image (its fitted trend "
            "over position, 10th to 90th percentile), as when a camera looks along its scene and near objects move "
            "more pixels; if yours does, score the run again with `vad score --out RUN --set score.perspective=true` "
            "(then `vad eval` and `vad report`), or set it in your config")


def _fusion_text(fusion: dict[str, Any]) -> str:
    """What the score stage's fusion read and chose (``fusion.json``), in one line."""
    text = (f"{fusion.get('rule', '?')}: heuristic weight {fusion['heuristic_weight']:.2f} (fast share "
            f"{fusion['fast_share']:.2f})" if "heuristic_weight" in fusion
            else f"{fusion.get('rule', '?')}, motion weight {fusion.get('motion_weight', '?')}")
    if "position_trend" in fusion:
        text += f"; motion energy with its trend over image position taken out (spread " \
                f"{fusion['position_trend']['spread']:.2f})"
    if fusion.get("slivers", {}).get("left_out"):
        text += f"; slivers of slow objects left out of the learned score (they held " \
                f"{fusion['slivers']['share_of_frame_maxima']:.0%} of its frame maxima)"
    hint = perspective_hint(fusion)
    return f"{text}. {hint[0].upper()}{hint[1:]}" if hint else text


def _regions_text(regions: RegionConfig) -> str:
    """The region sources (``RegionConfig``) with the files that the used ones read."""
    sources = regions.sources or []
    return (", ".join(sources)
            + (f" (detector {Path(regions.detector_weights).name})"
               if "detector" in sources and regions.detector_weights else "")
            + (f" (boxes {Path(regions.box_file).name})" if "file" in sources and regions.box_file else ""))


def _metrics_table(m: dict[str, Any]) -> str:
    def cell(key: str) -> str:
        value = m.get(key)
        return "–" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.3f}"

    rows = [("final score", ""), ("learned score alone", "model_"), ("motion-energy heuristic", "heuristic_")]
    if m.get("position_norm", "off") != "off":  # the heuristic was position-normalised: the plain rule beside it
        rows.append(("plain motion-energy rule", "motion_rule_"))
    body = "".join(f"<tr><th>{label}</th><td>{cell(p + 'auc_micro')}</td><td>{cell(p + 'auc_macro')}</td>"
                   f"<td>{cell(p + 'eer')}</td></tr>" for label, p in rows)
    return ("<table class='metrics'><tr><th></th><th>micro AUC</th><th>macro AUC</th><th>EER</th></tr>"
            f"{body}</table><p class='muted'>Macro AUC is the mean of each video's own AUC (under its curve below), "
            "leaving out videos whose frames are all normal or all abnormal.</p>")


def _video_auc_text(aucs: dict[str, float | None] | None) -> str:
    """", frame AUC: final 0.903, learned 0.873, heuristic 0.932" for a video's entry of ``per_video_auc``; what
    stands instead where its frames are all of one kind; "" without labels."""
    if not aucs:
        return ""
    if aucs["final"] is None:
        return "; no AUC (its frames are all normal or all abnormal)"
    return (f"; frame AUC: final {aucs['final']:.3f}, learned {aucs['model']:.3f}, "
            f"heuristic {aucs['heuristic']:.3f}")


def _localisation(m: dict[str, Any]) -> str:
    loc = m.get("localisation")
    if not loc:
        skipped = m.get("localisation_skipped")
        return f"<p class='muted'>Localisation not measured: {html.escape(skipped)}.</p>" if skipped else ""
    some = (f" ({loc['n_videos']} of the {loc['n_videos_total']} videos have them)"
            if loc["n_videos"] < loc["n_videos_total"] else "")
    return (f"<p>Where, against the pixel masks{some}: RBDC <b>{loc['rbdc']:.3f}</b>, TBDC <b>{loc['tbdc']:.3f}</b> "
            f"({loc['n_regions']} abnormal regions in {loc['n_tracks']} tracks; a region is found by a box with IoU "
            f"&ge; {loc['beta']}), pixel-level AUC {loc['pixel_auc']:.3f}.</p>")


STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:24px auto;max-width:1000px;color:#222;
line-height:1.4} h1{font-size:1.5em} h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}
dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 16px} dt{font-weight:600} dd{margin:0}
table{border-collapse:collapse;font-size:.92em} th,td{padding:4px 8px;border-bottom:1px solid #eee;text-align:left}
table.events th{cursor:pointer;background:#f6f6f6;position:sticky;top:0} table.events img{display:block}
svg.curve{width:100%;height:auto;background:#fafafa;border:1px solid #e4e4e4}
svg polyline{fill:none;stroke-width:1.4} .final{stroke:#1f62b4} .model{stroke:#2a9d3a}
.heuristic{stroke:#999;stroke-dasharray:3 2} rect.abnormal{fill:#d33;opacity:.16} rect.event{fill:#f08c00}
line.thr{stroke:#f08c00;stroke-dasharray:5 3} svg.roc{width:340px} rect.frame{fill:none;stroke:#ccc}
line.chance{stroke:#bbb;stroke-dasharray:2 2} .legend span{margin-right:14px} .video{margin:14px 0}
.muted{color:#777} tr.normal td{opacity:.85}
"""

def write_report(out: str | Path, render_top: int = 0, progress: bool = True) -> Path:
    """Write ``out/report.html`` for a scored run (``render_top``: first render the videos of the N highest events
    to ``render/``, linked from the page) and return its path."""
    out = Path(out)
    config, info = run_folder.load_run(out)
    frames = run_folder.read_frame_scores(out)
    metrics, fusion, alarms, env = (_json(out / n) for n in ("metrics.json", "fusion.json", "events.json", "env.json"))
    events = run_folder.read_events(out)
    by_score = sorted(range(len(events)), key=lambda i: -events[i]["peak_score"])
    if render_top:
        for name in dict.fromkeys(events[i]["video"] for i in by_score[:render_top]):
            render_video(out, name, progress=progress)
    bad_frames = run_folder.checked_bad_frames(out)
    thumbs = _thumbnails(info, events, bad_frames)
    labelled = all(d["label"] is not None for d in frames.values())
    all_scores = np.concatenate([d["score"] for d in frames.values()])
    lo, hi = float(all_scores.min()), float(all_scores.max())
    threshold = alarms.get("threshold")
    esc = html.escape
    n_frames = sum(len(d["score"]) for d in frames.values())
    settings = [
        ("data", f"{esc(str(info.get('source', '')))}: {len(frames)} video{'s' * (len(frames) != 1)}, "
                 f"{n_frames:,} frames, {metrics.get('n_cubes', 0):,} cubes"),
        ("mode", "transductive (learns from the scored videos themselves)" if config.model.train_on == "test" else
                 "semi-supervised (fitted on the training videos)"),
        ("regions", esc(_regions_text(config.regions))),
        ("learned score", "object-attribute density" if config.attributes.use == "alone" else
                          f"cloze generators ({esc(', '.join(config.model.targets))})" +
                          (" + attribute density" if config.attributes.use == "sum" else "")),
        ("fusion", esc(_fusion_text(fusion))),
        ("alarms", esc(f"{alarms.get('n_events', len(events))} events; threshold {threshold:.3g} "
                       f"({alarms.get('rule', '?')})") if threshold is not None else "none"),
        ("software", esc(f"git {str(env['git_commit'])[:10] if env.get('git_commit') else 'unknown (not a checkout)'}, "
                         f"torch {env.get('versions', {}).get('torch', '?')}, seed {env.get('seed', '?')}")),
        ("files", " · ".join(f'<a href="{n}">{n}</a>' for n in ("frame_scores.csv", "events.csv", "metrics.json",
                                                                 "config.yaml") if (out / n).is_file())),
    ]
    if metrics.get("timings"):
        settings.append(("time", esc(", ".join(f"{k} {v}" for k, v in metrics["timings"].items()))))
    parts = ["<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
             f"<title>{esc(config.name)}: anomaly report</title><style>{STYLE}</style></head><body>",
             f"<h1>Anomaly report: {esc(config.name)} <span class='muted'>({esc(out.resolve().name)})</span></h1>",
             "<dl>" + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in settings) + "</dl>"]
    if labelled and "auc_micro" in metrics:
        parts += ["<h2>How well it did</h2><div style='display:flex;gap:32px;flex-wrap:wrap'><div>",
                  _metrics_table(metrics), "</div><div><p class='legend'><span style='color:#1f62b4'>&#9644; final "
                  "score</span><span style='color:#2a9d3a'>&#9644; learned alone</span><span style='color:#999'>"
                  "&#9644; motion energy</span></p>", _roc_svg(frames), "</div></div>", _localisation(metrics)]
    else:
        parts.append("<p class='muted'>No labels: scores and alarms only.</p>")
    parts.append(f"<h2 id='alarms'>Alarms ({len(events)})</h2>")
    if events:
        capped = "" if len(events) <= MAX_THUMBNAILS else f" (the {MAX_THUMBNAILS} highest alarms only)"
        parts.append("<p class='muted'>Click a column to sort; the thumbnail shows the peak frame and the box of its "
                     f"most anomalous object{capped}.</p>"
                     "<table class='events sortable'><thead><tr><th>#</th><th>video</th><th>frames</th><th>length</th>"
                     "<th>peak score</th>" + ("<th>at the peak</th>" if labelled else "") +
                     "<th>peak frame</th><th>video file</th></tr></thead><tbody>")
        for rank, i in enumerate(by_score, 1):
            e = events[i]
            label = frames[e["video"]]["label"]
            truth = "" if not labelled else (
                f"<td data-sort='{int(label[e['peak_frame']])}'>{'abnormal' if label[e['peak_frame']] else 'normal'}"
                "</td>")
            mp4 = out / "render" / f"{e['video']}.mp4"
            link = (f'<a href="render/{esc(e["video"])}.mp4">MP4</a>' if mp4.is_file() else
                    "<span class='muted'>–</span>")
            thumb = (f'<img src="{thumbs[i]}" width="{THUMB_WIDTH}" alt="peak frame {e["peak_frame"]} of video '
                     f'{esc(e["video"])}">' if i in thumbs else "<span class='muted'>–</span>")
            parts.append(f"<tr id='event-{i}'><td>{rank}</td><td><a href='#video-{esc(e['video'])}'>"
                         f"{esc(e['video'])}</a></td><td data-sort='{e['first_frame']}'>{e['first_frame']}–"
                         f"{e['last_frame']}</td><td>{e['last_frame'] - e['first_frame'] + 1}</td>"
                         f"<td>{e['peak_score']:.3f}</td>{truth}<td data-sort='{e['peak_frame']}'>{thumb}"
                         f"<span class='muted'>frame {e['peak_frame']}</span></td><td>{link}</td></tr>")
        parts.append("</tbody></table>")
    parts.append("<h2>Every video</h2><p class='legend'><span style='color:#1f62b4'>&#9644; final score</span>"
                 "<span style='color:#999'>&#9644; motion energy (rescaled)</span>"
                 "<span style='color:#f08c00'>&#9644; alarms and threshold</span>" +
                 ("<span style='color:#d33'>&#9632; abnormal frames (labels)</span>" if labelled else "") + "</p>")
    for name, d in frames.items():
        mine = [(i, events[i]) for i in range(len(events)) if events[i]["video"] == name]
        plural = "" if len(mine) == 1 else "s"
        parts.append(f"<div class='video' id='video-{esc(name)}'><b>{esc(name)}</b> "
                     f"<span class='muted'>{len(d['score'])} frames, {len(mine)} alarm{plural}"
                     f"{_video_auc_text(metrics.get('per_video_auc', {}).get(name))}</span>"
                     f"{_curve_svg(name, d, mine, lo, hi, threshold)}</div>")
    parts.append(f"<script>{PAGE_SCRIPT}</script></body></html>")
    path = out / "report.html"
    run_folder.record(out, path)
    with atomic_path(path) as tmp:
        tmp.write_text("".join(parts), encoding="utf-8")
    return path
