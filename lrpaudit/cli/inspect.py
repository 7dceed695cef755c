"""``lrpaudit inspect MODEL``: the canonical IR, the forward-fidelity proof, and with a config each node's rule."""

from __future__ import annotations

from pathlib import Path

import click

from ._common import config_options, err, guarded, input_shape_option, one_config, trust_code_option


@click.command()
@click.argument("model_path", metavar="MODEL", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--random",
    "random_n",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Random samples for the fidelity check.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for --random.")
@input_shape_option
@click.option(
    "--final-only", is_flag=True, help="Compare only final outputs with the runtime (default: every tensor)."
)
@config_options
@trust_code_option
@guarded
def inspect(
    model_path: Path,
    random_n: int,
    seed: int,
    input_shapes,
    final_only: bool,
    config_path,
    preset,
    trust_code,
):
    """Print the canonical IR of MODEL and prove its forward pass against the model's runtime.

    With -c/--preset, each node also shows its rule and the config line that chose it.
    """
    one_config(config_path, preset)  # a usage error answers without loading torch
    from ..inspection import inspect_model
    from ..reports.ir_table import render_fidelity, render_ir

    seen = inspect_model(
        model_path, random_n, seed, not final_only, input_shapes, config_path, preset, trust_code=trust_code
    )
    if seen.assignment is not None:
        for warning in seen.assignment.warnings:
            err(f"lrpaudit: warning: {warning}")
    render_ir(seen.graph, assignment=seen.assignment)
    render_fidelity(seen.fidelity)
    state = "ok" if seen.fidelity.passed else "FAILED"
    err(f"lrpaudit: {model_path}: {len(seen.graph.nodes)} IR nodes; forward fidelity {state}")
