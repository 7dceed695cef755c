"""The command line: each command parses its flags, calls one API function and renders the result.

Every command module imports only :mod:`._common` (and, inside the command, the API and the reports), so the
group below is the one place that knows them all, and nothing imports the CLI.
"""

from __future__ import annotations

import click

from .._version import __version__
from . import batch, check, init, inspect, merge, presets, rules


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lrpaudit")
def main() -> None:
    """Audit Layer-wise Relevance Propagation for conservation on ONNX and TorchScript model files."""


for command in (
    check.check,
    merge.merge,
    batch.batch,
    inspect.inspect,
    rules.rules_command,
    presets.presets,
    init.init,
):
    main.add_command(command)

if __name__ == "__main__":  # pragma: no cover
    main()
