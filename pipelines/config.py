"""Typed run configuration: plain YAML files mapped onto dataclasses, with ``--set key=value`` overrides.

Unknown keys and values of the wrong type are errors that name the key, so a typo never passes silently.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A bad config file or override."""


@dataclass
class DataConfig:
    layout: str = "auto"  # auto | ucsd | ucsd_preprocessed | avenue | videos
    grey: bool = True  # grey cubes (the paper's 5x32x32); false keeps BGR colour
    in_memory: bool = True  # false: the model reads cubes lazily from the HDF5 cache (sets larger than RAM)
    num_workers: int = 0  # DataLoader workers when in_memory is false
    avenue_labels: str = "auto"  # Avenue only: masks (official pixel masks) | npy (literature's frame labels) | auto


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
        data = yaml.safe_load(p.read_text()) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{p}: top level must be a mapping")
        try:
            _apply(config, data)
        except ConfigError as err:
            raise ConfigError(f"{p}: {err}") from None
    for text in overrides or []:
        _apply(config, parse_override(text))
    return config


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def save_config(config: Any, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(config), sort_keys=False))
