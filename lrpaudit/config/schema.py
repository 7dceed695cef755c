"""The config file schema (pydantic v2, strict) and the translation of its errors to ``file:line:col: key: msg``.

pydantic checks the *shape* of a file: known keys only (``extra="forbid"``), exact types (``strict=True``: no
``"1e-3"`` or ``true`` where a number belongs), finite numbers (``allow_inf_nan=False``), enums, ranges. What
depends on other values (a rule's parameters depend on the rule's name; op names; ``version``) is checked by
:mod:`lrpaudit.config.file` with the same error format.

pydantic was chosen over a hand-written validator because it reports exact types strictly (``true`` is not a
number, ``"1e-3"`` is not a float), knows every allowed key for the "did you mean" hint, and can emit a JSON
Schema; over jsonschema because its error locations point at the offending key itself. The first error in file
order is raised; all of them are on the exception's ``errors`` attribute when pydantic found several.
"""

from __future__ import annotations

import types
import typing
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainValidator, ValidationError
from pydantic_core import PydanticCustomError

from ..errors import ConfigError
from ..rules.spec import BIAS_MODES
from .hints import suggest
from .yaml_loader import KeyPath, Positions, dotted

SUPPORTED_VERSION = 1
Bias = Literal[BIAS_MODES]  # type: ignore[valid-type]
PositiveFloat = Annotated[float, Field(gt=0)]


class ConfigFileError(ConfigError):
    """A ConfigError at a place in a config file; ``str()`` is ``file:line:col: dotted.key: message``."""

    def __init__(self, file: str, line: int, column: int, key: str, message: str) -> None:
        super().__init__(f"{file}:{line}:{column}: {key}: {message}")
        self.file, self.line, self.column, self.key, self.message = file, line, column, key, message


def error_at(
    file: str, positions: Positions, path: KeyPath, message: str, at_key: bool = False
) -> ConfigFileError:
    """An error about the value (or, with ``at_key``, the key) at ``path``."""
    line, column = positions.key(path) if at_key else positions.value(path)
    return ConfigFileError(file, line, column, dotted(path), message)


def unknown(word: str, choices, what: str = "key") -> str:
    """``unknown key (did you mean 'alpha'?)`` or ``unknown key (expected one of: a, b)``."""
    close = suggest(word, choices)
    if close is not None:
        return f"unknown {what} (did you mean {close!r}?)"
    return f"unknown {what} (expected one of: {', '.join(map(str, choices)) or 'none'})"


def describe(value: Any) -> str:
    """A YAML-flavoured description of a value for type errors."""
    if value is None:
        return "null (an empty value)"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, str):
        return f"string {value[:60] + '...' if len(value) > 60 else value!r}"
    if isinstance(value, (int, float)):
        return f"number {value}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__  # pragma: no cover


# ------------------------------------------------------------------------------------------------ the models


def _one_or_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


def _target(value: Any) -> Any:
    if (
        value is None
        or value == "predicted"
        or (isinstance(value, int) and not isinstance(value, bool) and value >= 0)
    ):
        return value
    raise PydanticCustomError(
        "lrpaudit",
        "expected 'predicted' or a class index (an integer >= 0), got {got}",
        {"got": describe(value)},
    )


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class MatchSpec(_Strict):
    op: Annotated[list[str], BeforeValidator(_one_or_list), Field(min_length=1)] | None = None
    name: str | None = None
    node_name: str | None = None
    index: Annotated[int, Field(ge=0)] | None = None
    position: Literal["first", "last"] | None = None


class RuleEntrySpec(BaseModel):
    """A ``rules:`` item; the rule's own parameters are extra keys, checked against the rule registry."""

    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False)
    match: MatchSpec | None = None
    rule: str
    bias: Bias | None = None  # type: ignore[valid-type]


class OverrideSpec(_Strict):
    match: MatchSpec
    layer_rtol: PositiveFloat


class ToleranceSpec(_Strict):
    gate: Literal["strict", "explained"] | None = None
    layer_rtol: PositiveFloat | None = None
    end_to_end_rtol: PositiveFloat | None = None
    overrides: list[OverrideSpec] | None = None


class FileSpec(_Strict):
    version: int
    extends: str | None = None
    explain: Literal["logits", "output"] | None = None
    target: Annotated[Any, PlainValidator(_target)] = None
    init: Literal["logit", "one"] | None = None
    dtype: Literal["float64", "float32"] | None = None
    bias: Bias | None = None  # type: ignore[valid-type]
    rules: list[RuleEntrySpec] | None = None
    tolerance: ToleranceSpec | None = None


# The settings a file may set at the top level (besides version, extends, rules, tolerance).
TOP_SETTINGS = ("explain", "target", "init", "dtype", "bias")


# ------------------------------------------------------------------------------------- error translation


def _inner_model(annotation: Any) -> type[BaseModel] | None:
    """The model class inside ``X | None``, ``list[X]``, ``Annotated[X, ...]``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType, list, Annotated):
        for arg in typing.get_args(annotation):
            found = _inner_model(arg)
            if found is not None:
                return found
    return None


def _model_at(loc: tuple) -> type[BaseModel] | None:
    """The model that validated the mapping at ``loc`` (list indices skipped)."""
    model: type[BaseModel] | None = FileSpec
    for part in loc:
        if isinstance(part, int) or model is None:
            continue
        field = model.model_fields.get(part)
        model = _inner_model(field.annotation) if field is not None else None
    return model


def pydantic_message(err: dict) -> str:
    kind, value, ctx = err["type"], err.get("input"), err.get("ctx") or {}
    if kind == "missing":
        if tuple(err["loc"]) == ("version",):
            return f"missing required key (a config file starts with 'version: {SUPPORTED_VERSION}')"
        return "missing required key"
    if kind == "extra_forbidden":
        model = _model_at(tuple(err["loc"][:-1]))
        return unknown(err["loc"][-1], list(model.model_fields) if model else [])
    if kind == "literal_error":
        expected = ctx.get("expected", "")
        choices = [part.strip().strip("'") for part in expected.replace(" or ", ", ").split(",")]
        close = suggest(value, choices) if isinstance(value, str) else None
        hint = f" (did you mean {close!r}?)" if close else ""
        return f"expected {expected}, got {describe(value)}{hint}"
    if kind in ("float_type", "float_parsing"):
        return f"expected a number, got {describe(value)}"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"expected an integer, got {describe(value)}"
    if kind == "string_type":
        return f"expected a string, got {describe(value)}"
    if kind == "list_type":
        return f"expected a list, got {describe(value)}"
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        return f"expected a mapping, got {describe(value)}"
    if kind == "finite_number":
        return f"must be a finite number, got {value}"
    if kind == "greater_than":
        return f"must be > {ctx.get('gt'):g}, got {value}"
    if kind == "greater_than_equal":
        return f"must be >= {ctx.get('ge'):g}, got {value}"
    if kind == "too_short":
        return "must not be empty"
    text = err["msg"]
    return text[0].lower() + text[1:] if text else kind


def validate_file(data: Any, positions: Positions, file: str) -> FileSpec:
    """Validate a document's shape; raise the first error (in file order) as a :class:`ConfigFileError`.

    Every error found is kept on the exception as ``errors`` (a list of ConfigFileError).
    """
    if data is None:
        raise error_at(file, positions, (), f"empty config (start it with 'version: {SUPPORTED_VERSION}')")
    if not isinstance(data, dict):
        raise error_at(file, positions, (), f"expected a mapping of settings, got {describe(data)}")
    try:
        return FileSpec.model_validate(data)
    except ValidationError as exc:
        found = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            at_key = err["type"] == "extra_forbidden"
            found.append(error_at(file, positions, loc, pydantic_message(err), at_key=at_key))
        found.sort(key=lambda e: (e.line, e.column))
        first = found[0]
        first.errors = found
        raise first from None
