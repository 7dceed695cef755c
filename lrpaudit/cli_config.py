"""The ``presets`` and ``init`` commands: list and show the built-in presets, write a starter config for a model."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import click

from .cli import _err, _parse_shape, guarded, main
from .errors import ConfigError

DEFAULT_INIT_PRESET = "epsilon-plus-flat"


@main.command()
@click.argument("name", required=False)
@guarded
def presets(name: str | None) -> None:
    """List the built-in presets, or print preset NAME's YAML."""
    from .config import list_presets, preset_path

    if name is not None:
        click.echo(preset_path(name).read_text(encoding="utf-8"), nl=False)
        return
    entries = list_presets()
    width = max(len(entry) for entry, _ in entries)
    for entry, description in entries:
        click.echo(f"{entry:<{width}}  {description}")


@main.command()
@click.argument("model_path", metavar="MODEL", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    default="lrp.yaml",
    show_default=True,
    help="Where to write the config ('-' for stdout).",
)
@click.option(
    "--preset",
    default=DEFAULT_INIT_PRESET,
    show_default=True,
    help="The preset the config extends (see `lrpaudit presets`).",
)
@click.option("--input-shape", default=None, help="Concrete input shape for dynamic dims, e.g. 1,3,32,32.")
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
@guarded
def init(model_path: Path, output: str, preset: str, input_shape: str | None, force: bool) -> None:
    """Write a starter config for MODEL that extends a preset and lists the model's linear-type nodes."""
    from .config import load_config, preset_path
    from .frontends import load_model
    from .inputs import random_batches

    preset_path(preset)  # an unknown preset fails before any work
    target = None if output == "-" else Path(output)
    if target is not None and target.exists() and not force:
        raise ConfigError(f"{target} exists; not overwriting it (use --force)")
    model = load_model(model_path)
    shapes = _parse_shape(input_shape)
    if shapes and "*" in shapes:
        shapes = {model.input_names[0]: shapes["*"]}
    probe = next(iter(random_batches(model.declared_shapes(), 1, 1, 0, shapes)))
    graph = model.graph({name: tuple(a.shape) for name, a in probe.arrays.items()})
    shown = "lrp.yaml" if target is None else str(target)
    text = starter_config(graph, model_path, model.sha256(), preset, load_config(preset=preset), shown)
    if target is None:
        click.echo(text, nl=False)
        return
    _write_checked(target, text, graph)
    count = sum(node.op in ("linear", "conv", "conv_transpose", "affine") for node in graph.nodes)
    _err(f"lrpaudit: wrote {target} (extends {preset}; {count} linear-type nodes listed)")


def _write_checked(target: Path, text: str, graph) -> None:
    """Write atomically (temp file in the same folder, then rename), after proving the text loads and assigns."""
    from .config import load_config

    target.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        load_config(tmp).assign(graph)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _shape(graph, value: str) -> str:
    shape = graph.shapes.get(value)
    return "?" if shape is None else "[" + ", ".join(str(d) for d in shape) + "]"


def starter_config(graph, model_path: Path, sha256: str, preset: str, base, output: str = "lrp.yaml") -> str:
    """The text of a starter config: settings (commented), the model's linear-type nodes, example rules."""
    from .config.matching import GraphContext
    from .ir import LINEAR_TYPE, WEIGHTED

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
    widths = [max([len(header)] + [len(row[k]) for row in rows]) for k, header in enumerate(_HEADERS[:4])]
    table = [
        "#   " + "  ".join(f"{h:<{w}}" for h, w in zip(_HEADERS[:4], widths)) + f"  {_HEADERS[4]}",
    ]
    for row in rows:
        cells = "  ".join(f"{c:<{w}}" for c, w in zip(row[:4], widths))
        extra = f"  ({'; '.join(row[5])})" if row[5] else ""
        table.append(f"#   {cells}  {row[4]}{extra}")
    glob = json.dumps(_glob_for(context.counted[-1]) if context.counted else "*")
    second = (
        context.counted[1] if len(context.counted) > 1 else (context.counted[0] if context.counted else None)
    )
    second_op = next((node.op for node in graph.nodes if node.id == second), "conv")
    second_index = context.index.get(second, 0)
    lines = [
        f"# lrpaudit config for {_comment_safe(str(model_path))} (sha256 {sha256[:16]}...), "
        "written by `lrpaudit init`.",
        f"# Check it with: lrpaudit check {_comment_safe(str(model_path))} -c {_comment_safe(output)} --random 8",
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


def _glob_for(node_id: str) -> str:
    """A glob that matches the node and its siblings: the id up to its last separator, then '*'."""
    for sep in ("/", "."):
        head, found, _ = node_id.rpartition(sep)
        if found and head:
            return f"{head}{sep}*"
    return node_id


def _comment_safe(text: str) -> str:
    return text.replace("\r", " ").replace("\n", " ")
