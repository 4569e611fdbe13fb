"""Typed run configuration: plain YAML files mapped onto dataclasses, with ``--set key=value`` overrides.

Unknown keys and values of the wrong type are errors that name the key, so a typo never passes silently; every
value's range and choices are then checked (``validate``) before any work starts.
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from image_od.atomic import atomic_path


class ConfigError(ValueError):
    """A bad config file or override."""


@dataclass
class DataConfig:
    layout: str = "auto"  # auto | ucsd | ucsd_preprocessed | avenue | videos
    grey: bool = True  # grey cubes (the paper's 5x32x32); false keeps BGR colour
    in_memory: bool = True  # false: the model reads cubes lazily from the HDF5 cache (sets larger than RAM)
    num_workers: int = 0  # DataLoader workers when in_memory is false
    avenue_labels: str = "auto"  # Avenue only: masks (official pixel masks) | npy (literature's frame labels) | auto
    bad_frames: str = "error"  # unreadable/truncated frame image: error | skip (repeat the previous good frame)


@dataclass
class RegionConfig:
    sources: list[str] = field(default_factory=lambda: ["motion"])  # any of: motion, detector, file
    box_file: str | None = None  # npz of precomputed boxes (source "file")
    motion_blur: int = 3  # cloze-test recipe: Gaussian blur kernel
    motion_threshold: int = 18  # foreground if |I(t-1)-I(t)| + |I(t)-I(t+1)| > threshold
    motion_min_area: int = 100  # (w+1)*(h+1) must exceed this
    motion_max_aspect: float = 10.0
    motion_margin: int = 2
    detector_weights: str | None = None  # local ultralytics YOLO weights file (source "detector")
    detector_score: float = 0.5
    detector_min_area: float = 100.0
    detector_imgsz: int = 640
    cover_thr: float = 0.6  # drop detector boxes mostly covered by larger ones


@dataclass
class CubeConfig:
    size: int = 32
    frames: int = 5


@dataclass
class FlowConfig:
    method: str = "dis"  # dis | farneback | raft (FlowNet2, the paper's, is unavailable here)
    preset: str = "medium"  # DIS preset
    upscale: float = 1.0  # DIS on frames enlarged by this factor, vectors returned in frame pixels
    raft_weights: str | None = None
    raft_small: bool = False


@dataclass
class ModelConfig:
    targets: list[str] = field(default_factory=lambda: ["appearance", "flow"])
    widths: list[int] = field(default_factory=lambda: [32, 64, 128])
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    normalisation: str = "zscore"  # zscore | minmax | none


@dataclass
class ScoreConfig:
    motion_weight: float = 0.0  # frame score = z(model) + motion_weight * z(motion energy) (0 = paper)
    smooth_window: int = 1  # moving average over frames within a video (1 = off, the default)


@dataclass
class Config:
    name: str = "video"
    seed: int = 0
    device: str = "auto"
    data: DataConfig = field(default_factory=DataConfig)
    regions: RegionConfig = field(default_factory=RegionConfig)
    cubes: CubeConfig = field(default_factory=CubeConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)


def _check_type(key: str, value: Any, hint: Any) -> Any:
    """Coerce ``value`` to the annotated type or raise ConfigError naming ``key``."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is not type(None):
                try:
                    return _check_type(key, value, option)
                except ConfigError:
                    continue
        raise ConfigError(f"{key}: {value!r} is not a {hint}")
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, (list, tuple)):
            value = [value]
        return [_check_type(f"{key}[{i}]", v, item) for i, v in enumerate(value)]
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise ConfigError(f"{key}: {value!r} is not a {hint.__name__}")
    return value


def _apply(obj: Any, data: dict[str, Any], prefix: str = "") -> None:
    hints = typing.get_type_hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}
    for key, value in data.items():
        full = prefix + key
        if key not in names:
            raise ConfigError(f"unknown config key {full!r}; known: {sorted(names)}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{full}: expected a mapping, got {value!r}")
            _apply(current, value, full + ".")
        else:
            setattr(obj, key, _check_type(full, value, hints[key]))


def parse_override(text: str) -> dict[str, Any]:
    """``model.epochs=5`` -> {"model": {"epochs": 5}} (the value is read as YAML)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key=value")
    key, raw = text.split("=", 1)
    value = yaml.safe_load(raw) if raw != "" else None
    nested: dict[str, Any] = {}
    node = nested
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return nested


def load_config(paths: str | Path | list[str | Path] | None = None, overrides: list[str] | None = None,
                cls: type = Config) -> Any:
    """Defaults of dataclass ``cls``, then each YAML file in order (later files override earlier ones), then
    each ``key=value``."""
    config = cls()
    if paths is None:
        paths = []
    elif isinstance(paths, (str, Path)):
        paths = [paths]
    for path in paths:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{p}: not valid YAML ({' '.join(str(err).split())})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{p}: top level must be a mapping")
        try:
            _apply(config, data)
        except ConfigError as err:
            raise ConfigError(f"{p}: {err}") from None
    for text in overrides or []:
        _apply(config, parse_override(text))
    return validate(config) if isinstance(config, Config) else config


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def save_config(config: Any, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(to_dict(config), sort_keys=False))


# ----------------------------------------------------------------------------------------------- validation
REGION_SOURCES = ("motion", "detector", "file")
FLOW_METHODS = ("dis", "farneback", "raft")
DIS_PRESETS = ("ultrafast", "fast", "medium")


class _Checks:
    """Collects every invalid setting, so that one error lists them all."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def need(self, ok: bool, key: str, value: Any, rule: str) -> None:
        if not ok:
            self.problems.append(f"{key}={value!r} {rule}")

    def positive(self, key: str, value: float) -> None:
        self.need(math.isfinite(value) and value > 0, key, value, "must be positive")

    def non_negative(self, key: str, value: float) -> None:
        self.need(math.isfinite(value) and value >= 0, key, value, "must be >= 0")

    def one_of(self, key: str, value: Any, options: tuple) -> None:
        self.need(value in options, key, value, f"must be one of {list(options)}")

    def subset(self, key: str, values: list, options: tuple) -> None:
        ok = bool(values) and set(values) <= set(options) and len(set(values)) == len(values)
        self.need(ok, key, values, f"must be a non-empty list of distinct items of {list(options)}")


def _check_device(checks: _Checks, device: str) -> None:
    import torch

    try:
        ok = device == "auto" or torch.device(device).type in ("cpu", "cuda", "mps")
    except (RuntimeError, ValueError):
        ok = False
    checks.need(ok, "device", device, "must be auto, cpu, cuda or cuda:N")


def _check_data_regions(checks: _Checks, c: Config) -> None:
    from vad.readers import AVENUE_LABELS, BAD_FRAMES, LAYOUTS

    d, r = c.data, c.regions
    checks.one_of("data.layout", d.layout, ("auto", *LAYOUTS))
    checks.one_of("data.avenue_labels", d.avenue_labels, AVENUE_LABELS)
    checks.one_of("data.bad_frames", d.bad_frames, BAD_FRAMES)
    checks.non_negative("data.num_workers", d.num_workers)
    checks.subset("regions.sources", r.sources, REGION_SOURCES)
    checks.need("file" not in r.sources or bool(r.box_file), "regions.box_file", r.box_file,
                "must be set (or --boxes given) when regions.sources has 'file'")
    checks.need("detector" not in r.sources or bool(r.detector_weights), "regions.detector_weights",
                r.detector_weights, "must be set when regions.sources has 'detector'")
    checks.need(r.motion_blur > 0 and r.motion_blur % 2 == 1, "regions.motion_blur", r.motion_blur,
                "must be a positive odd kernel size")
    for key in ("motion_threshold", "motion_min_area", "motion_margin", "detector_min_area"):
        checks.non_negative(f"regions.{key}", getattr(r, key))
    checks.positive("regions.motion_max_aspect", r.motion_max_aspect)
    checks.positive("regions.detector_imgsz", r.detector_imgsz)
    checks.need(0 <= r.detector_score <= 1, "regions.detector_score", r.detector_score, "must be within [0, 1]")
    checks.need(0 < r.cover_thr <= 1, "regions.cover_thr", r.cover_thr, "must be within (0, 1]")


def _check_cubes_flow(checks: _Checks, c: Config) -> None:
    cu, fl = c.cubes, c.flow
    checks.need(cu.frames >= 3 and cu.frames % 2 == 1, "cubes.frames", cu.frames,
                "must be odd and at least 3 (the middle frame is inferred from the others)")
    step = 2 ** max(len(c.model.widths), 1)  # one stride-2 convolution per width
    checks.need(cu.size > 0 and cu.size % step == 0, "cubes.size", cu.size,
                f"must be a positive multiple of {step} (2 ** len(model.widths))")
    checks.one_of("flow.method", fl.method, FLOW_METHODS)
    if fl.method == "dis":
        checks.one_of("flow.preset", fl.preset, DIS_PRESETS)
    checks.positive("flow.upscale", fl.upscale)
    checks.need(fl.method != "raft" or bool(fl.raft_weights), "flow.raft_weights", fl.raft_weights,
                "must be set when flow.method is raft")


def _check_model_score(checks: _Checks, c: Config) -> None:
    from image_od.generative import NORMALISATIONS
    from vad.cloze import TARGETS

    m, s = c.model, c.score
    checks.subset("model.targets", m.targets, TARGETS)
    checks.need(bool(m.widths) and all(w > 0 for w in m.widths), "model.widths", m.widths,
                "must be a non-empty list of positive integers")
    checks.positive("model.epochs", m.epochs)
    checks.positive("model.batch_size", m.batch_size)
    checks.positive("model.lr", m.lr)
    checks.one_of("model.normalisation", m.normalisation, NORMALISATIONS)
    checks.need(math.isfinite(s.motion_weight), "score.motion_weight", s.motion_weight, "must be a finite number")
    checks.positive("score.smooth_window", s.smooth_window)


def validate(config: Config) -> Config:
    """Check every setting's range and choices before any work; raise one ConfigError that lists every problem."""
    checks = _Checks()
    checks.need(0 <= config.seed < 2 ** 32, "seed", config.seed, "must be within 0 .. 2**32-1")
    _check_device(checks, config.device)
    _check_data_regions(checks, config)
    _check_cubes_flow(checks, config)
    _check_model_score(checks, config)
    if checks.problems:
        raise ConfigError("invalid settings: " + "; ".join(checks.problems))
    return config
