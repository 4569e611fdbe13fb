"""On-disk cache of extracted cubes: one HDF5 file per video in a folder keyed by the extraction settings.

``<root>/<key>/`` holds ``<video>.h5`` (datasets ``cubes`` uint8, ``flow`` float16, ``energy`` float32 (the
cubes' motion energy), ``boxes`` float32, ``frame`` int32; attributes ``n_frames`` and ``video``) and
``manifest.json`` (the settings that produced the key, and the finished videos with their frame count, source
fingerprint and file format). Every HDF5 chunk carries
a Fletcher-32 checksum that HDF5 verifies on each read, so a damaged file is an error naming it (``CacheError``),
not shifted scores. Every file is written under a
temporary name and renamed, and a video enters the manifest only after its file is in place, so an interrupted
extraction leaves no half-written video and a rerun skips the finished ones. The key holds the videos' paths;
their content is checked per video through the fingerprint (size, modification time, frame count), so a video
replaced by another of the same name is extracted again.

A sharded extraction (several processes, ``shard`` = the rank) has each rank record its finished videos in its
own ``manifest.rank<r>.json``; readers see ``manifest.json`` and every such part, and ``merge_parts`` folds the
parts into ``manifest.json`` (rank 0 at the end of the stage, or the next run if a rank was killed first).
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from image_od.files.atomic import atomic_path, check_free_space, write_json

FIELDS = ("cubes", "flow", "energy", "boxes", "frame")
FORMAT = 3  # 2: every HDF5 chunk carries a Fletcher-32 checksum, verified by HDF5 on each read; 3: ``energy``


class CacheError(ValueError):
    """A cached file that cannot be read or fails its checksum; the message names it."""


@contextlib.contextmanager
def reading(path: Path) -> Iterator[h5py.File]:
    """Open a cached video's file for reading; damage (a failed chunk checksum, a broken header) becomes a
    :class:`CacheError` naming the file instead of h5py's driver text or silently shifted scores."""
    try:
        with h5py.File(path, "r") as f:
            yield f
    except OSError as err:
        if isinstance(err, FileNotFoundError):
            raise
        raise _damaged(path, err) from None


def _damaged(path: Path, err: OSError) -> CacheError:
    return CacheError(f"the cached file {path} is damaged ({' '.join(str(err).split())[:160]}): delete it, or its "
                      f"cache folder, and run `vad extract` again")


def settings_key(settings: dict[str, Any]) -> str:
    """A short stable hash of JSON-serialisable extraction settings."""
    blob = json.dumps(settings, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def _append(f: h5py.File, name: str, rows: np.ndarray) -> None:
    """Append ``rows`` to the resizable dataset ``name`` of ``f``, created on the first call (about 256 KiB
    per HDF5 chunk)."""
    if name not in f:
        per_row = max(rows[0].nbytes if len(rows) else rows.itemsize * int(np.prod(rows.shape[1:])), 1)
        f.create_dataset(name, shape=(0, *rows.shape[1:]), maxshape=(None, *rows.shape[1:]), dtype=rows.dtype,
                         chunks=(max(2 ** 18 // per_row, 1), *rows.shape[1:]), fletcher32=True)
    if len(rows):
        data = f[name]
        data.resize(len(data) + len(rows), axis=0)
        data[-len(rows):] = rows


class CubeCache:
    """The cache folder of one extraction setting."""

    def __init__(self, root: str | Path, settings: dict[str, Any], shard: int | None = None):
        self.settings = settings
        self.key = settings_key(settings)
        self.folder = Path(root) / self.key
        self.folder.mkdir(parents=True, exist_ok=True)
        main = self.folder / "manifest.json"
        self.manifest = {"settings": settings, "videos": {}}
        for path in (main, *self._parts()):
            if path.exists():
                self.manifest["videos"].update(json.loads(path.read_text())["videos"])
        self.shard = shard
        if shard is None:
            self.manifest_path, self._recorded = main, self.manifest
            if not main.exists():
                write_json(main, self.manifest)
        else:  # this rank's part: only the videos it extracts (merged into manifest.json by merge_parts)
            self.manifest_path, self._recorded = self.folder / f"manifest.rank{shard}.json", {"settings": settings,
                                                                                            "videos": {}}

    def _parts(self) -> list[Path]:
        return sorted(self.folder.glob("manifest.rank*.json"))

    def merge_parts(self) -> None:
        """Fold the ranks' manifest parts into ``manifest.json`` and remove them (one process may do this while no
        rank extracts)."""
        parts = self._parts()
        if parts:
            merged = json.loads((self.folder / "manifest.json").read_text()) if (self.folder / "manifest.json").exists() \
                else {"settings": self.settings, "videos": {}}
            for path in parts:
                merged["videos"].update(json.loads(path.read_text())["videos"])
            write_json(self.folder / "manifest.json", merged)
            for path in parts:
                path.unlink()
            self.manifest["videos"].update(merged["videos"])

    @contextlib.contextmanager
    def writing(self) -> Iterator["CubeCache"]:
        """Hold this folder's write lock (one per shard) while extracting into it, and yield the cache as it stands
        once the lock is held. A second process extracting into the same folder says so and waits; it then sees the
        videos the first one finished, instead of both writing the same files and the manifest over each other."""
        path = self.folder / ("writer.lock" if self.shard is None else f"writer.rank{self.shard}.lock")
        with open(path, "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "unknown"
                print(f"another process (pid {holder}) is extracting into the cache folder {self.folder}: waiting for "
                      f"it to finish", file=sys.stderr, flush=True)
                fcntl.flock(handle, fcntl.LOCK_EX)
            handle.seek(0)
            handle.truncate()
            handle.write(str(os.getpid()))
            handle.flush()
            try:
                yield CubeCache(self.folder.parent, self.settings, self.shard)
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def path(self, video: str) -> Path:
        return self.folder / f"{video}.h5"

    def has(self, video: str, source: dict[str, Any] | None = None) -> bool:
        """Whether ``video`` is cached; with ``source`` (``Video.source_fingerprint()``), also that it was
        extracted from that very content."""
        entry = self.manifest["videos"].get(video)
        if entry is None or not self.path(video).exists() or entry.get("format") != FORMAT:
            return False
        return source is None or entry.get("source") == source

    def stale_reason(self, video: str, source: dict[str, Any]) -> str | None:
        """Why a cached ``video`` cannot be reused for content ``source`` (None if it can, or is not cached)."""
        entry = self.manifest["videos"].get(video)
        if entry is None or not self.path(video).exists():
            return None
        if entry.get("format") != FORMAT:
            return (f"it was cached by an older version of the toolkit (cache format {entry.get('format', 1)}, this "
                    f"version reads {FORMAT})")
        if entry.get("source") == source:
            return None
        if "source" not in entry:
            return "it was cached without a content fingerprint (older version)"
        changed = [k for k in source if entry["source"].get(k) != source[k]]
        return f"it changed since it was cached ({', '.join(changed)} differ)"

    def write(self, video: str, arrays: dict[str, np.ndarray], n_frames: int,
              source: dict[str, Any] | None = None) -> None:
        """Store one video's cubes atomically and record it (with its source fingerprint) in the manifest."""
        self.write_chunks(video, [(arrays, n_frames)], source)

    def write_chunks(self, video: str, chunks: Iterable[tuple[dict[str, np.ndarray], int]],
                     source: dict[str, Any] | None = None) -> None:
        """Store one video's cubes as they stream in, as (arrays, frames covered) chunks appended to resizable
        datasets of the temporary file, which is renamed once the last chunk is in; then record the video (with its
        source fingerprint) in the manifest. Memory holds one chunk."""
        n_cubes = n_frames = 0
        with atomic_path(self.path(video)) as tmp, h5py.File(tmp, "w") as f:
            for arrays, frames in chunks:
                check_free_space(self.folder, 2 * sum(arrays[name].nbytes for name in FIELDS),
                                 f"the cubes of video {video}")
                for name in FIELDS:
                    _append(f, name, arrays[name])
                n_cubes, n_frames = n_cubes + len(arrays["frame"]), n_frames + frames
            if "frame" not in f:
                raise ValueError(f"no chunk of cubes was given for video {video}")
            f.attrs["n_frames"] = n_frames
            f.attrs["video"] = video
        entry = {"n_cubes": int(n_cubes), "n_frames": int(n_frames), "format": FORMAT}
        entry = {**entry, "source": source} if source is not None else entry
        self.manifest["videos"][video] = self._recorded["videos"][video] = entry
        write_json(self.manifest_path, self._recorded)

    def nbytes(self, videos: Sequence[str], fields: Sequence[str]) -> int:
        """Bytes that ``load(videos, fields)`` would take in memory (from the files' shapes, nothing read)."""
        total = 0
        for name in videos:
            with reading(self.path(name)) as f:
                total += sum(f[k].size * f[k].dtype.itemsize for k in fields)
        return total

    def n_frames(self, video: str) -> int:
        return int(self.manifest["videos"][video]["n_frames"])

    def iter_slices(self, videos: Sequence[str], fields: Sequence[str], rows: int = 8192) -> Iterator[dict[str, np.ndarray]]:
        """The chosen videos' arrays ``fields``, ``rows`` cubes at a time in cache order: contiguous reads, memory
        holds one slice (reading cube by cube re-reads whole HDF5 chunks)."""
        for name in videos:
            with reading(self.path(name)) as f:
                for i in range(0, len(f["frame"]), rows):
                    yield {k: f[k][i:i + rows] for k in fields}

    def map_rows(self, video: str, name: str, fn: Callable[[np.ndarray], np.ndarray], rows: int = 8192) -> np.ndarray:
        """``fn`` of the video's array ``name``, ``rows`` cubes at a time, concatenated: memory holds one slice."""
        parts = [fn(part[name]) for part in self.iter_slices([video], [name], rows)]
        if not parts:
            with reading(self.path(video)) as f:
                parts = [fn(f[name][:0])]
        return np.concatenate(parts)

    def load(self, videos: Sequence[str], fields: Sequence[str] = FIELDS) -> dict[str, np.ndarray]:
        """Concatenate the chosen videos' arrays in memory, adding ``video`` (index into ``videos``)."""
        parts: dict[str, list[np.ndarray]] = {k: [] for k in (*fields, "video")}
        for i, name in enumerate(videos):
            with reading(self.path(name)) as f:
                for k in fields:
                    parts[k].append(f[k][()])
                parts["video"].append(np.full(len(f["frame"]), i, np.int32))
        return {k: np.concatenate(v) for k, v in parts.items()}


class CubeDataset(Dataset):
    """Lazy per-item reader over cached videos, for sets larger than memory.

    HDF5 handles are opened on first access inside each DataLoader worker (h5py handles must not cross a fork).
    Items are dicts with the same keys as ``CubeCache.load`` gives.
    """

    def __init__(self, cache: CubeCache, videos: Sequence[str], fields: Sequence[str] = ("cubes", "flow")):
        self.paths = [cache.path(v) for v in videos]
        self.fields = tuple(fields)
        counts = [cache.manifest["videos"][v]["n_cubes"] for v in videos]
        self.offsets = np.concatenate([[0], np.cumsum(counts)])
        self._files: dict[int, h5py.File] = {}

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        v = int(np.searchsorted(self.offsets, i, side="right") - 1)
        try:
            if v not in self._files:
                self._files[v] = h5py.File(self.paths[v], "r")
            f, j = self._files[v], i - int(self.offsets[v])
            return {k: torch.as_tensor(f[k][j]) for k in self.fields}
        except OSError as err:
            raise _damaged(self.paths[v], err) from None

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_files"] = {}
        return state
