"""The video run folder: who owns its files, and reading what the stages wrote there.

Ownership: a manifest (``run_manifest.json``) lists every file a run wrote there.

A rerun into the same folder removes only the files that manifest lists (and the ``.tmp`` a killed write of one of
them left); a folder that is not empty and holds no manifest is refused, so no command ever deletes or overwrites a
file it did not write. Stages record a file before writing it, so that an interrupted write is still theirs.
"""
from __future__ import annotations

import csv
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from image_od.files.atomic import write_json
from vad.cache import CubeCache
from vad.config import Config, load_config
from vad.readers import Video

MANIFEST = "run_manifest.json"
KIND = "e3outlier video run"
KEPT = ("train_checkpoint.pt",)  # resumed by the next run only if it belongs to that very run


class RunFolderError(ValueError):
    """A run folder that cannot be used; the message names it and says why."""


def _read(out: Path) -> dict | None:
    path = out / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise RunFolderError(f"{path}: unreadable run manifest ({err}); nothing was removed") from None
    if not isinstance(manifest, dict) or manifest.get("kind") != KIND or not isinstance(manifest.get("files"), list):
        raise RunFolderError(f"{path}: not a run manifest of this toolkit; nothing was removed")
    return manifest


def claim(out: str | Path) -> list[str]:
    """Make ``out`` a run folder: create it, or remove the previous run's files that its manifest lists (a
    ``train_checkpoint.pt`` stays: the trainer resumes it only if it belongs to the new run). Returns the removed
    names. A non-empty folder without a manifest is refused with :class:`RunFolderError`, and nothing is removed."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"--out {out} is a file, not a folder")
    manifest = _read(out) if out.is_dir() else None
    if manifest is None:
        if out.is_dir() and any(out.iterdir()):
            raise RunFolderError(
                f"--out {out} is not empty and holds no run ({MANIFEST} is missing): nothing was written or removed; "
                "give a new or empty folder, or the folder of an earlier run to replace its outputs")
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / MANIFEST, {"kind": KIND, "files": []})
        return []
    removed, kept = [], []
    root = out.resolve()
    for name in manifest["files"]:
        path = out / name
        if not path.resolve().is_relative_to(root):  # a hand-edited manifest never reaches outside the folder
            raise RunFolderError(f"{out / MANIFEST}: lists {name!r}, outside the run folder; nothing was removed")
        if name in KEPT:
            kept.append(name)
            continue
        for p in (path, path.with_name(path.name + ".tmp")):
            if p.is_file() or p.is_symlink():
                p.unlink()
                removed.append(str(p.relative_to(out)))
    for name in sorted({str(Path(n).parent) for n in manifest["files"]} - {"."}, key=len, reverse=True):
        folder = out / name
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    write_json(out / MANIFEST, {"kind": KIND, "files": kept})
    if removed:
        print(f"{out} held a previous run: removed the files it wrote ({', '.join(removed)}); the cube cache is kept")
    return removed


def record(out: str | Path, *paths: str | Path) -> None:
    """Add ``paths`` (inside ``out``) to the run's manifest; call it before writing them."""
    out = Path(out)
    manifest = _read(out) or {"kind": KIND, "files": []}
    names = [os.path.relpath(p, out) for p in paths]
    new = [n for n in names if n not in manifest["files"]]
    if new:
        write_json(out / MANIFEST, {**manifest, "files": manifest["files"] + new})


# ----------------------------------------------------------------------------------------------- reading a run
def load_run(out: str | Path) -> tuple[Config, dict[str, Any]]:
    out = Path(out)
    if not (out / "config.yaml").is_file() or not (out / "videos.json").is_file():
        raise FileNotFoundError(f"{out} is not a run folder (no config.yaml/videos.json): run `vad extract` first")
    return load_config(out / "config.yaml"), json.loads((out / "videos.json").read_text())


def check_cache_matches(cache: CubeCache, info: dict[str, Any]) -> None:
    """The cached cubes must come from the run's videos as they are now: same frame counts as ``videos.json``
    and, where recorded, the same source fingerprint (of the kind recorded: fast or content, ``data.fingerprint``)."""
    for v in info["videos"]:
        cached = cache.n_frames(v["name"])
        if cached != v["n_frames"]:
            raise ValueError(f"cache {cache.folder} holds {cached} frames for video {v['name']} but it has "
                             f"{v['n_frames']} ({v['path']}): run `vad extract` again")
        recorded = cache.manifest["videos"][v["name"]].get("source")
        if recorded is not None:
            now = Video(v["name"], Path(v["path"])).source_fingerprint(v["n_frames"], content="sha256" in recorded)
            reason = cache.stale_reason(v["name"], now)
            if reason:
                raise ValueError(f"cached cubes of video {v['name']} ({v['path']}) are stale: {reason}; "
                                 "run `vad extract` again")


def checked_bad_frames(out: Path) -> str:
    """The run's ``data.bad_frames`` policy, after checking that its videos are still those it scored (the cube
    cache's fingerprints), so that nothing of the run is ever drawn on other footage."""
    config, info = load_run(out)
    if (Path(info["cache"]) / "manifest.json").is_file():  # without its cache a run can still be drawn
        check_cache_matches(cache_of(info), info)
    return config.data.bad_frames


def cache_of(info: dict[str, Any]) -> CubeCache:
    """The cube cache that a part of ``videos.json`` (``info``) names, with the settings its manifest records."""
    folder = Path(info["cache"])
    manifest = json.loads((folder / "manifest.json").read_text())
    return CubeCache(folder.parent, manifest["settings"])


def ready_cache(info: dict[str, Any]) -> CubeCache:
    """The cache of the videos of ``info``, checked to hold all of them as they are now."""
    cache = cache_of(info)
    missing = [v["name"] for v in info["videos"] if not cache.has(v["name"])]
    if missing:
        raise FileNotFoundError(f"cache {cache.folder} lacks videos {missing}: run `vad extract` first")
    check_cache_matches(cache, info)
    return cache


def load_npz(path: Path, remedy: str, needs: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """The arrays of a run's ``.npz`` (no pickled objects), or an error naming the file and the remedy (also when
    an array of ``needs`` is missing: a file of an earlier version)."""
    try:
        with np.load(path) as f:
            arrays = {k: f[k] for k in f.files}
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} not found: {remedy}") from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise ValueError(f"{path} is unreadable ({err}): {remedy}") from None
    missing = [k for k in needs if k not in arrays]
    if missing:
        raise ValueError(f"{path} lacks {', '.join(missing)} (written by an earlier version): {remedy}")
    return arrays


def read_events(out: Path) -> list[dict[str, Any]]:
    """events.csv as dicts with int frames, a float ``peak_score`` and ``box`` (x1, y1, x2, y2, or None); [] when
    the run has none."""
    if not (out / "events.csv").is_file():
        return []
    with (out / "events.csv").open() as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        for k in ("first_frame", "last_frame", "peak_frame"):
            r[k] = int(r[k])
        r["peak_score"] = float(r["peak_score"])
        r["box"] = None if r["x1"] == "" else [float(r[k]) for k in ("x1", "y1", "x2", "y2")]
    return rows


def read_frame_scores(out: Path) -> dict[str, dict[str, np.ndarray]]:
    """frame_scores.csv as {video: {"score", "model", "heuristic", "label"}} (label None when unlabeled)."""
    rows: dict[str, dict[str, list]] = {}
    with (out / "frame_scores.csv").open() as f:
        for r in csv.DictReader(f):
            d = rows.setdefault(r["video"], {"score": [], "model": [], "heuristic": [], "label": []})
            for k in ("score", "model", "heuristic"):
                d[k].append(float(r[k]))
            d["label"].append(None if r["label"] == "" else int(r["label"]))
    return {v: {**{k: np.array(d[k]) for k in ("score", "model", "heuristic")},
                "label": None if d["label"][0] is None else np.array(d["label"])} for v, d in rows.items()}
