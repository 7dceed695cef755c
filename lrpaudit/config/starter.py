"""The starter config that ``lrpaudit init`` writes: the model's linear-type nodes listed, example rules, settings
commented out, extending a preset."""

from __future__ import annotations

import json
from pathlib import Path

from ..display import safe
from ..ir import LINEAR_TYPE, WEIGHTED
from .matching import GraphContext


def _shape(graph, value: str) -> str:
    shape = graph.shapes.get(value)
    return "?" if shape is None else "[" + ", ".join(str(d) for d in shape) + "]"


def starter_config(graph, model_path: Path, sha256: str, preset: str, base, output: str = "lrp.yaml") -> str:
    """The text of a starter config: settings (commented), the model's linear-type nodes, example rules."""
    context = GraphContext.of(graph)
    assignment = base.assign(graph)
    rows = []
    for node in graph.nodes:
        if node.op not in LINEAR_TYPE:
            continue
        index = context.index.get(node.id)
        notes = []
        if context.counted and node.id == context.counted[0]:
            notes.append("position: first")
        if context.counted and node.id == context.counted[-1]:
            notes.append("position: last")
        if node.op not in WEIGHTED:
            notes.append("not counted by index/position")
        shapes = f"{_shape(graph, node.inputs[0])} -> {_shape(graph, node.output)}"
        rule = assignment.rules[node.id].describe()
        rows.append(
            ("-" if index is None else str(index), node.op, _comment_safe(node.id), shapes, rule, notes)
        )
    listed = rows[:MAX_LISTED]
    widths = [max([len(header)] + [len(row[k]) for row in listed]) for k, header in enumerate(_HEADERS[:4])]
    table = [
        "#   " + "  ".join(f"{h:<{w}}" for h, w in zip(_HEADERS[:4], widths)) + f"  {_HEADERS[4]}",
    ]
    for row in listed:
        cells = "  ".join(f"{c:<{w}}" for c, w in zip(row[:4], widths))
        extra = f"  ({'; '.join(row[5])})" if row[5] else ""
        table.append(f"#   {cells}  {row[4]}{extra}")
    if len(rows) > MAX_LISTED:  # the file must stay far below the config size limit
        table.append(f"#   ... and {len(rows) - MAX_LISTED} more (`lrpaudit inspect MODEL` lists every node)")
    glob = json.dumps(_glob_for(context.counted[-1]) if context.counted else "*")
    second = (
        context.counted[1] if len(context.counted) > 1 else (context.counted[0] if context.counted else None)
    )
    second_op = next((node.op for node in graph.nodes if node.id == second), "conv")
    second_index = context.index.get(second, 0)
    lines = [
        f"# lrpaudit config for {_comment_safe(str(model_path), 4096)} (sha256 {sha256[:16]}...), "
        "written by `lrpaudit init`.",
        f"# Check it with: lrpaudit check {_comment_safe(str(model_path), 4096)} -c {_comment_safe(output, 4096)} --random 8",
        "version: 1",
        f"extends: {preset}  # see `lrpaudit presets {preset}`; this file's settings and rules come first",
        "",
        "# explain: logits          # logits (strip a trailing softmax) | output",
        "# target: predicted        # predicted | a class index",
        "# init: logit              # logit (R = logit of the target) | one",
        "# dtype: float64           # float64 | float32",
        "# bias: absorb             # default bias mode of every rule: absorb | ignore | distribute",
        "",
        f"# The model's linear-type nodes, in graph order, with the rule {preset} gives each. Match them in rules",
        "# by op, by name (a glob on the node id), by index (counts linear, conv and conv_transpose nodes from 0)",
        "# or by position (first | last of those).",
        *table,
        "",
        "rules: []  # first match wins; entries here are tried before the preset's. For example:",
        f"  # - match: {{name: {glob}}}",
        "  #   rule: epsilon",
        "  #   epsilon: 0.25",
        f"  # - match: {{op: {second_op}, index: {second_index}}}",
        "  #   rule: zplus",
        "  #   bias: ignore",
        "",
        "# tolerance:",
        "#   gate: strict             # strict | explained (only unexplained leaks fail)",
        "#   layer_rtol: 1.0e-4",
        "#   end_to_end_rtol: 1.0e-3",
        "#   overrides:",
        f"#     - match: {{name: {glob}}}",
        "#       layer_rtol: 1.0e-2",
        "",
    ]
    return "\n".join(lines)


_HEADERS = ("index", "op", "node id", "input -> output shape", "rule")
MAX_LISTED = 5000  # linear-type nodes listed in the comment table (about 150 bytes each)


def _glob_for(node_id: str) -> str:
    """A glob that matches the node and its siblings: the id up to its last separator, then '*'."""
    for sep in ("/", "."):
        head, found, _ = node_id.rpartition(sep)
        if found and head:
            return f"{head}{sep}*"
    return node_id


def _comment_safe(text: str, limit: int = 160) -> str:
    """A name or path inside a YAML comment: one safe line (YAML also breaks lines at NEL, U+2028 and U+2029,
    which would let a node id write config keys), cut at ``limit`` characters."""
    text = safe(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."
