"""Built-in presets: the YAML files in the repository's ``configs/`` folder.

An installed package carries the same files as ``lrpaudit/presets/*.yaml`` (pyproject.toml maps the package
``lrpaudit.presets`` onto ``configs/``). In a source checkout or an editable install that folder does not exist
inside the package, and the files are read from ``configs/`` next to ``lrpaudit/`` instead.

Each preset file starts with ``# NAME: one-line description``; further comment lines say what it is for and
what it conserves.
"""

from __future__ import annotations

import functools
from pathlib import Path

from ..errors import ConfigError
from .hints import suggest

_PACKAGE = Path(__file__).resolve().parents[1]


@functools.cache
def presets_dir() -> Path:
    """The folder holding the preset files (installed copy first, then the source checkout's configs/)."""
    installed = _PACKAGE / "presets"
    if installed.is_dir() and any(installed.glob("*.yaml")):
        return installed
    source = _PACKAGE.parent / "configs"
    if source.is_dir() and (_PACKAGE.parent / "pyproject.toml").is_file():
        return source
    raise ConfigError(  # pragma: no cover - a broken installation
        f"the preset files are missing (looked in {installed} and {source}); reinstall lrpaudit"
    )


def preset_names() -> list[str]:
    return sorted(path.stem for path in presets_dir().glob("*.yaml"))


def preset_path(name: str) -> Path:
    """The file of preset ``name``; a ConfigError with a did-you-mean hint if there is none."""
    names = preset_names()
    if name not in names:
        close = suggest(name, names)
        hint = f"did you mean {close!r}? " if close else ""
        raise ConfigError(f"unknown preset {name!r} ({hint}presets: {', '.join(names)})")
    return presets_dir() / f"{name}.yaml"


def preset_description(name: str) -> str:
    """The one-line description from the preset file's first line (``# NAME: description``)."""
    first = preset_path(name).read_text(encoding="utf-8").splitlines()[0]
    text = first.lstrip("#").strip()
    prefix = f"{name}:"
    return text[len(prefix) :].strip() if text.startswith(prefix) else text


def list_presets() -> list[tuple[str, str]]:
    """Every preset name with its one-line description, sorted by name."""
    return [(name, preset_description(name)) for name in preset_names()]
