"""One config file (a user file or a preset) read, validated and turned into rule and override entries.

A file's ``extends:`` chain is a list of files, child first; :mod:`lrpaudit.config.settings` merges them.

What ``extends:`` may name (:func:`resolve_extends`): a preset name (a bare word: ``epsilon-plus-flat``), or a
relative path to a ``.yaml``/``.yml`` file inside the folder of the file that extends it (that folder or one below
it), after symlinks are resolved. Absolute paths, ``~``, paths that climb out of the folder (``../secret.env``) and
symlinks that point out of it are refused before anything is opened. The file must be a regular file of at most
``MAX_YAML_BYTES``, and it is a config only if its top level is a mapping with ``version:``; until then an error
quotes nothing from it (:mod:`.yaml_loader`), so no file that is not a config has its content printed.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..files import read_limited
from ..ir import LINEAR_TYPE, POOLS, WEIGHTED
from ..ops import OPS
from ..rules.spec import RULES, Rule
from .hints import suggest
from .matching import Matcher
from .presets import preset_names, preset_path
from .schema import (
    SUPPORTED_VERSION,
    TOP_SETTINGS,
    ConfigFileError,
    FileSpec,
    MatchSpec,
    describe,
    error_at,
    unknown,
    validate_file,
)
from .yaml_loader import MAX_YAML_BYTES, KeyPath, NotOurs, Positions, YamlError, dotted, load_yaml

KNOWN_OPS = tuple(sorted(set(OPS) | set(LINEAR_TYPE) | set(POOLS)))
NON_NEGATIVE = ("epsilon", "stabilizer", "gamma", "alpha", "beta")
ARRAY_PARAMS = ("low", "high")  # zbox bounds: a number or a (nested) list, per input element or channel
EXTENDS_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class Origin:
    """Where a config_file came from: ``file`` is shown in errors, ``label`` in rule sources."""

    file: str
    label: str
    real: Path
    sha256: str
    preset: str | None = None


@dataclass
class RuleEntry:
    """A validated ``rules:`` item."""

    origin: Origin
    path: KeyPath
    line: int
    column: int
    matcher: Matcher
    rule: str
    params: dict[str, Any]
    bias: str | None
    match_at: tuple[int, int]  # where the entry's match (or, without one, the entry) starts

    @property
    def source(self) -> str:
        return f"{self.origin.label}:{self.line}"

    def build(self, default_bias: str) -> Rule:
        return Rule(self.rule, bias=self.bias or default_bias, **self.params)


@dataclass
class OverrideEntry:
    """A validated ``tolerance.overrides`` item."""

    origin: Origin
    path: KeyPath
    line: int
    matcher: Matcher
    layer_rtol: float

    @property
    def source(self) -> str:
        return f"{self.origin.label}:{self.line}"


@dataclass
class ConfigFile:
    origin: Origin
    positions: Positions
    spec: FileSpec
    settings: dict[str, tuple[Any, str]] = field(default_factory=dict)  # key -> (value, source)
    rules: list[RuleEntry] = field(default_factory=list)
    overrides: list[OverrideEntry] = field(default_factory=list)

    def error(self, path: KeyPath, message: str, at_key: bool = False) -> ConfigError:
        return error_at(self.origin.file, self.positions, path, message, at_key)


def read_config_file(real: Path, display: str, preset: str | None = None) -> ConfigFile:
    """Read and validate one file. ``display`` is how errors name it (the path as the user wrote it)."""
    try:
        raw = read_limited(real, MAX_YAML_BYTES, ConfigError, "config file", prefix=display)
    except FileNotFoundError:
        raise ConfigError(f"{display}: no such config file") from None
    except IsADirectoryError:
        raise ConfigError(f"{display}: is a folder, not a config file") from None
    origin = Origin(
        display, f"preset {preset}" if preset else display, real, hashlib.sha256(raw).hexdigest(), preset
    )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{display}:1:1: <root>: not UTF-8 text (byte {exc.start})") from None
    try:
        data, positions = load_yaml(text, require="version")
    except NotOurs as exc:
        raise ConfigFileError(display, 1, 1, dotted(exc.path), _not_a_config(exc.shape)) from None
    except YamlError as exc:
        raise ConfigFileError(display, exc.line, exc.column, dotted(exc.path), exc.message) from None
    spec = validate_file(data, positions, display)
    config_file = ConfigFile(origin, positions, spec)
    if spec.version != SUPPORTED_VERSION:
        raise config_file.error(
            ("version",),
            f"unsupported version {spec.version} (this lrpaudit reads version {SUPPORTED_VERSION})",
        )
    for key in TOP_SETTINGS:
        value = getattr(spec, key)
        if value is not None:
            config_file.settings[key] = (value, f"{origin.label}:{positions.key((key,))[0]}")
    tolerance = spec.tolerance
    if tolerance is not None:
        for key in ("gate", "layer_rtol", "end_to_end_rtol"):
            value = getattr(tolerance, key)
            if value is not None:
                line = positions.key(("tolerance", key))[0]
                config_file.settings[key] = (
                    float(value) if key != "gate" else value,
                    f"{origin.label}:{line}",
                )
        for i, item in enumerate(tolerance.overrides or []):
            path = ("tolerance", "overrides", i)
            matcher = _matcher(config_file, item.match, (*path, "match"), None)
            line = positions.value(path)[0]
            config_file.overrides.append(OverrideEntry(origin, path, line, matcher, float(item.layer_rtol)))
    for i, item in enumerate(spec.rules or []):
        config_file.rules.append(_rule_entry(config_file, item, ("rules", i)))
    return config_file


def _not_a_config(shape: str) -> str:
    """The error for a document that is not a config, saying what it is but quoting nothing of it."""
    if shape == "empty":
        return f"empty config (start it with 'version: {SUPPORTED_VERSION}')"
    if shape == "a mapping":
        return f"missing required key (a config file starts with 'version: {SUPPORTED_VERSION}')"
    return f"expected a mapping of settings, got {shape} (a config file starts with 'version: {SUPPORTED_VERSION}')"


def _is_path(target: str) -> bool:
    """A preset name is a bare kebab-case word: anything with a separator, a dot or a ``~`` is a path."""
    return any(ch in target for ch in "/\\.~")


def resolve_extends(config_file: ConfigFile) -> tuple[Path, str, str | None]:
    """Where ``extends:`` points: (real path, display path, preset name or None); refused unless it is a preset
    name or a ``.yaml``/``.yml`` file inside the extending file's folder (see the module docstring)."""
    target = config_file.spec.extends
    path = ("extends",)
    if not target:
        raise config_file.error(path, "expected a preset name or a path to a config file")
    if _is_path(target):
        rule = "extends takes a preset name or a relative path to a .yaml file inside this file's folder"
        if os.path.isabs(target) or target.startswith("~") or Path(target).drive:
            raise config_file.error(path, f"{target}: absolute paths are refused ({rule})")
        if not target.endswith(EXTENDS_SUFFIXES):
            raise config_file.error(path, f"{target}: not a .yaml or .yml file ({rule})")
        folder = config_file.origin.real.parent
        real = (folder / target).resolve()
        if not real.is_relative_to(folder):
            raise config_file.error(path, f"{target}: leaves this file's folder ({folder}); refused ({rule})")
        if config_file.origin.preset is None:
            display = os.path.normpath(os.path.join(os.path.dirname(config_file.origin.file), target))
        else:
            display = str(real)
        if not real.exists():
            raise config_file.error(path, f"no such config file: {display} (paths are relative to this file)")
        return real, display, None
    names = preset_names()
    if target not in names:
        close = suggest(target, names)
        hint = f"did you mean {close!r}? " if close else ""
        raise config_file.error(path, f"unknown preset {target!r} ({hint}presets: {', '.join(names)})")
    real = preset_path(target).resolve()
    return real, str(real), target


def _matcher(config_file: ConfigFile, spec: MatchSpec | None, path: KeyPath, rule: str | None) -> Matcher:
    """Check a match's values (op names, glob, what ``rule`` can apply to) and build the Matcher."""
    if spec is None:
        return Matcher()
    ops = None
    if spec.op is not None:
        for k, op in enumerate(spec.op):
            if op not in KNOWN_OPS:
                close = suggest(op.lower(), KNOWN_OPS)
                hint = f" (did you mean {close!r}?)" if close else " (IR op names: see lrpaudit inspect)"
                raise config_file.error((*path, "op", k), f"unknown op {op!r}{hint}")
            if rule is not None and op not in RULES[rule].ops:
                raise config_file.error(
                    (*path, "op", k),
                    f"rule {rule!r} does not apply to op {op!r} (it applies to: {', '.join(RULES[rule].ops)})",
                )
        ops = tuple(dict.fromkeys(spec.op))
    if spec.name is not None and not spec.name:
        raise config_file.error((*path, "name"), "must not be empty (a glob on node ids, e.g. 'features.*')")
    if spec.node_name is not None and not spec.node_name:
        raise config_file.error(
            (*path, "node_name"), "must not be empty (a glob on ONNX node names, e.g. '/features/*')"
        )
    if rule is not None and not set(WEIGHTED) <= set(RULES[rule].ops):
        for key in ("index", "position"):
            if getattr(spec, key) is not None:
                raise config_file.error(
                    (*path, key),
                    f"rule {rule!r} does not apply to the linear/conv nodes that {key} selects "
                    f"(it applies to: {', '.join(RULES[rule].ops)})",
                )
    return Matcher(ops, spec.name, spec.index, spec.position, spec.node_name)


def _param(config_file: ConfigFile, key: str, value: Any, path: KeyPath) -> Any:
    if key in ARRAY_PARAMS and isinstance(value, list):
        try:
            array = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            raise config_file.error(path, "expected a number or a rectangular list of numbers") from None
        if array.size == 0:
            raise config_file.error(path, "must not be empty")
        if not np.all(np.isfinite(array)):
            raise config_file.error(path, "must contain only finite numbers")
        return array
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        kind = "a number or a list of numbers" if key in ARRAY_PARAMS else "a number"
        raise config_file.error(path, f"expected {kind}, got {describe(value)}")
    if not math.isfinite(value):
        raise config_file.error(path, f"must be a finite number, got {value}")
    if key in NON_NEGATIVE and value < 0:
        raise config_file.error(path, f"must be >= 0, got {value}")
    return float(value)


def _rule_entry(config_file: ConfigFile, item, path: KeyPath) -> RuleEntry:
    rule = item.rule
    if rule not in RULES:
        close = suggest(rule, RULES)
        hint = f" (did you mean {close!r}?)" if close else f" (rules: {', '.join(RULES)})"
        raise config_file.error((*path, "rule"), f"unknown rule {rule!r}{hint}")
    takes = RULES[rule].params
    params: dict[str, Any] = {}
    for key, value in (item.model_extra or {}).items():
        if key not in takes:
            allowed = ["match", "rule", "bias", *takes]
            message = unknown(key, allowed)
            if suggest(key, allowed) is None and any(key in spec.params for spec in RULES.values()):
                message = f"unknown key (rule {rule!r} takes: {', '.join(takes) or 'no parameters'})"
            raise config_file.error((*path, key), message, at_key=True)
        params[key] = _param(config_file, key, value, (*path, key))
    if rule == "alphabeta":
        alpha, beta = params.get("alpha", takes["alpha"]), params.get("beta", takes["beta"])
        if abs(alpha - beta - 1.0) > 1e-12:
            where = "alpha" if "alpha" in params else "beta"
            raise config_file.error(
                (*path, where), f"alpha - beta must be 1, got alpha={alpha:g}, beta={beta:g}"
            )
    if rule == "zbox":
        low, high = params.get("low", takes["low"]), params.get("high", takes["high"])
        try:
            ordered = bool(np.all(np.asarray(low) < np.asarray(high)))
        except ValueError:
            raise config_file.error(
                (*path, "high"), "low and high have shapes that do not broadcast"
            ) from None
        if not ordered:
            raise config_file.error((*path, "high" if "high" in params else "low"), "zbox needs low < high")
    matcher = _matcher(config_file, item.match, (*path, "match"), rule)
    line, column = config_file.positions.value(path)
    match_at = config_file.positions.value((*path, "match"))
    entry = RuleEntry(config_file.origin, path, line, column, matcher, rule, params, item.bias, match_at)
    try:
        entry.build("absorb")
    except ConfigError as exc:  # the registry's own checks, as a safety net
        raise config_file.error(path, str(exc)) from None
    return entry
