"""Who owns the files of a run folder: a manifest (``run_manifest.json``) lists every file a run wrote there.

A rerun into the same folder removes only the files that manifest lists (and the ``.tmp`` a killed write of one of
them left); a folder that is not empty and holds no manifest is refused, so no command ever deletes or overwrites a
file it did not write. Stages record a file before writing it, so that an interrupted write is still theirs.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from image_od.atomic import write_json

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
