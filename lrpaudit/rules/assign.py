"""Which rule each node gets: the one function that turns a rule choice into a rule for every node of a graph.

A choice is a :class:`Rule` (for every linear-type node), a mapping from node id to rule, a function of the node,
or a resolved config (anything with a ``chooser(graph)`` method, e.g. :class:`lrpaudit.config.Config`, whose
matchers, sources and warnings point at config lines). Nodes the choice leaves open get the op's default rule
(pass, route, norm, ...); a linear-type node it leaves open is an error, and so is an op with no rule at all:
lrpaudit never falls back to the gradient.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from ..errors import ConfigError, UnsupportedOpError
from ..ir import LINEAR_TYPE, Graph, Node
from .attention import resolve
from .spec import RULES, Rule, default_rule

RuleChoice = Rule | Mapping[str, Rule] | Callable[[Node], Rule | None]


class Chooser(Protocol):
    """What a rule choice answers per node; a config file's chooser also tracks which entries were used."""

    default_bias: str

    def choose(self, node: Node) -> tuple[Rule | None, str]:
        """The node's rule (None: the choice leaves it open) and where it came from."""

    def missing_error(self, nodes: list[Node]) -> Exception:
        """The error for linear-type nodes that the choice leaves open."""

    def warnings(self) -> list[str]:
        """Warnings about the choice itself (config entries that no node used), after every node was chosen."""


@dataclass(frozen=True)
class Assignment:
    """A rule for every node of one graph, where each came from, and warnings about unused config entries.

    ``unsupported`` lists the nodes whose op has no rule at all; :meth:`complete` refuses them.
    """

    rules: dict[str, Rule]
    sources: dict[str, str]
    warnings: list[str] = field(default_factory=list)
    unsupported: tuple[tuple[str, str], ...] = ()  # (node id, op)

    def complete(self) -> Assignment:
        """This assignment, or an UnsupportedOpError naming the first node whose op has no LRP rule."""
        if self.unsupported:
            node_id, op = self.unsupported[0]
            raise UnsupportedOpError(
                f"node {node_id!r}: no LRP rule for op {op!r} (refusing to fall back to the gradient)"
            )
        return self


def assign(graph: Graph, choice) -> Assignment:
    """A rule for every node of ``graph`` from ``choice`` (see the module docstring)."""
    chooser = choice.chooser(graph) if hasattr(choice, "chooser") else _PlainChooser(choice)
    rules: dict[str, Rule] = {}
    sources: dict[str, str] = {}
    missing: list[Node] = []
    unsupported: list[tuple[str, str]] = []
    for node in graph.nodes:
        rule, source = chooser.choose(node)
        if rule is None and node.op in LINEAR_TYPE:
            missing.append(node)
            continue
        if rule is None:
            rule, source = default_rule(node.op, chooser.default_bias, node.attrs), "default"
        if rule is None:
            unsupported.append((node.id, node.op))
            continue
        if node.op not in RULES[rule.name].ops:
            raise ConfigError(f"node {node.id!r}: rule {rule.name!r} does not apply to op {node.op!r}")
        rules[node.id] = resolve(graph, node, rule)
        sources[node.id] = source
    if missing:
        raise chooser.missing_error(missing)
    return Assignment(rules, sources, list(chooser.warnings()), tuple(unsupported))


class _PlainChooser:
    """A Rule for every linear-type node, a mapping by node id, or a function of the node."""

    default_bias = "absorb"

    def __init__(self, choice: RuleChoice) -> None:
        if isinstance(choice, Rule):
            self._choose = lambda node: choice if node.op in LINEAR_TYPE else None
        elif isinstance(choice, Mapping):
            self._choose = lambda node: choice.get(node.id)
        elif callable(choice):
            self._choose = choice
        else:
            raise ConfigError(
                f"not a rule choice: {choice!r} (give a Rule, a mapping of node ids, or a config)"
            )

    def choose(self, node: Node) -> tuple[Rule | None, str]:
        return self._choose(node), "rules"

    def missing_error(self, nodes: list[Node]) -> Exception:
        return ConfigError(f"no rule matches the linear-type nodes {[node.id for node in nodes]}")

    def warnings(self) -> list[str]:
        return []
