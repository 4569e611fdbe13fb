"""Profiles of the image methods: plain YAML whose sections are the detectors' ``__init__`` arguments.

A profile (``configs/image_od/<name>.yaml``) holds ``name``, ``max_size`` (the contaminated set's cap) and one
section per detector family (``discriminative``, ``generative``, ``cae``, ...), each a mapping of that detector's
keyword arguments; a section may hold ``grey:`` and ``colour:`` sub-mappings that apply on grey or colour datasets
only (the paper trains discriminative E3Outlier with SGD on grey sets and Adam on colour ones). A section named
after a method (``e3outlier-mcd``) adds that method's own settings over its family's. Whatever a profile does not
set is the detector's default, which is the paper's setting. Every key is checked against the detector's
signature when the profile is loaded; ``--set section.key=value`` overrides one value on grey and colour datasets
alike (``--set section.colour.key=value`` on one kind only). ``exposure`` names the
outlier-exposure corpus of the methods that train against one (ADIB, ADRA), per kind of dataset:
``exposure: {grey: {dataset: cifar10, root: ../shared/data/cifar10, split: test}}``.
"""
from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from image_od.files.atomic import atomic_path
from image_od.files.settings import COUNT_LIMITS, ConfigError, parse_override

PROFILE_DIR = Path(__file__).resolve().parents[2] / "configs" / "image_od"
KINDS = ("grey", "colour")
RUN_ARGUMENTS = ("seed", "device", "progress")  # given by the run, never by a profile


@dataclass
class Profile:
    name: str = "custom"
    max_size: int = 12000
    sections: dict[str, dict[str, Any]] = field(default_factory=dict)
    exposure: dict[str, dict[str, Any]] = field(default_factory=dict)  # kind -> dataset, root, split

    def exposure_source(self, colour: bool) -> dict[str, Any] | None:
        """The outlier-exposure corpus for a grey or colour dataset, or None when the profile names none."""
        return self.exposure.get("colour" if colour else "grey")

    def settings(self, section: str, colour: bool, family: str | None = None) -> dict[str, Any]:
        """The keyword arguments of ``section`` (over those of its ``family`` section, if any) for a grey or colour
        dataset."""
        merged: dict[str, Any] = {}
        for name in ([family] if family else []) + [section]:
            values = self.sections.get(name, {})
            merged.update({k: v for k, v in values.items() if k not in KINDS})
            merged.update(values.get("colour" if colour else "grey", {}))
        return merged

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "max_size": self.max_size, **({"exposure": self.exposure} if self.exposure else {}),
                **self.sections}


def _merge(into: dict[str, Any], new: dict[str, Any]) -> None:
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def _drop_kind_settings(data: dict[str, Any], override: dict[str, Any]) -> None:
    """An override of ``section.key`` applies on grey and colour datasets alike: drop ``key`` from the section's
    ``grey:``/``colour:`` sub-mappings, which would otherwise win over it."""
    for section, values in override.items():
        if not isinstance(values, dict) or not isinstance(data.get(section), dict):
            continue
        for kind in KINDS:
            sub = data[section].get(kind)
            if isinstance(sub, dict):
                for key in set(values) - set(KINDS):
                    sub.pop(key, None)


def read_profile(name_or_path: str, overrides: list[str] | None, detectors: dict[str, type]) -> Profile:
    """``paper``, ``cpu``, ``colour`` (files in configs/image_od/) or a YAML path, then ``key=value`` overrides,
    checked against ``detectors`` (section -> detector class: ``pipelines.images.methods.load_profile`` passes the
    bench's families)."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PROFILE_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise ConfigError(f"profile not found: {path} (known: {sorted(p.stem for p in PROFILE_DIR.glob('*.yaml'))})")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(err).split())})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    data = copy.deepcopy(data)
    for text in overrides or []:
        override = parse_override(text)
        _merge(data, override)
        _drop_kind_settings(data, override)
    profile = Profile(name=data.pop("name", path.stem), max_size=data.pop("max_size", 12000),
                      exposure=data.pop("exposure", {}) or {}, sections=data)
    check_profile(profile, detectors, str(path))
    return profile


def check_profile(profile: Profile, detectors: dict[str, type], where: str) -> None:
    """Every section names a detector family (or a method of one) and every key one of its arguments."""
    if not isinstance(profile.max_size, int) or profile.max_size < 1:
        raise ConfigError(f"{where}: max_size must be a positive integer, got {profile.max_size!r}")
    for kind, source in profile.exposure.items():
        if kind not in KINDS or not isinstance(source, dict) or "dataset" not in source \
                or set(source) - {"dataset", "root", "split"}:
            raise ConfigError(f"{where}: exposure.{kind} must be grey: or colour: with dataset, root, split; "
                              f"got {source!r}")
    for section, values in profile.sections.items():
        cls = detectors.get(section)
        if cls is None:
            raise ConfigError(f"{where}: unknown profile section {section!r}; known: {sorted(detectors)}")
        if not isinstance(values, dict):
            raise ConfigError(f"{where}: section {section!r} must be a mapping of {cls.__name__} settings")
        known = set(inspect.signature(cls).parameters) - set(RUN_ARGUMENTS)
        for key, value in values.items():
            names = [f"{key}.{k}" for k in value] if key in KINDS and isinstance(value, dict) else [key]
            unknown = [n for n in names if n.split(".")[-1] not in known]
            if unknown:
                raise ConfigError(f"{where}: unknown setting {section}.{unknown[0]} ({cls.__name__} takes: "
                                  f"{', '.join(sorted(known))})")
            for name, v in (value.items() if key in KINDS and isinstance(value, dict) else [(key, value)]):
                _check_count(f"{where}: {section}.{key}" + (f".{name}" if name != key else ""), name, v)




def _check_count(where: str, key: str, value: object) -> None:
    """Epoch and batch counts are integers within ``COUNT_LIMITS`` (``--batch-size 1e23`` would overflow torch);
    None leaves the detector's own rule."""
    limit = COUNT_LIMITS.get(key)
    bad = isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit if limit else False
    if value is not None and bad:
        raise ConfigError(f"{where} must be an integer from 1 to {limit:,}, got {value!r}")


def save_profile(profile: Profile, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(profile.to_dict(), sort_keys=False))
