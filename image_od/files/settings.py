"""Typed settings: plain YAML files mapped onto dataclasses, with ``key=value`` overrides (``--set``).

Unknown keys and values of the wrong type are errors that name the key, so a typo never passes silently. Shared by
the video configuration (``vad.config``) and the image benchmark profiles (``pipelines/images/profiles.py``).
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from image_od.files.atomic import atomic_path


class ConfigError(ValueError):
    """A bad config file or override."""


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
    if hint is str and isinstance(value, bool):  # YAML 1.1 reads a bare off/on/no/yes as a boolean
        return "on" if value else "off"
    if hint is str and isinstance(value, (int, float)):
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
    try:
        value = yaml.safe_load(raw) if raw != "" else None
    except yaml.YAMLError as err:  # e.g. a !!python/ tag (refused by safe_load), "[1", ": x: y"
        raise ConfigError(f"--set {text}: the value is not valid YAML ({' '.join(str(err).split())})") from None
    nested: dict[str, Any] = {}
    node = nested
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return nested


def load_settings(cls: type, paths: str | Path | list[str | Path] | None = None,
                  overrides: list[str] | None = None) -> Any:
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
    return config


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def save_settings(config: Any, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(to_dict(config), sort_keys=False))


COUNT_LIMITS = {"epochs": 100_000, "batch_size": 1 << 20}  # far beyond any use: a typo fails when read, not later


class Checks:
    """Collects every invalid setting, so that one error lists them all."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def need(self, ok: bool, key: str, value: Any, rule: str) -> None:
        if not ok:
            self.problems.append(f"{key}={value!r} {rule}")

    def positive(self, key: str, value: float) -> None:
        self.need(math.isfinite(value) and value > 0, key, value, "must be positive")

    def count(self, key: str, value: int, limit: int) -> None:
        """An epoch or batch count: 1 to ``limit`` (far beyond any use: 1e23 fails here, not in torch later)."""
        self.need(1 <= value <= limit, key, value, f"must be from 1 to {limit:,}")

    def non_negative(self, key: str, value: float) -> None:
        self.need(math.isfinite(value) and value >= 0, key, value, "must be >= 0")

    def one_of(self, key: str, value: Any, options: tuple) -> None:
        self.need(value in options, key, value, f"must be one of {list(options)}")

    def subset(self, key: str, values: list, options: tuple) -> None:
        ok = bool(values) and set(values) <= set(options) and len(set(values)) == len(values)
        self.need(ok, key, values, f"must be a non-empty list of distinct items of {list(options)}")
