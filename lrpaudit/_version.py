"""The package version, in a module of its own so that reports and the CLI need not import the engine."""

__version__ = "0.1.0"
