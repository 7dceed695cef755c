"""Command-line flags merged with the project settings (``lrpaudit.yaml`` / ``[tool.lrpaudit]``).

A flag the user typed wins; a flag left at its default takes the project's value. The two groups that exclude each
other move as a whole: a config or preset typed on the command line drops the project's config and preset, and
``--inputs`` or ``--random`` drops the project's inputs and random count.
"""

from __future__ import annotations

from click.core import ParameterSource

# command-line parameter name -> settings key
KEYS = {
    "config_path": "config",
    "preset": "preset",
    "inputs": "inputs",
    "random_n": "random",
    "seed": "seed",
    "input_shapes": "input_shape",
    "batch_size": "batch_size",
    "dtype": "dtype",
    "device": "device",
    "target": "target",
    "gate": "gate",
    "json_report": "json_report",
    "junit_xml": "junit_xml",
    "markdown": "markdown",
    "html": "html",
    "heatmaps": "heatmaps",
}
GROUPS = (("config_path", "preset"), ("inputs", "random_n"))


def merged(ctx, flags: dict, settings) -> dict:
    """``flags`` (by parameter name) with the project's values where the user typed nothing."""
    if settings is None:
        return dict(flags)
    typed = {name for name in flags if ctx.get_parameter_source(name) not in (ParameterSource.DEFAULT, None)}
    out = dict(flags)
    for group in GROUPS:
        if typed & set(group):
            typed |= set(group)  # the user chose this group: the project's values for it do not apply
    for name, key in KEYS.items():
        if name in flags and name not in typed and key in settings.values:
            value = settings.values[key]
            if name == "input_shapes":
                from ..inputs.shapes import parse_shape

                value = parse_shape(value)
            elif name == "target":
                value = str(value)
            out[name] = value
    return out
