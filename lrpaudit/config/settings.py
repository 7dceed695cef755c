"""The resolved configuration: ``load_config`` merges an ``extends`` chain into a :class:`Config`.

Precedence, highest first: command-line flags (:meth:`Config.with_overrides`), the config file, the files and
presets it extends (nearest first), the built-in defaults. Scalar settings take the first value found in that
order. Rule lists and tolerance overrides are concatenated, child first, and tried in that order: the first entry
that matches a node wins, so a file's own entries come before those it extends.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..audit import Tolerance
from ..errors import ConfigError
from ..ir import Graph
from ..rules.spec import BIAS_MODES, LINEAR_TYPE, RULES, Rule, default_rule
from .layers import Layer, OverrideEntry, RuleEntry, read_layer, resolve_extends
from .matching import GraphContext
from .presets import preset_path
from .schema import ConfigFileError
from .yaml_loader import dotted

_TOLERANCE = Tolerance()
DEFAULTS: dict[str, Any] = {
    "explain": "logits",
    "target": "predicted",
    "init": "logit",
    "dtype": "float64",
    "bias": "absorb",
    "gate": _TOLERANCE.gate,
    "layer_rtol": _TOLERANCE.layer_rtol,
    "end_to_end_rtol": _TOLERANCE.end_to_end_rtol,
}
CHOICES = {
    "explain": ("logits", "output"),
    "init": ("logit", "one"),
    "dtype": ("float64", "float32"),
    "bias": BIAS_MODES,
    "gate": ("strict", "explained"),
}
_MAX_LISTED = 12


@dataclass
class Assignment:
    """A rule for every node of one graph, where each came from, and warnings about unused config entries."""

    rules: dict[str, Rule]
    sources: dict[str, str]
    warnings: list[str] = field(default_factory=list)


@dataclass
class Config:
    """A fully resolved configuration. ``sources`` says where each setting came from."""

    path: str | None = None
    sha256: str | None = None
    explain: str = DEFAULTS["explain"]
    target: str | int = DEFAULTS["target"]
    init: str = DEFAULTS["init"]
    dtype: str = DEFAULTS["dtype"]
    bias: str = DEFAULTS["bias"]
    gate: str = DEFAULTS["gate"]
    layer_rtol: float = DEFAULTS["layer_rtol"]
    end_to_end_rtol: float = DEFAULTS["end_to_end_rtol"]
    rules: list[RuleEntry] = field(default_factory=list)
    overrides: list[OverrideEntry] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=lambda: dict.fromkeys(DEFAULTS, "default"))
    chain: list[dict[str, Any]] = field(default_factory=list)
    preset: str | None = None
    _rules_at: tuple[str, int, int] | None = None  # where to point "no rule matches" errors

    @property
    def name(self) -> str:
        """How reports name this config: its path, the preset's name, or 'default'."""
        return self.path or (f"preset {self.preset}" if self.preset else "default")

    # ------------------------------------------------------------------------------------------ rules

    def assign(self, graph: Graph) -> Assignment:
        """Pick a rule for every node of ``graph`` (first matching entry wins; defaults for non-linear ops).

        Raises ConfigError when a linear-type node matches no entry, or when an entry that selects nodes by op,
        index or position lands on an op its rule cannot apply to. An entry that only has a ``name`` glob (or no
        match at all) skips nodes its rule cannot apply to. Warnings name the user-file entries (and tolerance
        overrides) that no node ends up using.
        """
        context = GraphContext.of(graph)
        built = [entry.build(self.bias) for entry in self.rules]
        matched = [0] * len(self.rules)
        chosen_count = [0] * len(self.rules)
        rules: dict[str, Rule] = {}
        sources: dict[str, str] = {}
        missing: list[str] = []
        for node in graph.nodes:
            chosen = None
            for k, entry in enumerate(self.rules):
                if not entry.matcher.matches(node, context):
                    continue
                if node.op not in RULES[entry.rule].ops:
                    if entry.matcher.selects_by_op and chosen is None:
                        raise self._entry_error(
                            entry,
                            f"rule {entry.rule!r} cannot apply to node {node.id!r} (op {node.op!r}; "
                            f"{entry.rule} applies to: {', '.join(RULES[entry.rule].ops)})",
                        )
                    continue
                matched[k] += 1
                if chosen is None:
                    chosen = k
            if chosen is not None:
                chosen_count[chosen] += 1
                rules[node.id] = built[chosen]
                sources[node.id] = self.rules[chosen].source
                continue
            if node.op in LINEAR_TYPE:
                missing.append(f"{node.id!r} ({node.op})")
                continue
            fallback = default_rule(node.op)
            if fallback is not None:  # ops with no rule at all are refused by the propagation
                if RULES[fallback.name].has_bias:
                    fallback = Rule(fallback.name, bias=self.bias, **fallback.params)
                rules[node.id] = fallback
                sources[node.id] = "default"
        if missing:
            raise self._missing_error(missing)
        warnings = [
            self._unused(entry, k, matched[k])
            for k, entry in enumerate(self.rules)
            if chosen_count[k] == 0 and entry.origin.preset is None
        ]
        warnings += self._unused_overrides(graph, context)
        return Assignment(rules, sources, warnings)

    def _entry_error(self, entry: RuleEntry, message: str) -> ConfigFileError:
        line, column = entry.match_at
        return ConfigFileError(entry.origin.file, line, column, dotted((*entry.path, "match")), message)

    def _missing_error(self, missing: list[str]) -> ConfigError:
        shown = ", ".join(missing[:_MAX_LISTED])
        if len(missing) > _MAX_LISTED:
            shown += f" and {len(missing) - _MAX_LISTED} more"
        message = (
            f"no rule matches the linear-type nodes {shown}; add an entry such as "
            "{match: {op: [linear, conv]}, rule: epsilon}"
        )
        if self._rules_at is None:
            return ConfigError(
                f"no rules configured: {message} (give a config file or a preset: lrpaudit presets)"
            )
        file, line, column = self._rules_at
        return ConfigFileError(file, line, column, "rules", message)

    @staticmethod
    def _unused(entry: RuleEntry, k: int, matched: int) -> str:
        where = f"{entry.origin.file}:{entry.line}"
        what = f"{dotted(entry.path)} (rule {entry.rule}, match {entry.matcher.as_dict() or '{}'})"
        if matched == 0:
            return f"{where}: {what} matches no node"
        return f"{where}: {what} matches {matched} node(s), but earlier entries take them all"

    def _unused_overrides(self, graph: Graph, context: GraphContext) -> list[str]:
        used = [False] * len(self.overrides)
        for node in graph.nodes:
            for k, entry in enumerate(self.overrides):
                if entry.matcher.matches(node, context):
                    used[k] = True
                    break
        return [
            f"{entry.origin.file}:{entry.line}: {dotted(entry.path)} (match {entry.matcher.as_dict()}) "
            "matches no node"
            for k, entry in enumerate(self.overrides)
            if not used[k] and entry.origin.preset is None
        ]

    # ------------------------------------------------------------------------------------- tolerance

    def node_tolerances(self, graph: Graph) -> dict[str, tuple[float, str]]:
        """Per-node ``layer_rtol`` overrides: node id -> (tolerance, source); first matching override wins."""
        context = GraphContext.of(graph)
        table: dict[str, tuple[float, str]] = {}
        for node in graph.nodes:
            for entry in self.overrides:
                if entry.matcher.matches(node, context):
                    table[node.id] = (entry.layer_rtol, entry.source)
                    break
        return table

    def tolerance(self, graph: Graph) -> Tolerance:
        """The conservation gate for ``graph``, with the per-node overrides of ``layer_rtol``."""
        table = {node_id: value for node_id, (value, _) in self.node_tolerances(graph).items()}
        return Tolerance(
            gate=self.gate,
            layer_rtol=self.layer_rtol,
            end_to_end_rtol=self.end_to_end_rtol,
            node_rtol=table.get if table else None,
        )

    # ------------------------------------------------------------------------------- overrides, report

    def with_overrides(self, source: str = "command line", **values: Any) -> Config:
        """A copy with settings replaced (None values are ignored): command-line flags beat the config file."""
        changes = {key: value for key, value in values.items() if value is not None}
        for key, value in changes.items():
            if key not in DEFAULTS:
                raise ConfigError(f"{source}: unknown setting {key!r} (settings: {', '.join(DEFAULTS)})")
            _check_setting(key, value, source)
        sources = {**self.sources, **dict.fromkeys(changes, source)}
        return dataclasses.replace(self, sources=sources, **changes)

    def resolved(self) -> dict[str, Any]:
        """The fully resolved configuration as JSON-able data, with the source of every setting and entry."""
        return {
            "path": self.path,
            "sha256": self.sha256,
            "preset": self.preset,
            "chain": [dict(item) for item in self.chain],
            "explain": self.explain,
            "target": self.target,
            "init": self.init,
            "dtype": self.dtype,
            "bias": self.bias,
            "rules": [
                {
                    "match": entry.matcher.as_dict(),
                    "rule": entry.rule,
                    "params": {key: _jsonable(value) for key, value in entry.params.items()},
                    "bias": entry.bias or self.bias,
                    "source": entry.source,
                }
                for entry in self.rules
            ],
            "tolerance": {
                "gate": self.gate,
                "layer_rtol": self.layer_rtol,
                "end_to_end_rtol": self.end_to_end_rtol,
                "overrides": [
                    {"match": entry.matcher.as_dict(), "layer_rtol": entry.layer_rtol, "source": entry.source}
                    for entry in self.overrides
                ],
            },
            "sources": dict(self.sources),
        }


def _jsonable(value: Any) -> Any:
    return value.tolist() if isinstance(value, np.ndarray) else value


def _positive(value: Any) -> bool:
    return (
        not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value) and value > 0
    )


def _class_index(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int) and value >= 0


def _check_setting(key: str, value: Any, source: str) -> None:
    if key in CHOICES and value not in CHOICES[key]:
        raise ConfigError(f"{source}: {key} must be one of {', '.join(CHOICES[key])}, got {value!r}")
    if key in ("layer_rtol", "end_to_end_rtol") and not _positive(value):
        raise ConfigError(f"{source}: {key} must be a finite number > 0, got {value!r}")
    if key == "target" and value != "predicted" and not _class_index(value):
        raise ConfigError(f"{source}: target must be 'predicted' or a class index >= 0, got {value!r}")


# ------------------------------------------------------------------------------------------- loading


def _chain(first: Layer) -> list[Layer]:
    """The layer and everything it extends, child first; a cycle is an error naming the chain."""
    layers = [first]
    seen = [first.origin.real]
    while layers[-1].spec.extends is not None:
        child = layers[-1]
        real, display, preset = resolve_extends(child)
        if real in seen:
            names = [layer.origin.label for layer in layers] + [f"preset {preset}" if preset else display]
            raise child.error(("extends",), f"extends cycle: {' -> '.join(names)}")
        seen.append(real)
        layers.append(read_layer(real, display, preset))
    return layers


def _merge(layers: list[Layer], path: str | None, sha256: str | None, preset: str | None) -> Config:
    config = Config(path=path, sha256=sha256, preset=preset)
    for key in DEFAULTS:
        for layer in layers:
            if key in layer.settings:
                value, source = layer.settings[key]
                setattr(config, key, value)
                config.sources[key] = source
                break
    for layer in layers:
        config.rules.extend(layer.rules)
        config.overrides.extend(layer.overrides)
        config.chain.append(
            {"file": layer.origin.file, "preset": layer.origin.preset, "sha256": layer.origin.sha256}
        )
    root = layers[0]
    line, column = root.positions.key(("rules",)) if root.spec.rules is not None else (1, 1)
    config._rules_at = (root.origin.file, line, column)
    return config


def load_config(path: str | Path | None = None, preset: str | None = None) -> Config:
    """Load and validate a config file (with its ``extends`` chain), or a preset by name, or neither (defaults).

    Errors are ConfigErrors reading ``file:line:col: dotted.key: message``. A config file and a preset are
    exclusive: a file that wants a preset's rules says ``extends: NAME``.
    """
    if path is not None and preset is not None:
        raise ConfigError(
            f"give a config file or a preset, not both (put 'extends: {preset}' in {path} to build on the preset)"
        )
    if path is not None:
        display = str(path)
        layers = _chain(read_layer(Path(path).resolve(), display))
        return _merge(layers, display, layers[0].origin.sha256, None)
    if preset is not None:
        real = preset_path(preset).resolve()
        layers = _chain(read_layer(real, str(real), preset))
        return _merge(layers, None, None, preset)
    return Config()
