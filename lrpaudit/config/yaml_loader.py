"""A strict YAML reader that keeps the position of every key and value.

PyYAML implements YAML 1.1, which has three traps for a tolerance file: ``1e-3`` is a *string* (1.1 floats need a
dot and a signed exponent), ``yes``/``on``/``no`` are booleans, and ``017`` is octal. A duplicate key silently
keeps the last value. This module fixes all of them:

- implicit scalars resolve as in the YAML 1.2 core schema: ``1e-3``, ``1.0e-3``, ``.5``, ``-.inf``, ``.nan`` are
  floats; ``017`` is 17, ``0o17`` 15, ``0x1f`` 31; only ``true``/``false`` (any of the three cases) are booleans;
  dates stay strings;
- a duplicate key, a non-string key, a merge key (``<<``) or an unknown explicit tag is an error;
- the document is composed into nodes and converted by hand, so the result is plain Python data plus a
  :class:`Positions` table mapping each path (a tuple of keys and list indices) to its 1-based line and column.

Bounded work and no echo of foreign files: callers read at most ``MAX_YAML_BYTES`` (see :mod:`lrpaudit.files`);
composing stops after ``MAX_COMPOSED`` nodes, converting after ``MAX_NODES`` nodes with aliases expanded (a
"billion laughs" file is refused, not expanded); a syntax error quotes at most one character of the text. With
``require="version"`` a document is accepted as one of ours only if its top level is a mapping with that key,
checked before any value is converted: until then no error quotes a key or a value, so naming some other file
(``extends: ../secret.env``, ``-c /etc/passwd``) never prints what is in it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

KeyPath = tuple[str | int, ...]

_REMOVED_TAGS = {
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:timestamp",
}
_BOOL = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_INT = re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$")
_FLOAT = re.compile(
    r"""^(?:[-+]?(?:\.[0-9]+|[0-9]+\.[0-9]*)(?:[eE][-+]?[0-9]+)?
        |[-+]?[0-9]+[eE][-+]?[0-9]+
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
    re.X,
)
MAX_YAML_BYTES = (
    2 * 2**20
)  # configs and manifests are a few kB; `lrpaudit init` lists at most a few thousand nodes
MAX_NODES = 100_000  # aliases can make a small file expand exponentially ("billion laughs")
MAX_COMPOSED = (
    20_000  # nodes written out in the text: PyYAML composes ~15,000 a second; a config has hundreds
)
_QUOTED = re.compile(r"'((?:[^'\\]|\\.)*)'|\"((?:[^\"\\]|\\.)*)\"")


class StrictLoader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 core-schema scalars (resolution only; construction is done by :func:`load_yaml`),
    which stops composing after ``MAX_COMPOSED`` nodes."""

    def compose_node(self, parent, index):
        self.composed = getattr(self, "composed", 0) + 1
        if self.composed > MAX_COMPOSED:
            mark = self.peek_event().start_mark
            raise yaml.composer.ComposerError(
                None, None, f"document too large (over {MAX_COMPOSED} nodes)", mark
            )
        return super().compose_node(parent, index)


StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in _REMOVED_TAGS]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
StrictLoader.add_implicit_resolver("tag:yaml.org,2002:bool", _BOOL, list("tTfF"))
StrictLoader.add_implicit_resolver("tag:yaml.org,2002:int", _INT, list("-+0123456789"))
StrictLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


class YamlError(Exception):
    """A problem at a position in the YAML text: ``path`` is the data path ('' parts for none)."""

    def __init__(self, line: int, column: int, path: KeyPath, message: str) -> None:
        super().__init__(message)
        self.line, self.column, self.path, self.message = line, column, path, message


class NotOurs(YamlError):
    """The document's top level is not a mapping with the required key: ``shape`` says what it is instead
    ("empty", "a list", "a string", "a number", "a mapping" ...); the message quotes nothing from the text."""

    def __init__(self, shape: str, key: str) -> None:
        super().__init__(1, 1, (key,) if shape == "a mapping" else (), f"not a document of ours ({shape})")
        self.shape = shape


def _brief(problem: str) -> str:
    """A PyYAML problem text quoting at most one character of the document (``found character '\\t'``)."""

    def keep(match: re.Match) -> str:
        inner = match.group(1) if match.group(1) is not None else match.group(2)
        short = len(inner) <= 1 or (inner.startswith("\\") and len(inner) <= 6)
        return match.group(0) if short or inner.startswith("<") else "'...'"

    return _QUOTED.sub(keep, problem)


def _shape(node: yaml.Node | None) -> str:
    if node is None:
        return "empty"
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    kinds = {"str": "a string", "int": "a number", "float": "a number", "bool": "a boolean", "null": "null"}
    return kinds.get(node.tag.rsplit(":", 1)[-1], "a scalar")


def _declares(root: yaml.Node | None, key: str) -> bool:
    return isinstance(root, yaml.MappingNode) and any(
        isinstance(k, yaml.ScalarNode) and k.tag == "tag:yaml.org,2002:str" and k.value == key
        for k, _ in root.value
    )


@dataclass
class Positions:
    """1-based (line, column) of each value and of each mapping key, by data path."""

    values: dict[KeyPath, tuple[int, int]] = field(default_factory=dict)
    keys: dict[KeyPath, tuple[int, int]] = field(default_factory=dict)

    def value(self, path: KeyPath) -> tuple[int, int]:
        """Where the value at ``path`` starts; for a missing path, where its nearest existing parent starts."""
        path = tuple(path)
        while path and path not in self.values:
            path = path[:-1]
        return self.values.get(path, (1, 1))

    def key(self, path: KeyPath) -> tuple[int, int]:
        """Where the key of ``path`` starts (the value's position for list items and the root)."""
        path = tuple(path)
        return self.keys[path] if path in self.keys else self.value(path)


def _mark(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _scalar(node: yaml.ScalarNode, path: KeyPath) -> Any:
    tag, text = node.tag, node.value
    if tag == "tag:yaml.org,2002:str":
        return text
    if tag == "tag:yaml.org,2002:null":
        return None
    if tag == "tag:yaml.org,2002:bool":
        if not _BOOL.match(text):
            raise YamlError(*_mark(node), path, f"not a boolean: {text!r} (use true or false)")
        return text.lower() == "true"
    if tag == "tag:yaml.org,2002:int":
        if not _INT.match(text):
            raise YamlError(*_mark(node), path, f"not an integer: {text!r}")
        if len(text) > 40:  # no setting needs more than 64 bits (20 digits); Python refuses over 4300
            raise YamlError(*_mark(node), path, f"integer out of range ({len(text):,} digits)")
        value = int(text[2:], 8 if text[1] == "o" else 16) if text.startswith(("0o", "0x")) else int(text, 10)
        if abs(value) >= 2**63:
            raise YamlError(*_mark(node), path, "integer out of range (more than 64 bits)")
        return value
    if tag == "tag:yaml.org,2002:float":
        lowered = text.lower()
        if lowered.endswith(".inf"):
            return -math.inf if lowered.startswith("-") else math.inf
        if lowered == ".nan":
            return math.nan
        try:
            return float(text)
        except ValueError:
            raise YamlError(*_mark(node), path, f"not a number: {text!r}") from None
    raise YamlError(*_mark(node), path, f"unsupported YAML tag {tag!r}")


def load_yaml(text: str, require: str | None = None) -> tuple[Any, Positions]:
    """Parse one YAML document into plain data and positions; raise :class:`YamlError` on any problem, and
    :class:`NotOurs` when ``require`` names a top-level key the document does not have."""
    try:
        root = yaml.compose(text, Loader=StrictLoader)
    except RecursionError:
        raise YamlError(1, 1, (), "invalid YAML: nested too deeply") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = _brief(exc.problem or exc.context or "invalid YAML")
        raise YamlError(line, column, (), f"invalid YAML: {problem}") from None
    except yaml.reader.ReaderError as exc:  # a control character: its position and code, not the text
        before = text[: exc.position] if isinstance(exc.position, int) else ""
        line, column = before.count("\n") + 1, len(before) - (before.rfind("\n") + 1) + 1
        code = exc.character if isinstance(exc.character, int) else 0
        raise YamlError(line, column, (), f"invalid YAML: unacceptable character #x{code:04x}") from None
    except yaml.YAMLError:
        raise YamlError(1, 1, (), "invalid YAML") from None
    if require is not None and not _declares(root, require):
        raise NotOurs(_shape(root), require)
    positions = Positions()
    if root is None:
        return None, positions
    count = [0]

    def convert(node: yaml.Node, path: KeyPath) -> Any:
        count[0] += 1
        if count[0] > MAX_NODES:
            raise YamlError(*_mark(node), path, f"document too large (over {MAX_NODES} nodes after aliases)")
        positions.values[path] = _mark(node)
        if isinstance(node, yaml.ScalarNode):
            return _scalar(node, path)
        if isinstance(node, yaml.SequenceNode):
            return [convert(item, (*path, index)) for index, item in enumerate(node.value)]
        if isinstance(node, yaml.MappingNode):
            result: dict[str, Any] = {}
            first_line: dict[str, int] = {}
            for key_node, value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    raise YamlError(*_mark(key_node), path, "merge keys (<<) are not supported; use extends")
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != "tag:yaml.org,2002:str":
                    shown = key_node.value if isinstance(key_node, yaml.ScalarNode) else "a collection"
                    raise YamlError(*_mark(key_node), path, f"keys must be strings, got {shown!r}")
                key = key_node.value
                if key in result:
                    raise YamlError(
                        *_mark(key_node),
                        (*path, key),
                        f"duplicate key (first defined at line {first_line[key]})",
                    )
                first_line[key] = _mark(key_node)[0]
                positions.keys[(*path, key)] = _mark(key_node)
                result[key] = convert(value_node, (*path, key))
            return result
        raise YamlError(
            *_mark(node), path, f"unsupported YAML node {type(node).__name__}"
        )  # pragma: no cover

    try:
        return convert(root, ()), positions
    except RecursionError:
        raise YamlError(1, 1, (), "invalid YAML: nested too deeply") from None


def dotted(path: KeyPath) -> str:
    """``("rules", 1, "alpha")`` -> ``rules[1].alpha``; the empty path is ``<root>``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "<root>"
