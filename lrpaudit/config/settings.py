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

from ..errors import ConfigError
from ..ir import Graph, Node
from ..rules.assign import Assignment, assign
from ..rules.spec import BIAS_MODES, RULES
from ..verdicts import Tolerance
from .file import ConfigFile, OverrideEntry, RuleEntry, read_config_file, resolve_extends
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
        """Pick a rule for every node of ``graph`` (see :class:`RuleMatcher`, and :func:`rules.assign.assign`)."""
        return assign(graph, self)

    def chooser(self, graph: Graph) -> RuleMatcher:
        """The per-node rule choice of this config on ``graph``, for :func:`lrpaudit.rules.assign.assign`."""
        return RuleMatcher(self, graph)

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


class RuleMatcher:
    """A config's rule choice on one graph: the first matching entry wins, and which entries got used.

    An entry that selects nodes by op, index or position and lands on an op its rule cannot apply to is an error
    pointing at the entry; an entry with only a ``name`` glob (or no match at all) skips such nodes. Warnings name
    the user-file entries (and tolerance overrides) that no node ends up using.
    """

    def __init__(self, config: Config, graph: Graph) -> None:
        self.config = config
        self.graph = graph
        self.default_bias = config.bias
        self.context = GraphContext.of(graph)
        self.built = [entry.build(config.bias) for entry in config.rules]
        self.matched = [0] * len(config.rules)
        self.chosen = [0] * len(config.rules)

    def choose(self, node: Node):
        chosen = None
        for k, entry in enumerate(self.config.rules):
            if not entry.matcher.matches(node, self.context):
                continue
            if node.op not in RULES[entry.rule].ops:
                if entry.matcher.selects_by_op and chosen is None:
                    raise self.config._entry_error(
                        entry,
                        f"rule {entry.rule!r} cannot apply to node {node.id!r} (op {node.op!r}; "
                        f"{entry.rule} applies to: {', '.join(RULES[entry.rule].ops)})",
                    )
                continue
            self.matched[k] += 1
            if chosen is None:
                chosen = k
        if chosen is None:
            return None, "default"
        self.chosen[chosen] += 1
        return self.built[chosen], self.config.rules[chosen].source

    def missing_error(self, nodes: list[Node]) -> Exception:
        return self.config._missing_error([f"{node.id!r} ({node.op})" for node in nodes])

    def warnings(self) -> list[str]:
        config = self.config
        unused = [
            config._unused(entry, k, self.matched[k])
            for k, entry in enumerate(config.rules)
            if self.chosen[k] == 0 and entry.origin.preset is None
        ]
        return unused + config._unused_overrides(self.graph, self.context)


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


def _chain(first: ConfigFile) -> list[ConfigFile]:
    """The file and everything it extends, child first; a cycle is an error naming the chain."""
    files = [first]
    seen = [first.origin.real]
    while files[-1].spec.extends is not None:
        child = files[-1]
        real, display, preset = resolve_extends(child)
        if real in seen:
            names = [config_file.origin.label for config_file in files] + [
                f"preset {preset}" if preset else display
            ]
            raise child.error(("extends",), f"extends cycle: {' -> '.join(names)}")
        seen.append(real)
        files.append(read_config_file(real, display, preset))
    return files


def _merge(files: list[ConfigFile], path: str | None, sha256: str | None, preset: str | None) -> Config:
    config = Config(path=path, sha256=sha256, preset=preset)
    for key in DEFAULTS:
        for config_file in files:
            if key in config_file.settings:
                value, source = config_file.settings[key]
                setattr(config, key, value)
                config.sources[key] = source
                break
    for config_file in files:
        config.rules.extend(config_file.rules)
        config.overrides.extend(config_file.overrides)
        config.chain.append(
            {
                "file": config_file.origin.file,
                "preset": config_file.origin.preset,
                "sha256": config_file.origin.sha256,
            }
        )
    root = files[0]
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
        files = _chain(read_config_file(Path(path).resolve(), display))
        return _merge(files, display, files[0].origin.sha256, None)
    if preset is not None:
        real = preset_path(preset).resolve()
        files = _chain(read_config_file(real, str(real), preset))
        return _merge(files, None, None, preset)
    return Config()
