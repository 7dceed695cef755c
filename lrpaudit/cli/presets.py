"""``lrpaudit presets [NAME]``: list the built-in presets, or print one."""

from __future__ import annotations

import click

from ._common import guarded


@click.command()
@click.argument("name", required=False)
@guarded
def presets(name: str | None) -> None:
    """List the built-in presets, or print preset NAME's YAML."""
    from ..config.presets import list_presets, preset_path

    if name is not None:
        click.echo(preset_path(name).read_text(encoding="utf-8"), nl=False)
        return
    entries = list_presets()
    width = max(len(entry) for entry, _ in entries)
    for entry, description in entries:
        click.echo(f"{entry:<{width}}  {description}")
