"""Project settings, found the way ruff and pytest find theirs: ``lrpaudit.yaml``, or ``[tool.lrpaudit]`` in a
``pyproject.toml``, in the current folder or the nearest folder above it.

They hold what a user would otherwise type on every ``lrpaudit check``: the config (``config: lrp.yaml`` or
``preset: NAME``), the inputs (``inputs: PATH`` or ``random: N`` with ``seed``), ``input_shape``,
``batch_size``, ``dtype``, ``device``, ``target``, tolerances (``gate``, ``layer_rtol``, ``end_to_end_rtol``,
which take precedence over the config file's) and report paths (``json_report``, ``junit_xml``, ``markdown``,
``html``, ``heatmaps``). Paths are relative to the folder of the file that sets them. Command-line flags win over
project settings; ``--isolated`` ignores them. Validation is strict, as for config files: an unknown key or a wrong
type is ``file:line:col: key: message`` (``file: tool.lrpaudit.key: message`` for pyproject.toml), exit 2.

Example ``lrpaudit.yaml``::

    version: 1
    config: lrp.yaml
    inputs: data/validation_samples.npy
    layer_rtol: 1.0e-3
    json_report: reports/audit.json
    html: reports/audit.html
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import ConfigError
from .schema import ConfigFileError, describe, error_at, pydantic_message, unknown
from .yaml_loader import YamlError, dotted, load_yaml

SETTINGS_FILE = "lrpaudit.yaml"
PYPROJECT = "pyproject.toml"
MAX_BYTES = 1 << 20  # a settings file is a few lines; refuse anything near this size before parsing it
PATH_KEYS = ("config", "inputs", "json_report", "junit_xml", "markdown", "html", "heatmaps")


class ProjectSpec(BaseModel):
    """The keys a settings file may hold (all optional; ``version: 1`` required in lrpaudit.yaml)."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    version: int | None = None
    config: str | None = None
    preset: str | None = None
    inputs: str | None = None
    random: Annotated[int, Field(ge=1)] | None = None
    seed: Annotated[int, Field(ge=0)] | None = None
    input_shape: str | None = None
    batch_size: Annotated[int, Field(ge=1)] | None = None
    dtype: Literal["float64", "float32"] | None = None
    device: str | None = None
    target: str | Annotated[int, Field(ge=0)] | None = None
    gate: Literal["strict", "explained"] | None = None
    layer_rtol: Annotated[float, Field(gt=0)] | None = None
    end_to_end_rtol: Annotated[float, Field(gt=0)] | None = None
    json_report: str | None = None
    junit_xml: str | None = None
    markdown: str | None = None
    html: str | None = None
    heatmaps: str | None = None


@dataclass(frozen=True)
class ProjectSettings:
    """Validated settings with paths resolved against the settings file's folder; ``source`` names the file."""

    source: str
    values: dict[str, Any]

    def get(self, key: str, default=None):
        return self.values.get(key, default)


def find_settings_file(start: Path) -> Path | None:
    """The nearest ``lrpaudit.yaml`` or ``pyproject.toml`` with a ``[tool.lrpaudit]`` table, from ``start`` up."""
    folder = start.resolve()
    for candidate in (folder, *folder.parents):
        settings = candidate / SETTINGS_FILE
        if settings.is_file():
            return settings
        pyproject = candidate / PYPROJECT
        if pyproject.is_file() and _has_tool_table(pyproject):
            return pyproject
    return None


def _read(path: Path) -> bytes:
    if not path.is_file():
        raise ConfigError(f"{path}: not a regular file")
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise ConfigError(
            f"{path}: {size:,} bytes is too large for a settings file (limit {MAX_BYTES:,} bytes)"
        )
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None


def _has_tool_table(path: Path) -> bool:
    """Whether a pyproject.toml has a ``[tool.lrpaudit]`` table (a broken one is reported when it is loaded)."""
    try:
        document = _toml(path)
    except ConfigError:  # broken: reported if it is meant for lrpaudit, else not ours to judge
        try:
            return b"lrpaudit" in _read(path)
        except ConfigError:
            return False
    tool = document.get("tool", {})
    return isinstance(tool, dict) and "lrpaudit" in tool


def _toml(path: Path) -> dict:
    try:
        import tomllib
    except ImportError:  # pragma: no cover - Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    try:
        return tomllib.loads(_read(path).decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None


def load_settings(start: Path | None = None) -> ProjectSettings | None:
    """The project settings that apply in ``start`` (default: the current folder), or None if there are none."""
    path = find_settings_file(Path.cwd() if start is None else start)
    if path is None:
        return None
    return _from_yaml(path) if path.name == SETTINGS_FILE else _from_pyproject(path)


def _from_yaml(path: Path) -> ProjectSettings:
    file = str(path)
    try:
        data, positions = load_yaml(_read(path).decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{file}:1:1: <root>: not UTF-8 text (byte {exc.start})") from None
    except YamlError as exc:
        raise ConfigFileError(file, exc.line, exc.column, dotted(exc.path), exc.message) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise error_at(file, positions, (), f"expected a mapping of settings, got {describe(data)}")
    try:
        spec = ProjectSpec.model_validate(data)
    except ValidationError as exc:
        err = min(exc.errors(), key=lambda e: positions.value(tuple(e["loc"])))
        loc = tuple(err["loc"])
        message = unknown(loc[-1], list(ProjectSpec.model_fields)) if err["type"] == "extra_forbidden" else (
            pydantic_message(err))  # fmt: skip
        raise error_at(file, positions, loc, message, at_key=err["type"] == "extra_forbidden") from None
    if spec.version != 1:
        raise error_at(
            file,
            positions,
            ("version",) if "version" in data else (),
            "settings files start with 'version: 1'",
        )
    return _settings(file, path.parent, spec)


def _from_pyproject(path: Path) -> ProjectSettings:
    file = str(path)
    document = _toml(path)
    table = document.get("tool", {}).get("lrpaudit", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{file}: tool.lrpaudit: expected a table, got {describe(table)}")
    try:
        spec = ProjectSpec.model_validate(table)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(err["loc"])
        key = "tool.lrpaudit." + ".".join(map(str, loc))
        message = unknown(loc[-1], list(ProjectSpec.model_fields)) if err["type"] == "extra_forbidden" else (
            pydantic_message(err))  # fmt: skip
        raise ConfigError(f"{file}: {key}: {message}") from None
    return _settings(file, path.parent, spec)


def _settings(file: str, folder: Path, spec: ProjectSpec) -> ProjectSettings:
    values = spec.model_dump(exclude_none=True)
    values.pop("version", None)
    if "config" in values and "preset" in values:
        raise ConfigError(f"{file}: give either config or preset, not both")
    if "inputs" in values and "random" in values:
        raise ConfigError(f"{file}: give either inputs or random, not both")
    if "input_shape" in values:
        from ..inputs.shapes import ShapeTextError, parse_shape

        try:
            parse_shape(values["input_shape"])
        except ShapeTextError as exc:
            raise ConfigError(f"{file}: input_shape: {exc}") from None
    for key in PATH_KEYS:
        if key in values:
            path = Path(values[key]).expanduser()
            values[key] = path if path.is_absolute() else folder / path
    return ProjectSettings(file, values)
