"""Batch manifests: the strictly validated YAML that lists models, configs and runs for ``lrpaudit batch``.

Format (``version: 1`` required; every path is relative to the manifest's folder)::

    version: 1
    models:                             # at least one
      - path: digits_cnn.onnx           # ONNX or TorchScript file
        inputs: digits_samples.npy      # .npy / .npz / folder of them; or random: N (seed: S, default 0)
        input_shape: [1, 1, 8, 8]       # optional: as --input-shape ("1,1,8,8" or "x=1,1,8,8;y=...")
        batch_size: 16                  # optional, default 16
        shards: 4                       # optional: audit each run in 4 sample shards, merged (default 1)
        name: cnn                       # optional id for runs: (default: the path as written)
        trust_code: false               # optional: load a TorchScript archive whose code fails the check
    configs:                            # at least one: a preset, or a config file
      - preset: conservative            # id: the preset's name
      - path: lrp.yaml                  # id: the path as written (or name:)
        name: mine
    runs:                               # optional: explicit {model, config} pairs by id;
      - {model: cnn, config: mine}      # without it, every model x every config (model by model)

The inputs belong to a model (shapes differ between models); to audit one model on two input sets, list it twice
with different names. The whole manifest is checked before anything runs: unknown keys (with a did-you-mean),
wrong types, missing model, input or config files, unknown presets, unknown or duplicate ids, and every config
file itself, each as ``file:line:col: dotted.key: message`` (exit 2). :mod:`lrpaudit.runner` runs it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import ConfigError
from ..files import read_limited, special_kind
from ..inputs.shapes import ShapeTextError, parse_shape
from .presets import preset_path
from .schema import ConfigFileError, describe, error_at, pydantic_message, unknown
from .settings import load_config
from .yaml_loader import MAX_YAML_BYTES, KeyPath, NotOurs, Positions, YamlError, dotted, load_yaml

MANIFEST_VERSION = 1


# ------------------------------------------------------------------------------------------ the schema


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class ModelSpec(_Strict):
    path: str
    name: str | None = None
    inputs: str | None = None
    random: Annotated[int, Field(ge=1)] | None = None
    seed: Annotated[int, Field(ge=0)] | None = None
    input_shape: Any = None  # a string or a list of integers, checked by hand
    batch_size: Annotated[int, Field(ge=1)] | None = None
    trust_code: bool | None = None
    shards: Annotated[int, Field(ge=1)] | None = None


class ConfigSpec(_Strict):
    preset: str | None = None
    path: str | None = None
    name: str | None = None


class RunSpec(_Strict):
    model: str
    config: str


class ManifestSpec(_Strict):
    version: int
    models: Annotated[list[ModelSpec], Field(min_length=1)]
    configs: Annotated[list[ConfigSpec], Field(min_length=1)]
    runs: Annotated[list[RunSpec], Field(min_length=1)] | None = None


_FIELDS = {
    (): list(ManifestSpec.model_fields),
    ("models",): list(ModelSpec.model_fields),
    ("configs",): list(ConfigSpec.model_fields),
    ("runs",): list(RunSpec.model_fields),
}


def _message(err: dict) -> str:
    loc = tuple(err["loc"])
    if err["type"] == "missing":
        if loc == ("version",):
            return f"missing required key (a manifest starts with 'version: {MANIFEST_VERSION}')"
        return "missing required key"
    if err["type"] == "extra_forbidden":
        section = tuple(part for part in loc[:-1] if isinstance(part, str))
        return unknown(loc[-1], _FIELDS.get(section, []))
    return pydantic_message(err)


# ----------------------------------------------------------------------------------------- the manifest


@dataclass
class ModelEntry:
    id: str
    path: Path
    inputs: Path | None
    random: int | None
    seed: int
    input_shape: str | None
    batch_size: int
    trust_code: bool = False
    shards: int = 1  # sample shards per run (tasks of one run; merged into one result)


@dataclass
class ConfigEntry:
    id: str
    preset: str | None
    path: Path | None


@dataclass
class Run:
    index: int  # 0-based position in the manifest's run order
    model: ModelEntry
    config: ConfigEntry

    @property
    def label(self) -> str:
        return f"{self.model.id} x {self.config.id}"


@dataclass
class Manifest:
    path: str
    sha256: str
    models: list[ModelEntry]
    configs: list[ConfigEntry]
    runs: list[Run]
    explicit: bool


def _shape_text(value: Any, file: str, positions: Positions, path: KeyPath) -> str | None:
    """``input_shape``: a list of integers or the ``--input-shape`` text; returned as that text."""
    if value is None:
        return None
    if isinstance(value, list):
        if not value or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value):
            raise error_at(file, positions, path, "expected a list of positive integers, e.g. [1, 3, 32, 32]")
        return ",".join(str(v) for v in value)
    if not isinstance(value, str):
        raise error_at(
            file,
            positions,
            path,
            f"expected a shape such as [1, 3, 32, 32] or '1,3,32,32', got {describe(value)}",
        )
    try:
        parse_shape(value)
    except ShapeTextError as exc:
        raise error_at(file, positions, path, str(exc)) from None
    return value


def _resolve(base: Path, text: str) -> Path:
    path = Path(text).expanduser()
    return path if path.is_absolute() else base / path


def _check_file(
    resolved: Path, file: str, positions: Positions, path: KeyPath, what: str, folder_ok: bool
) -> None:
    if not resolved.exists():
        raise error_at(file, positions, path, f"no such {what}: {resolved}")
    if resolved.is_dir() and not folder_ok:
        raise error_at(file, positions, path, f"{resolved} is a folder, not a {what}")
    kind = special_kind(resolved)
    if kind is not None:
        raise error_at(file, positions, path, f"{resolved} is {kind}, not a {what}; refused")


def _unique(ids: list[str], section: str, file: str, positions: Positions) -> None:
    seen: dict[str, int] = {}
    for i, item in enumerate(ids):
        if item in seen:
            where = (section, i, "name") if (section, i, "name") in positions.values else (section, i)
            raise error_at(
                file,
                positions,
                where,
                f"duplicate {section[:-1]} id {item!r} (also {section}[{seen[item]}]; give one a distinct name:)",
            )
        seen[item] = i


def load_manifest(manifest_path: str | Path) -> Manifest:
    """Read and check a manifest; raise a ConfigError (``file:line:col: key: message``) on the first problem."""
    file = str(manifest_path)
    try:
        raw = read_limited(manifest_path, MAX_YAML_BYTES, ConfigError, "manifest file", prefix=file)
    except FileNotFoundError:
        raise ConfigError(f"{file}: no such manifest file") from None
    except IsADirectoryError:
        raise ConfigError(f"{file}: is a folder, not a manifest file") from None
    try:
        data, positions = load_yaml(raw.decode("utf-8"), require="version")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{file}:1:1: <root>: not UTF-8 text (byte {exc.start})") from None
    except NotOurs as exc:  # not a manifest: say what it is, quote nothing of it
        if exc.shape == "empty":
            message = f"empty manifest (start it with 'version: {MANIFEST_VERSION}')"
        elif exc.shape == "a mapping":
            message = f"missing required key (a manifest starts with 'version: {MANIFEST_VERSION}')"
        else:
            message = f"expected a mapping (version, models, configs, runs), got {exc.shape}"
        raise ConfigFileError(file, 1, 1, dotted(exc.path), message) from None
    except YamlError as exc:
        raise ConfigFileError(file, exc.line, exc.column, dotted(exc.path), exc.message) from None
    try:
        spec = ManifestSpec.model_validate(data)
    except ValidationError as exc:
        found = []
        for err in exc.errors():
            at_key = err["type"] == "extra_forbidden"
            found.append(error_at(file, positions, tuple(err["loc"]), _message(err), at_key=at_key))
        found.sort(key=lambda e: (e.line, e.column))
        found[0].errors = found
        raise found[0] from None
    if spec.version != MANIFEST_VERSION:
        raise error_at(
            file,
            positions,
            ("version",),
            f"unsupported version {spec.version} (this lrpaudit reads version {MANIFEST_VERSION})",
        )
    base = Path(file).parent

    models = []
    for i, item in enumerate(spec.models):
        here = ("models", i)
        path = _resolve(base, item.path)
        _check_file(path, file, positions, (*here, "path"), "model file", folder_ok=False)
        if (item.inputs is None) == (item.random is None):
            key = (*here, "random") if item.random is not None else here
            raise error_at(file, positions, key, "give either inputs: PATH or random: N (one of them)")
        if item.seed is not None and item.random is None:
            raise error_at(file, positions, (*here, "seed"), "seed applies to random: N inputs only")
        inputs = None
        if item.inputs is not None:
            inputs = _resolve(base, item.inputs)
            _check_file(inputs, file, positions, (*here, "inputs"), "inputs file or folder", folder_ok=True)
        models.append(
            ModelEntry(
                id=item.name if item.name is not None else item.path,
                path=path,
                inputs=inputs,
                random=item.random,
                seed=item.seed or 0,
                input_shape=_shape_text(item.input_shape, file, positions, (*here, "input_shape")),
                batch_size=item.batch_size or 16,
                trust_code=bool(item.trust_code),
                shards=item.shards or 1,
            )
        )
    _unique([m.id for m in models], "models", file, positions)

    configs = []
    for i, item in enumerate(spec.configs):
        here = ("configs", i)
        if (item.preset is None) == (item.path is None):
            raise error_at(file, positions, here, "give either preset: NAME or path: FILE (one of them)")
        if item.preset is not None:
            try:
                preset_path(item.preset)
            except ConfigError as exc:
                raise error_at(file, positions, (*here, "preset"), str(exc)) from None
            load_config(preset=item.preset)
            configs.append(ConfigEntry(item.name or item.preset, item.preset, None))
        else:
            path = _resolve(base, item.path)
            _check_file(path, file, positions, (*here, "path"), "config file", folder_ok=False)
            load_config(path)  # a broken config file fails here, with its own file:line:col
            configs.append(ConfigEntry(item.name or item.path, None, path))
    _unique([c.id for c in configs], "configs", file, positions)

    if spec.runs is None:
        pairs = [(m, c) for m in models for c in configs]
    else:
        by_model = {m.id: m for m in models}
        by_config = {c.id: c for c in configs}
        pairs, seen = [], {}
        for i, item in enumerate(spec.runs):
            for key, table in (("model", by_model), ("config", by_config)):
                name = getattr(item, key)
                if name not in table:
                    message = unknown(name, list(table), f"{key} id {name!r}")
                    raise error_at(file, positions, ("runs", i, key), message)
            pair = (item.model, item.config)
            if pair in seen:
                raise error_at(file, positions, ("runs", i), f"duplicate run (same as runs[{seen[pair]}])")
            seen[pair] = i
            pairs.append((by_model[item.model], by_config[item.config]))
    runs = [Run(k, model, config) for k, (model, config) in enumerate(pairs)]
    return Manifest(file, hashlib.sha256(raw).hexdigest(), models, configs, runs, spec.runs is not None)
