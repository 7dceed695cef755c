"""``lrpaudit init MODEL``: write a starter config that extends a preset and lists the model's linear-type nodes."""

from __future__ import annotations

from pathlib import Path

import click

from ._common import err, guarded, input_shape_option, trust_code_option

DEFAULT_INIT_PRESET = "epsilon-plus-flat"


@click.command()
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
@input_shape_option
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
@trust_code_option
@guarded
def init(model_path: Path, output: str, preset: str, input_shapes, force: bool, trust_code: bool) -> None:
    """Write a starter config for MODEL that extends a preset and lists the model's linear-type nodes."""
    from ..config.presets import preset_path
    from ..errors import ConfigError
    from ..inspection import starter_config, write_config
    from ..ir import LINEAR_TYPE

    preset_path(preset)  # an unknown preset fails before any work
    target = None if output == "-" else Path(output)
    if target is not None and target.exists() and not force:
        raise ConfigError(f"{target} exists; not overwriting it (use --force)")
    text, graph = starter_config(
        model_path, preset, input_shapes, "lrp.yaml" if target is None else str(target), trust_code=trust_code
    )
    if target is None:
        click.echo(text, nl=False)
        return
    write_config(target, text, graph)
    count = sum(node.op in LINEAR_TYPE for node in graph.nodes)
    err(f"lrpaudit: wrote {target} (extends {preset}; {count} linear-type nodes listed)")
