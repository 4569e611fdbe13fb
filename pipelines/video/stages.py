"""The staged UVAD pipeline: extract -> train -> score -> eval -> plot, each stage reading and writing a run folder.

Run folder (``RUN_DIR``):
  config.yaml        resolved configuration
  env.json           versions, git commit, seed, device
  videos.json        the dataset's videos (name, path, frame count, labels or null) and the cache folder
  model.pt           trained generators and the error normalisation
  cube_scores.npz    every cube's video, frame, box, track, per-target errors, motion energy (averaged along its
                     track: vad.tracks) and final score
  frame_scores.csv   video, frame, score, heuristic, label
  metrics.json       auc_micro, auc_macro, eer, n_frames, heuristic_auc_micro, ..., timings
  plots/             per-video score curves (abnormal frames shaded) and ROC curves

The model is transductive: it is trained on the very cubes it scores (no labels are read before ``eval``).

Under ``torchrun`` (``docs/SCALING.md``): ``extract`` and ``score`` share the videos out between the ranks (each rank
writes its own cache files; rank 0 merges the manifest parts and writes the run's outputs), ``train`` trains one
model data-parallel, and rank 0 alone writes the run folder's files.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Subset
from tqdm.auto import tqdm

from image_od.data.samples import ArrayData, SampleSource
from image_od.e3outlier.generative import GenerativeE3Outlier, Normaliser
from image_od.engine import distributed
from image_od.engine.training import resolve_device
from image_od.files.atomic import atomic_path, write_json
from image_od.files.settings import ConfigError, save_settings, to_dict
from pipelines.run_env import environment, peak_rss_mb
from pipelines.video import run_folder
from pipelines.video.plots import plot_run
from pipelines.video.report import write_report
from pipelines.video.run_folder import cache_of, load_npz, load_run, read_frame_scores, ready_cache
from vad import regions as regions_mod
from vad.attributes import (
    VELOCITY_COLUMNS,
    AttributeKNN,
    attribute_rows,
    box_heights,
    mirrored_rows,
    place_corrected_rows,
    velocity_histogram,
)
from vad.cache import FIELDS, CubeCache, CubeDataset
from vad.config import Config, load_config, resolved_position_norm
from vad.cube_models import fit_cloze, learned_score
from vad.cubes import Window, iter_cubes, processing_size, resize_frames
from vad.events import event_threshold, find_events, peak_box
from vad.flow import make_flow
from vad.localisation import localisation_metrics
from vad.metrics import auc_micro, frame_metrics, video_aucs
from vad.readers import Video, image_files, open_dataset, open_training_split, open_videos, path_list, pixel_masks
from vad.scoring import (
    apply_fusion,
    fast_bar,
    fast_share,
    frame_max_share,
    frame_scores,
    moving,
    position_normalise,
    position_trend,
    postprocess,
    slow_slivers,
    tail_share,
    without_slivers,
    zscore,
)
from vad.tracks import link_tracks, track_mean


# ----------------------------------------------------------------------------------------------- set-up
def warn_about_videos(videos: list[Video], config: Config, root: str | None) -> None:
    """Say aloud what would otherwise pass silently: very short videos, frames processed at another size
    (``data.min_side``, ``data.max_side``), a --root that is not a dataset root."""
    resized: dict[tuple[tuple[int, int], tuple[int, int]], list[str]] = {}
    for v in videos:
        if v.frame_count() < config.cubes.frames:
            print(f"warning: video {v.name} ({v.path}) has only {v.frame_count()} frames, fewer than a cube's "
                  f"{config.cubes.frames}: its cubes repeat its edge frames, so its scores are unreliable",
                  file=sys.stderr)
        sizes = _resized(config, v)
        if sizes:
            resized.setdefault(sizes, []).append(v.name)
    for ((h, w), (ph, pw)), names in resized.items():
        which = f"video {names[0]}" if len(names) == 1 else f"{len(names)} videos ({names[0]}, ...)"
        print(f"note: {which} of {w}x{h} pixels processed at {pw}x{ph} (data.min_side {config.data.min_side}, "
              f"data.max_side {config.data.max_side}); boxes, reports and exports stay in the videos' own pixels",
              file=sys.stderr)
    if root is not None and config.data.layout == "auto" and all(v.labels is None for v in videos):
        what = ("a single folder of frames" if Path(root).is_dir() and image_files(Path(root))
                else "not a labelled dataset root (UCSD, preprocessed UCSD or Avenue layout)")
        print(f"warning: --root {root} is {what}: it runs UNLABELED (scores and plots, no AUC). Use --videos "
              f"{root} for unlabeled videos, or give the dataset's root folder for labels", file=sys.stderr)


def open_run(out: str | Path, config: Config, *, root: str | None, videos_path: str | Sequence[str] | None,
             cache_root: str | Path, train_videos_path: str | Sequence[str] | None = None) -> list[Video]:
    """Create the run folder (removing the files a previous run wrote there, ``run_folder.claim``), resolve the
    videos and record config, environment and video list. In the semi-supervised mode the normal videos to learn
    from are ``train_videos_path`` if given, else the training split of the dataset at ``root``; every video is
    found before the run folder is touched."""
    out = Path(out)
    if (root is None) == (videos_path is None):
        raise ValueError("give exactly one of --root (a labelled dataset) or --videos (any videos, unlabeled)")
    semi = config.model.train_on == "training"
    if train_videos_path and not semi:
        raise ValueError("--train-videos is the normal footage of the semi-supervised mode: it needs "
                         "model.train_on=training")
    if semi and train_videos_path is None and root is None:
        raise ValueError("model.train_on=training (semi-supervised) needs normal footage to learn from: "
                         "--train-videos PATH, or --root, a dataset with a training split")
    videos = (open_dataset(root, config.data.layout, avenue_labels=config.data.avenue_labels) if root
              else open_videos(videos_path))
    train_videos = ((open_videos(train_videos_path) if train_videos_path
                     else open_training_split(root, config.data.layout)) if semi else [])
    _check_same_frame_size(videos, train_videos)
    if not distributed.is_main():  # under torchrun rank 0 alone sets the run folder up
        distributed.sync()
        return videos
    warn_about_videos(videos, config, root)
    run_folder.claim(out)
    run_folder.record(out, out / "config.yaml", out / "env.json", out / "videos.json")
    save_settings(config, out / "config.yaml")
    write_json(out / "env.json", environment(config.seed, str(resolve_device(config.device))))
    info = _video_set(root or videos_path, videos, cube_cache(config, videos, cache_root))
    if semi:
        info["training"] = _video_set(train_videos_path or root, train_videos,
                                      cube_cache(training_config(config), train_videos, cache_root))
    write_json(out / "videos.json", info)
    distributed.sync()
    return videos


def _check_same_frame_size(videos: list[Video], train_videos: list[Video]) -> None:
    """Refuse normal footage at a frame size none of the scored videos has: the semi-supervised mode compares
    speeds, sizes and image positions in pixels, so its reference must come from the same camera view."""
    sizes = {v.frame_shape() for v in videos} if train_videos else set()
    for v in train_videos:
        if (shape := v.frame_shape()) not in sizes:
            (h, w), scored = shape, ", ".join(f"{sw}x{sh}" for sh, sw in sorted(sizes))
            raise ValueError(f"training video {v.name} ({v.path}) has {w}x{h} frames, the scored videos {scored}: "
                             "the semi-supervised mode compares speeds, sizes and positions in pixels, so its "
                             "normal footage must come from the same camera at the same resolution")


def _video_set(source: str | Sequence[str], videos: list[Video], cache: CubeCache) -> dict[str, Any]:
    return {"source": ", ".join(str(p.resolve()) for p in path_list(source)), "cache": str(cache.folder.resolve()),
            "videos": [{"name": v.name, "path": str(Path(v.path).resolve()), "n_frames": v.frame_count(),
                        "labels": None if v.labels is None else v.labels.astype(int).tolist()} for v in videos]}


def training_config(config: Config) -> Config:
    """The extraction settings of the training split: the test split's, with ``regions.train_box_file`` as the box
    file (precomputed boxes belong to one split)."""
    r = config.regions
    if "file" in r.sources and not r.train_box_file:
        raise ValueError("the test boxes come from a file (--boxes): give the training split's boxes too "
                         "(--train-boxes, regions.train_box_file), e.g. ped2_train_boxes.npz")
    return dataclasses.replace(config, regions=dataclasses.replace(r, box_file=r.train_box_file))


def _file_fingerprint(path: str | None) -> dict[str, Any] | None:
    if not path:
        return None
    p = Path(path).resolve()
    st = p.stat()
    return {"path": str(p), "size": st.st_size, "mtime": int(st.st_mtime)}


def _detector_key(config: Config) -> dict[str, Any]:
    """The detector's part of the cache key: its files' content hashes, and the precision and runtime it runs at."""
    r = config.regions
    if "detector" not in r.sources:
        return {"detector_weights": None}
    files = [r.detector_weights]
    if Path(r.detector_weights).suffix.lower() == ".weights":
        files.append(str(Path(r.detector_weights).with_suffix(".cfg")))
    hashes = {}
    for name in files:
        try:
            hashes[Path(name).suffix.lstrip(".")] = hashlib.sha256(Path(name).read_bytes()).hexdigest()
        except OSError as err:
            raise regions_mod.RegionError(f"detector file unreadable: {name} ({err.strerror})") from None
    _, precision, runtime = _detector_execution(config)
    return {"detector_weights": {"path": str(Path(r.detector_weights).resolve()), "sha256": hashes},
            "detector_precision": precision, "detector_runtime": runtime}


def _detector_execution(config: Config) -> tuple[str, str, str]:
    """Where and how the detector runs: device, resolved precision and runtime."""
    r = config.regions
    device = str(resolve_device(config.device))
    precision = regions_mod.resolve_detector_precision(r.detector_precision, device)
    return device, precision, regions_mod.resolve_runtime(r.detector_runtime, device, precision)


def cube_cache(config: Config, videos: list[Video], cache_root: str | Path, shard: int | None = None) -> CubeCache:
    """The cache folder for these videos under these extraction settings (``shard``: the rank that writes to it,
    in a sharded extraction)."""
    r = config.regions
    settings = {
        "videos": [str(Path(v.path).resolve()) for v in videos],
        "grey": config.data.grey,
        "regions": {**{k: v for k, v in to_dict(config)["regions"].items() if k != "unsafe_pickle"},
                    "box_file": _file_fingerprint(r.box_file), **_detector_key(config)},
        "cubes": to_dict(config)["cubes"],
        "flow": {**to_dict(config)["flow"], "raft_weights": _file_fingerprint(config.flow.raft_weights)},
        "bad_frames": config.data.bad_frames,
        "min_side": config.data.min_side,
        "max_side": config.data.max_side,
    }
    return CubeCache(cache_root, settings, shard)


# ----------------------------------------------------------------------------------------------- extract
EXTRACT_CHUNK = 64  # frames per extraction step (plus the cube's margins): bounds memory on long videos


class BoxSource:
    """Per-frame foreground boxes from the configured sources (motion, detector, file), united per frame."""

    def __init__(self, config: Config, videos: list[Video]):
        r = config.regions
        unknown = set(r.sources) - {"motion", "detector", "file"}
        if unknown or not r.sources:
            raise ValueError(f"regions.sources must be a non-empty subset of motion, detector, file; got {r.sources}")
        self.config = config
        self.file_boxes = None
        if "file" in r.sources:
            if not r.box_file:
                raise ValueError("regions.sources has 'file' but no regions.box_file (or --boxes) was given")
            boxes = regions_mod.load_box_file(r.box_file, [v.frame_count() for v in videos],
                                              [v.frame_shape() for v in videos], [v.name for v in videos])
            self.file_boxes = {v.name: b for v, b in zip(videos, boxes)}
        self.detector = None
        if "detector" in r.sources:
            if not r.detector_weights:
                raise ValueError("regions.sources has 'detector' but regions.detector_weights is not set")
            device, precision, runtime = _detector_execution(config)
            self.detector = regions_mod.make_detector(
                r.detector_weights, device=device, precision=precision, runtime=runtime,
                allow_pickle=r.unsafe_pickle, **r.detector_settings())

    def __call__(self, video: Video, window: Window, scale: np.ndarray | None = None) -> list[np.ndarray]:
        """The boxes of the frames of ``window``'s chunk; ``scale`` (x, y, x, y): how much the window's frames were
        resized (``data.min_side``, ``data.max_side``), applied to the file's boxes, which are in the video's own
        pixels."""
        r = self.config.regions
        lists = []
        if self.file_boxes is not None:
            boxes = self.file_boxes[video.name][window.start:window.stop]
            lists.append(boxes if scale is None else [b * scale.astype(np.float32) for b in boxes])
        detected = None
        if self.detector is not None:
            detected = regions_mod.keyframe_detections(self.detector.detect, window.frames[window.chunk],
                                                       r.detector_every)
        motion = None
        if "motion" in r.sources:
            motion = regions_mod.video_motion_boxes(window.frames, exclude=detected, start=window.chunk.start,
                                                    stop=window.chunk.stop, **r.motion_settings())
        if r.join_fragments:
            detected, motion = regions_mod.join_fragments(detected, motion)
        lists += [boxes for boxes in (detected, motion) if boxes is not None]
        return regions_mod.merge_boxes(*lists)


def _resized(config: Config, video: Video) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """The video's own (height, width) and the one it is processed at, where ``data.min_side`` or ``data.max_side``
    resizes it; None where it is processed as it is (a frame is read only when a bound is set)."""
    d = config.data
    if not (d.min_side or d.max_side):
        return None
    own = video.frame_shape()
    size = processing_size(own, d.min_side, d.max_side)
    return (own, size) if size != own else None


def extract_video(config: Config, video: Video, cache: CubeCache, boxes_for: BoxSource, flow,
                  source: dict[str, Any] | None, progress: bool = True, chunk: int = EXTRACT_CHUNK) -> None:
    """Stream one video's frames through boxes, flow and cubes into its cache file, ``chunk`` frames at a time:
    memory holds one window of frames and its cubes, whatever the video's length. Frames smaller than
    ``data.min_side`` are processed enlarged, larger than ``data.max_side`` shrunk; the cached boxes are in the
    video's own pixels all the same."""
    frames = video.iter_frames(grey=config.data.grey, bad_frames=config.data.bad_frames)
    scale = None
    sizes = _resized(config, video)
    if sizes:
        own, size = sizes
        frames, scale = resize_frames(frames, size), np.tile([size[1] / own[1], size[0] / own[0]], 2)
    parts = iter_cubes(frames, lambda w: boxes_for(video, w, scale), flow, size=config.cubes.size,
                       n_frames=config.cubes.frames, chunk=chunk, flow_gap=config.flow.gap,
                       energy_gap=config.flow.energy_gap, energy_aspect=config.flow.energy_aspect)
    with tqdm(total=video.frame_count(), desc=video.name, unit="frame", leave=False, disable=not progress) as bar:
        def chunks() -> Iterator[tuple[dict[str, np.ndarray], int]]:
            for window, arrays in parts:
                bar.update(window.stop - window.start)
                if scale is not None:
                    arrays = {**arrays, "boxes": (arrays["boxes"] / scale).astype(arrays["boxes"].dtype)}
                yield arrays, window.stop - window.start

        cache.write_chunks(video.name, chunks(), source)


def extract(config: Config, videos: list[Video], cache_root: str | Path, progress: bool = True) -> CubeCache:
    """Boxes, cubes and flow of every video into the cache; videos already cached are skipped (resume). Under
    torchrun each rank extracts its share of the videos to be done (balanced by frame count) and rank 0 merges
    the ranks' manifest parts at the end."""
    sharded = distributed.shard_count() > 1
    if distributed.is_main():  # a killed sharded run's parts first, so that every rank sees the same cache
        cube_cache(config, videos, cache_root).merge_parts()
    distributed.sync()
    cache = cube_cache(config, videos, cache_root, shard=distributed.shard_index() if sharded else None)
    with cache.writing() as cache:  # another process extracting into the same folder: wait for it
        todo = []
        for v in videos:
            source = v.source_fingerprint(content=config.data.fingerprint == "content")
            if not cache.has(v.name, source):
                reason = cache.stale_reason(v.name, source)
                if reason and distributed.is_main():
                    print(f"video {v.name} ({v.path}): {reason}: extracting it again")
                todo.append((v, source))
        distributed.sync()  # every rank has listed the work before any rank records a finished video
        mine = [todo[i] for i in distributed.my_share([v.frame_count() for v, _ in todo])]
        if mine:
            boxes_for = BoxSource(config, videos)
            flow = make_flow(config.flow.method, preset=config.flow.preset, upscale=config.flow.upscale,
                             min_side=config.flow.min_side,
                             raft_weights=config.flow.raft_weights,
                             raft_small=config.flow.raft_small, device=str(resolve_device(config.device)),
                             workers=torch.get_num_threads())
            show = progress and distributed.is_main()
            desc = f"extract (rank 0 of {distributed.shard_count()})" if sharded else "extract"
            for video, source in tqdm(mine, desc=desc, unit="video", disable=not show):
                extract_video(config, video, cache, boxes_for, flow, source, show)
    if not sharded:
        return cache
    distributed.sync()
    if distributed.is_main():
        cache.merge_parts()
    distributed.sync()
    return cube_cache(config, videos, cache_root)


def extract_run(out: str | Path, config: Config, videos: list[Video], cache_root: str | Path,
                progress: bool = True) -> CubeCache:
    """``extract`` the run's videos, and in the semi-supervised mode its training videos too."""
    cache = extract(config, videos, cache_root, progress)
    if config.model.train_on == "training":
        info = json.loads((Path(out) / "videos.json").read_text())["training"]
        train_videos = [Video(v["name"], Path(v["path"])) for v in info["videos"]]
        extract(training_config(config), train_videos, cache_root, progress)
    return cache


def export_boxes(out: str | Path, output: str | Path | None = None, split: str = "test") -> Path:
    """Write the region boxes of a run's extracted ``split`` (every cube's box: all region sources united) as a box
    file (``boxes_xyxy``, ``global_frame``, ``video_lengths``) that ``--boxes`` reads back; default path
    ``RUN/boxes_<split>.npz``."""
    out = Path(out)
    _, info = load_run(out)
    if split == "training":
        if "training" not in info:
            raise ValueError(f"{out} has no training split: it was not run with --train-on training")
        info = info["training"]
    names, lengths = [v["name"] for v in info["videos"]], [v["n_frames"] for v in info["videos"]]
    arrays = ready_cache(info).load(names, fields=("boxes", "frame"))
    starts = np.cumsum([0, *lengths])
    path = Path(output) if output else out / f"boxes_{split}.npz"
    if path.resolve().is_relative_to(out.resolve()):
        run_folder.record(out, path)
    with atomic_path(path) as tmp, tmp.open("wb") as f:
        np.savez_compressed(f, boxes_xyxy=arrays["boxes"].astype(np.float32),
                            global_frame=(starts[arrays["video"]] + arrays["frame"]).astype(np.int32),
                            video_lengths=np.array(lengths, np.int32))
    return path


# ----------------------------------------------------------------------------------------------- train
IN_MEMORY_LIMIT = 512 << 20  # data.in_memory=auto: bytes of cubes and flow held in memory before reading lazily


def _cube_data(info: dict[str, Any], in_memory: bool | str = "auto") -> tuple[dict[str, np.ndarray], SampleSource]:
    """The cubes' arrays and the samples the model reads: everything in memory, or (``in_memory`` false, or
    ``"auto"`` past ``IN_MEMORY_LIMIT``: footage longer than a few minutes) only the cubes' video and frame indices,
    with samples read lazily from the cache, so that memory does not grow with the footage."""
    cache = ready_cache(info)
    names = [v["name"] for v in info["videos"]]
    if in_memory == "auto":
        size = cache.nbytes(names, ("cubes", "flow"))
        in_memory = size <= IN_MEMORY_LIMIT
        if not in_memory and distributed.is_main():
            print(f"the cubes of {info['source']} take {size / 2 ** 20:.0f} MiB (more than "
                  f"{IN_MEMORY_LIMIT / 2 ** 20:.0f}): training reads them lazily from the cache (data.in_memory=auto; "
                  f"true holds them in memory)", flush=True)
    arrays = cache.load(names, fields=FIELDS if in_memory else ("frame",))
    if len(arrays["frame"]) == 0:
        raise ValueError(NO_CUBES.format(source=info["source"]))
    if in_memory:
        return arrays, ArrayData({"cubes": arrays["cubes"], "flow": arrays["flow"]})
    return arrays, CubeDataset(cache, names, fields=("cubes", "flow"))


def _in_memory_cubes(info: dict[str, Any], arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``arrays`` with the cubes and their flow (read from the cache if the run keeps them on disk)."""
    if "cubes" in arrays:
        return arrays
    loaded = cache_of(info).load([v["name"] for v in info["videos"]], fields=("cubes", "flow"))
    return {**arrays, "cubes": loaded["cubes"], "flow": loaded["flow"]}


def _training_sample(data: SampleSource, n: int, seed: int) -> SampleSource:
    """``n`` cubes of ``data`` drawn with ``seed`` (in their order), or ``data`` itself when ``n`` is 0 or covers
    it: on very long footage the generators learn from a sample and then score every cube."""
    if n == 0 or n >= len(data):
        return data
    pick = np.sort(np.random.default_rng(seed).choice(len(data), n, replace=False))
    if isinstance(data, ArrayData):
        return ArrayData({k: v[pick] for k, v in data.arrays.items()})
    return Subset(data, pick.tolist())


def _cube_errors(model: GenerativeE3Outlier, info: dict[str, Any], data: SampleSource) -> np.ndarray:
    """Every cube's errors under ``model``: from memory, or read from the cache in contiguous slices."""
    if isinstance(data, ArrayData):
        return model.task_errors(data)
    slices = cache_of(info).iter_slices([v["name"] for v in info["videos"]], ("cubes", "flow"))
    return np.concatenate([model.task_errors(ArrayData(part)) for part in slices])


NO_CUBES = ("no cubes were extracted from {source}: no foreground regions were found (check the region settings, "
            "e.g. regions.motion_threshold, or give --boxes)")


def attribute_scores(config: Config, info: dict[str, Any]) -> np.ndarray:
    """Every scored cube's attribute rarity (``vad.attributes.AttributeKNN``), the attributes read from the cache
    one slice of flow at a time. Transductive: fitted on the scored cubes themselves, with the same-video temporal
    exclusion, the own-track exclusion (``attributes.exclude_track``; the tracks the motion energy is averaged
    along) and the cleansing; semi-supervised: fitted on the training videos' cubes (no exclusion or cleansing
    needed; with ``attributes.semi_mirror`` their left-right mirror images too), scoring the test cubes as new data,
    or with ``attributes.semi_bank: both`` fitted on the training and the scored cubes together under the
    transductive rules (each video its own group). Where the motion energy's trend over image position is taken
    out (``score.perspective``, transductive), the attributes' is too (``_place_corrected``)."""
    a = config.attributes

    def rows(part: dict[str, Any]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        cache, names = ready_cache(part), [v["name"] for v in part["videos"]]
        hist = np.concatenate([cache.map_rows(n, "flow", velocity_histogram) for n in names])
        arrays = cache.load(names, fields=("boxes", "frame"))
        return attribute_rows(hist, arrays["boxes"], a.scale_aware), arrays

    X, arrays = rows(info)
    if len(X) == 0:
        raise ValueError(NO_CUBES.format(source=info["source"]))
    track = None
    if config.model.train_on != "training" and resolved_position_norm(config) == "trend":
        X, track = _place_corrected(config, X, info)
    n, bank, groups, times = len(X), X, arrays["video"], arrays["frame"]
    if config.model.train_on == "training":
        train_X, train_arrays = rows(info["training"])
        if a.semi_bank == "training":
            if a.semi_mirror:
                train_X = np.concatenate([train_X, mirrored_rows(train_X)])
            model = AttributeKNN(k=a.k, exclude_frames=-1, cleanse=0.0, max_bank=a.max_bank,
                                 pooled=VELOCITY_COLUMNS, seed=config.seed)
            return model.fit(train_X).decision_function(X)
        bank = np.concatenate([X, train_X])  # semi_bank both: the transductive fit over both sets
        groups = np.concatenate([groups, len(info["videos"]) + train_arrays["video"]])
        times = np.concatenate([times, train_arrays["frame"]])
    if not a.exclude_track:
        track = None
    elif track is None:  # track ids made unique over both sets in semi_bank both
        track = _cube_tracks(config, arrays)
        if config.model.train_on == "training":
            track = np.concatenate([track, track.max(initial=-1) + 1 + _cube_tracks(config, train_arrays)])
    model = AttributeKNN(k=a.k, exclude_frames=a.exclude_frames, cleanse=a.cleanse, max_bank=a.max_bank,
                         pooled=VELOCITY_COLUMNS, seed=config.seed)
    return model.fit(bank, groups, times, track).decision_scores_[:n]


def _place_corrected(config: Config, X: np.ndarray, info: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """The scored cubes' attribute rows with the camera's perspective taken out (``vad.attributes.
    place_corrected_rows``): the velocity columns by the factor that takes the motion energy's trend over image
    position out (the one the heuristic is divided by), the box height by its own trend's, both fitted on the moving
    cubes (``vad.scoring.position_trend``); and the cubes' tracks. Rule P6 (docs/BENCHMARKS.md#perspective): on a
    real street seen obliquely it lifted the learned score by 12-21 points, while on Ped2 warped into perspective it
    moved it by -2.8 to +1.5 and no final by more than 0.001."""
    arrays, track, energy = _track_energy(config, info)
    velocity_factor, _ = _energy_trend(config, energy, arrays["boxes"])
    height_factor, _ = position_trend(box_heights(arrays["boxes"]), arrays["boxes"],
                                      moving(energy, config.score.fast_floor), config.score.position_grid)
    return place_corrected_rows(X, velocity_factor, height_factor), track


def places_attributes(config: Config) -> bool:
    """Whether the learned score's attributes have the camera's perspective taken out (``_place_corrected``): the
    attribute density in the transductive mode under ``score.perspective`` (or ``score.position_norm: trend``). A
    score setting that the train stage reads: changing it means fitting the density again."""
    return (config.attributes.use != "off" and config.model.train_on != "training"
            and resolved_position_norm(config) == "trend")


def _write_cube_errors(out: Path, config: Config, errors: np.ndarray, targets: list[str], history: Any,
                       components: dict[str, np.ndarray]) -> None:
    with atomic_path(out / "cube_errors.npz") as tmp, tmp.open("wb") as f:
        np.savez_compressed(f, errors=errors, targets=np.array(targets, dtype=str), history=history,
                            place_corrected=np.array(places_attributes(config)),
                            **{f"component_{k}": v for k, v in components.items()})


def train_stage(out: str | Path, progress: bool = True) -> GenerativeE3Outlier | None:
    """Fit the learned cube scores and save the generators (``model.pt``) and every scored cube's errors and
    learned components (``cube_errors.npz``).

    ``model.train_on: test`` (UVAD, the default) fits on the very cubes it scores, with no labels;
    ``training`` fits on the dataset's normal training videos and scores the test videos (semi-supervised).
    With ``attributes.use: alone`` the learned score is the attribute rarity and no generator is trained (returns
    None). Under torchrun the ranks train one model data-parallel and rank 0 writes the files.
    """
    out = Path(out)
    config, info = load_run(out)
    if config.attributes.use == "alone":
        if distributed.is_main():
            density = attribute_scores(config, info)
            run_folder.record(out, out / "cube_errors.npz")
            _write_cube_errors(out, config, np.zeros((len(density), 0), np.float32), [], np.zeros(0),
                               {"attributes": density, "model": density})
        distributed.sync()
        return None
    arrays, data = _cube_data(info, config.data.in_memory)
    semi = config.model.train_on == "training"
    train_arrays, train_data = _cube_data(info["training"], config.data.in_memory) if semi else (None, data)
    sample = _training_sample(train_data, config.model.max_train_cubes, config.seed)
    if distributed.is_main():
        run_folder.record(out, out / "train_checkpoint.pt", out / "model.pt", out / "cube_errors.npz")
    model = fit_cloze(config, sample, out / "train_checkpoint.pt", progress)
    errors = _cube_errors(model, info, data) if semi or sample is not train_data else model.train_errors_
    if sample is not train_data and not semi:  # fitted on a sample: the normalisation is the scored cubes'
        model.normaliser_ = Normaliser(config.model.normalisation).fit(errors)
    if distributed.is_main():
        model.save(out / "model.pt")
        (out / "train_checkpoint.pt").unlink(missing_ok=True)
    needs_cubes = config.discriminative.use != "off" or config.self_train.rounds > 0
    if needs_cubes:
        arrays = _in_memory_cubes(info, arrays)
        train_arrays = _in_memory_cubes(info["training"], train_arrays) if semi else None
    components = learned_score(config, model.normaliser_(errors).sum(1), train_arrays, arrays, progress)
    if config.attributes.use == "sum" and distributed.is_main():
        components["attributes"] = attribute_scores(config, info)
        components["model"] = zscore(components["model"]) + zscore(components["attributes"])
    if distributed.is_main():
        _write_cube_errors(out, config, errors, config.model.targets, model.history_, components)
    distributed.sync()
    return model


# ----------------------------------------------------------------------------------------------- score
def score_stage(out: str | Path) -> None:
    """Cube scores into frame scores (fused with the motion-energy heuristic, smoothed and normalised as
    configured); write cube_scores.npz, frame_scores.csv and events.csv. Under torchrun rank 0 does it."""
    if not distributed.is_main():
        return
    out = Path(out)
    config, info = load_run(out)
    learned = _cube_errors_of(out)
    if _fitted_otherwise(config, learned):
        raise ValueError(f"{out / 'cube_errors.npz'} holds a learned score fitted "
                         f"{'with' if learned['place_corrected'] else 'without'} the perspective taken out of its "
                         f"attributes, but score.perspective now says otherwise: run `vad train --out {out}` again "
                         "(`vad score --set score.perspective=...` does it for you)")
    arrays, track, energy = _track_energy(config, info)
    n_frames = [v["n_frames"] for v in info["videos"]]
    model_cubes = learned["component_model"]
    if len(model_cubes) != len(energy):
        raise ValueError(f"{out / 'cube_errors.npz'} scores {len(model_cubes)} cubes but the cache holds "
                         f"{len(energy)}: run `vad train` again")
    training = _training_energy(config, info) if resolved_position_norm(config) == "training" else None
    model_cubes, placed_energy, trend = _position_normalised(config, model_cubes, energy, arrays, training)
    speed = energy if trend is None else placed_energy  # the trend-corrected energy is still a speed
    model_cubes, slivers = _without_texture_slivers(config, model_cubes, speed, arrays)
    raw = {"model": frame_scores(model_cubes, arrays["video"], arrays["frame"], n_frames),
           "heuristic": frame_scores(placed_energy, arrays["video"], arrays["frame"], n_frames)}
    fused, fusion = fuse_frames(config, raw["model"], raw["heuristic"], speed, arrays, n_frames,
                                _fusion_reference(config, info, training))
    fusion["slivers"] = slivers
    if trend is not None:
        fusion["position_trend"] = trend
    elif resolved_position_norm(config) == "off":  # measured, not applied: the CLI and the report may suggest it
        fusion["perspective_spread"] = _energy_trend(config, energy, arrays["boxes"])[1]["spread"]
    final = postprocess(fused, config.score)
    model_frames, heuristic = postprocess(raw["model"], config.score), postprocess(raw["heuristic"], config.score)
    run_folder.record(out, *(out / name for name in ("cube_scores.npz", "frame_scores.csv", "events.csv",
                                                     "events.json", "fusion.json")))
    write_json(out / "fusion.json", fusion)
    cube_final = apply_fusion([model_cubes], [placed_energy], fusion)[0]  # ranks the boxes as the frames
    with atomic_path(out / "cube_scores.npz") as tmp, tmp.open("wb") as f:
        np.savez_compressed(f, video=arrays["video"], frame=arrays["frame"], boxes=arrays["boxes"],
                            errors=learned["errors"], targets=learned["targets"], motion_energy=energy, track=track,
                            heuristic=placed_energy, score=model_cubes, final=cube_final,
                            **{k: learned[k] for k in learned if k.startswith("component_")})
    with atomic_path(out / "frame_scores.csv") as tmp, tmp.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["video", "frame", "score", "model", "heuristic", "label"])
        for v, s, m, h in zip(info["videos"], final, model_frames, heuristic):
            labels = v["labels"]
            for t in range(len(s)):
                w.writerow([v["name"], t, f"{s[t]:.6g}", f"{m[t]:.6g}", f"{h[t]:.6g}",
                            "" if labels is None else labels[t]])
    write_events(out, config, info, final, arrays, cube_final)


def _without_texture_slivers(config: Config, model_cubes: np.ndarray, speed: np.ndarray,
                             arrays: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, Any]]:
    """The learned cube scores with the slivers of slow objects (``vad.scoring.slow_slivers``, against the fast-share
    bar of ``speed``) left out when they hold more than ``score.sliver_share`` of the frames' learned maxima, and
    what was measured (``fusion.json``'s ``slivers``). In a crowd seen close, a detector boxes each person and the
    frame differences box their feet and shadows beside them: small boxes of every size and speed, rare one by one,
    that top the learned score of most frames (the share 0.56 on vtest.avi with the detector; at most 0.06 on the
    benchmarks' sources and 0.13 on their warped and resized copies: docs/BENCHMARKS.md#slivers)."""
    s = config.score
    mask = slow_slivers(arrays["boxes"], arrays["video"], arrays["frame"], speed,
                        fast_bar(speed, s.fast_mad, s.fast_floor))
    share = frame_max_share(model_cubes, mask, arrays["video"], arrays["frame"])
    left_out = share > s.sliver_share
    record = {"share_of_frame_maxima": share, "cubes": int(mask.sum()), "left_out": bool(left_out),
              "sliver_share": s.sliver_share}
    return (without_slivers(model_cubes, mask) if left_out else model_cubes), record


def _cube_tracks(config: Config, arrays: dict[str, np.ndarray]) -> np.ndarray:
    """The cubes' object tracks (``vad.tracks.link_tracks``, ``score.track_min_iou``): what the motion energy is
    averaged along and what the attribute density never lets vouch for its own cubes."""
    return link_tracks(arrays["video"], arrays["frame"], arrays["boxes"], config.score.track_min_iou)


def _track_energy(config: Config, part: dict[str, Any]) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """The cached cubes' boxes and frames of a video set (``info`` or ``info["training"]``), their tracks and their
    motion energies averaged along the tracks (``score.track_window``)."""
    arrays = ready_cache(part).load([v["name"] for v in part["videos"]], fields=("energy", "boxes", "frame"))
    track = _cube_tracks(config, arrays)
    return arrays, track, track_mean(arrays["energy"], track, arrays["frame"], config.score.track_window)


TrainingEnergy = tuple[dict[str, np.ndarray], np.ndarray, tuple[np.ndarray, np.ndarray]]


def _training_energy(config: Config, info: dict[str, Any]) -> TrainingEnergy:
    """The training videos' cubes, their track-averaged motion energies, and the reference the scored cubes' energies
    are measured against in the semi-supervised mode: the energies and boxes of the training cubes that move more
    than ``score.fast_floor`` (standing people would put a cell's median near zero), all of them if none does."""
    arrays, _, energy = _track_energy(config, info["training"])
    mask = moving(energy, config.score.fast_floor)
    if not mask.any():
        mask[:] = True
    return arrays, energy, (energy[mask], arrays["boxes"][mask])


def _energy_trend(config: Config, energy: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
    """The motion energy's trend over image position, fitted on the moving cubes (``vad.scoring.position_trend``):
    what ``score.perspective`` takes out, and what a run without it measures for the perspective hint."""
    return position_trend(energy, boxes, moving(energy, config.score.fast_floor), config.score.position_grid)


def _position_normalised(config: Config, model_cubes: np.ndarray, energy: np.ndarray, arrays: dict[str, np.ndarray],
                         training: TrainingEnergy | None) -> tuple[np.ndarray, np.ndarray, dict[str, float] | None]:
    """The learned cube scores and motion energies, each against the cubes near the same image position when
    ``score.position_norm`` asks (over the run, or per video); with ``training`` (``_training_energy``'s result)
    only the motion energies, against the training videos' moving cubes of their cell (the learned score already
    measures against the training cubes); ``trend``: only the motion energies, divided by their fitted trend over
    image position (``vad.scoring.position_trend``; its record is returned third, else None); unchanged otherwise."""
    mode, grid = resolved_position_norm(config), config.score.position_grid
    if mode == "off":
        return model_cubes, energy, None
    if mode == "training":
        placed = position_normalise(energy, arrays["boxes"], arrays["video"], grid, reference=training[2])
        return model_cubes, placed, None
    if mode == "trend":
        factor, fit = _energy_trend(config, energy, arrays["boxes"])
        return model_cubes, energy * factor, fit
    groups = arrays["video"] if mode == "video" else np.zeros(len(energy), np.int64)
    return (*(position_normalise(x, arrays["boxes"], groups, grid) for x in (model_cubes, energy)), None)


def _fusion_reference(config: Config, info: dict[str, Any],
                      training: TrainingEnergy | None) -> list[np.ndarray] | None:
    """With the training videos' energies (``training``, semi-supervised mode) and ``score.fast_reference:
    training``, the training videos' own heuristic frame scores, normalised as the scored videos' are (what the
    fusion's fast share is read against); None otherwise."""
    if training is None or config.score.fast_reference != "training":
        return None
    arrays, energy, reference = training
    placed = position_normalise(energy, arrays["boxes"], arrays["video"], config.score.position_grid,
                                reference=reference)
    return frame_scores(placed, arrays["video"], arrays["frame"], [v["n_frames"] for v in info["training"]["videos"]])


def fuse_frames(config: Config, model: list[np.ndarray], heuristic: list[np.ndarray], energy: np.ndarray,
                cubes: dict[str, np.ndarray], n_frames: list[int],
                reference: list[np.ndarray] | None = None) -> tuple[list[np.ndarray], dict[str, Any]]:
    """The learned and the motion-energy frame scores fused by ``score.fusion``; returns them and what the rule
    read and chose (``fusion.json``). ``reference`` (``score.fast_reference: training``): the training videos'
    heuristic frame scores, when the heuristic is measured against them; the fast share is then the share of frames
    above their ``score.fast_percentile``, not the scored videos' own speed rule."""
    s = config.score
    if s.fusion == "fixed":
        fusion = {"rule": "fixed", "motion_weight": s.motion_weight}
    elif reference is None:
        share = fast_share(energy, cubes["video"], cubes["frame"], n_frames, s.fast_mad, s.fast_floor)
        fusion = {"rule": "fast_share", "reference": "scored videos", "fast_share": share,
                  "heuristic_weight": min(1.0, share / s.fast_share_full), "fast_mad": s.fast_mad,
                  "fast_floor": s.fast_floor, "fast_share_full": s.fast_share_full}
    else:
        share = tail_share(heuristic, reference, s.fast_percentile)
        fusion = {"rule": "fast_share", "reference": "training videos", "fast_share": share,
                  "heuristic_weight": min(1.0, share / s.fast_share_full), "fast_percentile": s.fast_percentile,
                  "fast_share_full": s.fast_share_full}
    return apply_fusion(model, heuristic, fusion), fusion


def needs_refit(out: str | Path) -> bool:
    """Whether the run's learned score was fitted under another ``places_attributes`` than its config now asks (after
    ``score.perspective`` changed): then the train stage must run again before the score stage."""
    return _fitted_otherwise(load_run(Path(out))[0], _cube_errors_of(Path(out)))


def _cube_errors_of(out: Path) -> dict[str, np.ndarray]:
    return load_npz(out / "cube_errors.npz", "run `vad train` again", needs=("place_corrected",))


def _fitted_otherwise(config: Config, learned: dict[str, np.ndarray]) -> bool:
    """Whether ``learned`` (``cube_errors.npz``) was fitted under another ``places_attributes`` than ``config``'s."""
    return bool(learned["place_corrected"]) != places_attributes(config)


def change_score_settings(out: str | Path, overrides: list[str]) -> Config:
    """Apply ``score.*``/``events.*`` overrides to a run's config.yaml (the stages after training read them)."""
    bad = [o for o in overrides if not o.strip().startswith(("score.", "events."))]
    if bad:
        raise ConfigError(f"only score.* and events.* settings can change after training, not {bad}")
    config = load_config(Path(out) / "config.yaml", overrides)
    save_settings(config, Path(out) / "config.yaml")
    return config


def write_events(out: Path, config: Config, info: dict[str, Any], frames: list[np.ndarray],
                 arrays: dict[str, np.ndarray], cube_score: np.ndarray) -> None:
    """events.csv: runs of frames above the event threshold, with their peak frame and the box of its most anomalous
    cube (``cube_score``: the cubes' fused score, as the frames') shown with its object (``vad.events.peak_box``)."""
    threshold, rule = event_threshold(frames, config.events)
    rows = []
    for v, (video, s) in enumerate(zip(info["videos"], frames)):
        for first, last in find_events(s, threshold, config.events.min_length, config.events.merge_gap):
            peak = first + int(np.argmax(s[first:last + 1]))
            box = peak_box(arrays["video"], arrays["frame"], arrays["boxes"], cube_score, v, peak, first, last)
            rows.append([video["name"], first, last, peak, f"{s[peak]:.6g}",
                         *(["", "", "", ""] if box is None else [f"{c:.1f}" for c in box])])
    with atomic_path(out / "events.csv") as tmp, tmp.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["video", "first_frame", "last_frame", "peak_frame", "peak_score", "x1", "y1", "x2", "y2"])
        w.writerows(rows)
    write_json(out / "events.json", {"threshold": threshold, "rule": rule, "n_events": len(rows)})


# ----------------------------------------------------------------------------------------------- eval
def eval_stage(out: str | Path, timings: dict[str, float] | None = None) -> dict[str, Any]:
    """Frame-level metrics of the final score, of the learned score alone (``model_*``, before any fusion), of the
    motion-energy heuristic as fused (``heuristic_*``, position-normalised where ``score.position_norm`` asks) and
    of the plain motion-energy rule, the baseline (``motion_rule_*``: the frame maximum of the cubes' motion
    energy, smoothed alike), into metrics.json, each also without the score's temporal smoothing and per-video
    normalisation (``unprocessed``), since those change what micro AUC measures."""
    out = Path(out)
    config, info = load_run(out)
    scores = read_frame_scores(out)
    metrics: dict[str, Any] = {"n_frames": int(sum(len(d["score"]) for d in scores.values())),
                               "n_videos": len(scores)}
    cubes = load_npz(out / "cube_scores.npz", "run `vad score` again", needs=("final", "heuristic"))
    metrics["n_cubes"] = int(len(cubes["score"]))
    metrics["train_on"] = config.model.train_on
    metrics["position_norm"] = resolved_position_norm(config)  # off: the heuristic is the plain motion-energy rule
    if not (out / "fusion.json").is_file():  # the score stage writes it beside cube_scores.npz
        raise FileNotFoundError(f"{out / 'fusion.json'} not found: run `vad score` again")
    metrics["fusion"] = json.loads((out / "fusion.json").read_text())
    labelled = all(d["label"] is not None for d in scores.values())
    if labelled:
        labels = [d["label"] for d in scores.values()]
        metrics.update(frame_metrics([d["score"] for d in scores.values()], labels))
        heuristic = [d["heuristic"] for d in scores.values()]
        # without position normalisation the heuristic is the plain rule (the same frames, not recomputed, so the
        # two figures cannot differ by frame_scores.csv's rounding)
        rule = (heuristic if metrics["position_norm"] == "off"
                else postprocess(_frames_of(cubes["motion_energy"], cubes, info), config.score))
        kinds = {"final": [d["score"] for d in scores.values()], "model": [d["model"] for d in scores.values()],
                 "heuristic": heuristic, "motion_rule": rule}
        for name in ("model", "heuristic", "motion_rule"):
            m = frame_metrics(kinds[name], labels)
            metrics.update({f"{name}_{k}": m[k] for k in ("auc_micro", "auc_macro", "eer")})
        # each video's own AUC (null where it is all normal or all abnormal): macro AUC is their mean, and on a few
        # videos one of them can move it by points
        per_video = {name: video_aucs(frames, labels) for name, frames in kinds.items()}
        metrics["per_video_auc"] = {video: {name: per_video[name][i] for name in kinds}
                                    for i, video in enumerate(scores)}
        metrics["unprocessed"] = _unprocessed_metrics(cubes, info, labels, metrics["fusion"])
        metrics["per_component_auc_micro"] = _per_component_auc(cubes, info, labels)
        masks = [pixel_masks(v["path"]) for v in info["videos"]]
        if any(m is not None for m in masks):  # every Avenue video; UCSD's with a TestNNN_gt folder
            wrong = _mask_mismatch(info, masks)
            if wrong:  # the frame labels stay right (any set pixel); box against mask overlap would not be
                metrics["localisation_skipped"] = wrong
                print(f"warning: no localisation (RBDC/TBDC): {wrong}", file=sys.stderr)
            else:
                metrics["localisation"] = localisation_metrics(cubes, cubes["final"], masks)
    else:
        metrics["note"] = "unlabeled videos: scores and plots only, no AUC"
    prior = json.loads((out / "metrics.json").read_text()) if (out / "metrics.json").exists() else {}
    # timings and peak memory belong to the run that produced the scores: a later `vad eval` keeps them
    metrics["timings"] = timings or prior.get("timings", {})
    metrics["peak_rss_mb"] = round(peak_rss_mb(), 1) if timings else prior.get("peak_rss_mb")
    run_folder.record(out, out / "metrics.json")
    write_json(out / "metrics.json", metrics)
    return metrics


def _mask_mismatch(info: dict[str, Any], masks: list[list[np.ndarray] | None]) -> str:
    """Which video's pixel masks are not the size of its frames (a resized copy of the videos, say) or not one per
    frame, or ''."""
    for v, video_masks in zip(info["videos"], masks):
        if video_masks is None:
            continue
        if len(video_masks) != v["n_frames"]:
            return f"video {v['name']} ({v['path']}) has {len(video_masks)} pixel masks for its {v['n_frames']} frames"
        shape = Video(v["name"], Path(v["path"])).frame_shape()
        if video_masks and video_masks[0].shape[:2] != shape:
            (mh, mw), (h, w) = video_masks[0].shape[:2], shape
            return f"the masks of video {v['name']} ({v['path']}) are {mw}x{mh} pixels, its frames {w}x{h}"
    return ""


def _frames_of(cube_values: np.ndarray, cubes, info: dict[str, Any]) -> list[np.ndarray]:
    return frame_scores(cube_values, cubes["video"], cubes["frame"], [v["n_frames"] for v in info["videos"]])


def _unprocessed_metrics(cubes, info: dict[str, Any], labels: list[np.ndarray], fusion: dict) -> dict[str, float]:
    """Micro/macro AUC of the final (the score stage's ``fusion``), model, heuristic and plain motion-rule scores with
    no smoothing and no per-video normalisation."""
    model, heuristic = _frames_of(cubes["score"], cubes, info), _frames_of(cubes["heuristic"], cubes, info)
    fused = apply_fusion(model, heuristic, fusion)
    out = {}
    for name, frames in (("final", fused), ("model", model), ("heuristic", heuristic),
                         ("motion_rule", _frames_of(cubes["motion_energy"], cubes, info))):
        m = frame_metrics(frames, labels)
        out.update({f"{name}_auc_micro": m["auc_micro"], f"{name}_auc_macro": m["auc_macro"]})
    return out


def _per_component_auc(cubes, info: dict[str, Any], labels: list[np.ndarray]) -> dict[str, float]:
    """Micro AUC (no post-processing, no fusion) of each cloze target's z-scored error alone, of their sum, and of
    every learned component."""
    columns = {str(name): zscore(e) for name, e in zip(cubes["targets"], cubes["errors"].T)}
    if columns:
        columns["+".join(columns)] = np.sum(list(columns.values()), 0)
    columns.update({k[len("component_"):]: cubes[k] for k in cubes if k.startswith("component_")})
    return {name: auc_micro(_frames_of(s, cubes, info), labels) for name, s in columns.items()}


# ----------------------------------------------------------------------------------------------- run
def run(config: Config, out: str | Path, *, root: str | None = None, videos_path: str | Sequence[str] | None = None,
        cache_root: str | Path = "cache", train_videos_path: str | Sequence[str] | None = None, progress: bool = True,
        make_plots: bool = True) -> dict[str, Any]:
    """All stages in order, timed; returns the metrics (under torchrun, on rank 0; the other ranks get {})."""
    t0 = time.perf_counter()
    videos = open_run(out, config, root=root, videos_path=videos_path, cache_root=cache_root,
                      train_videos_path=train_videos_path)
    extract_run(out, config, videos, cache_root, progress=progress)
    t1 = time.perf_counter()
    train_stage(out, progress)
    t2 = time.perf_counter()
    score_stage(out)
    t3 = time.perf_counter()
    if not distributed.is_main():
        return {}
    if make_plots:
        plot_run(out)
    timings = {"extract_s": round(t1 - t0, 2), "train_s": round(t2 - t1, 2), "score_s": round(t3 - t2, 2),
               "total_s": round(time.perf_counter() - t0, 2)}
    metrics = eval_stage(out, timings)
    if make_plots:
        write_report(out, progress=progress)
    return metrics
