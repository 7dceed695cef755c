"""``lrpaudit rules``: every rule of the registry with its ops, parameters, formula and what it conserves."""

from __future__ import annotations

import click

from ._common import guarded


@click.command("rules")
@guarded
def rules_command() -> None:
    """List every rule: the ops it applies to, its parameters, its formula and what it conserves."""
    from ..rules.spec import BIAS_MODES, RULES

    for spec in RULES.values():
        params = ", ".join(f"{k}={v}" for k, v in spec.params.items()) or "none"
        click.echo(f"{spec.name}")
        click.echo(f"  ops:        {', '.join(spec.ops)}")
        click.echo(f"  params:     {params}")
        click.echo(f"  bias modes: {', '.join(BIAS_MODES) if spec.has_bias else '- (no bias term)'}")
        click.echo(f"  formula:    {spec.formula}")
        click.echo(f"  conserves:  {spec.conserves}")
