"""Lazy package attributes (PEP 562): a package names what it exports and where it lives; a name's module is
imported on first use, so importing the package (and ``lrpaudit --help``) loads none of the heavy libraries."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping


def lazy_exports(
    package: str, public: Mapping[str, str]
) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``, whose ``public`` maps each exported name to its (relative)
    module; a resolved name is cached in the package's namespace."""

    def __getattr__(name: str) -> object:
        if name not in public:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(public[name], package), name)
        setattr(importlib.import_module(package), name, value)
        return value

    def __dir__() -> list[str]:
        return sorted({*public, *vars(importlib.import_module(package))})

    return __getattr__, __dir__
