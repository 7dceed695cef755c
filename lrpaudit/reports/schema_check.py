"""Validating a report against the shipped JSON Schema: with ``jsonschema`` when it is installed, else a small
validator of exactly the keywords ``report.schema.json`` uses."""

from __future__ import annotations

import json
import re
from importlib import resources

SCHEMA_FILE = "report.schema.json"


def load_schema() -> dict:
    """The report's JSON Schema, as shipped in the package."""
    return json.loads(resources.files("lrpaudit").joinpath(SCHEMA_FILE).read_text(encoding="utf-8"))


class ReportSchemaError(ValueError):
    """A document is not a valid lrpaudit report; the message names the offending location."""


# The JSON Schema keywords report.schema.json may use: the fallback validator below implements exactly these.
SUPPORTED_KEYWORDS = frozenset(
    {"$schema", "$id", "$defs", "$ref", "title", "description", "type", "required", "properties"}
    | {"additionalProperties", "items", "enum", "const", "pattern", "minimum"}
)


def validate_report(report, schema: dict | None = None) -> None:
    """Raise :class:`ReportSchemaError` unless ``report`` matches the shipped schema.

    Uses ``jsonschema`` when it is installed (a test dependency), else a small validator of the keywords in
    ``SUPPORTED_KEYWORDS``; both give the location of the first problem.
    """
    schema = schema or load_schema()
    try:
        import jsonschema
    except ImportError:
        check_subset(report, schema)
        return
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(report), key=lambda e: list(e.absolute_path))
    if errors:
        error = errors[0]
        raise ReportSchemaError(f"{_where(error.absolute_path)}: {error.message}")


def _where(path) -> str:
    text = "report"
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text


_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "integer": lambda v: (
        (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and v.is_integer())
    ),
}


def _same(a, b) -> bool:
    return type(a) is type(b) and a == b if isinstance(a, bool) or isinstance(b, bool) else a == b


def check_subset(instance, schema: dict, root: dict | None = None, path: tuple = ()) -> None:
    """A minimal JSON Schema (draft 2020-12) validator for ``SUPPORTED_KEYWORDS``; first error raised."""
    root = root if root is not None else schema
    where = _where(path)
    if "$ref" in schema:
        ref = schema["$ref"]
        if not ref.startswith("#/$defs/"):
            raise ReportSchemaError(f"unsupported $ref {ref!r}")
        check_subset(instance, root["$defs"][ref[len("#/$defs/") :]], root, path)
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_TYPES[t](instance) for t in types):
            raise ReportSchemaError(f"{where}: {instance!r:.80} is not of type {' or '.join(types)}")
    if "const" in schema and not _same(instance, schema["const"]):
        raise ReportSchemaError(f"{where}: {schema['const']!r} was expected")
    if "enum" in schema and not any(_same(instance, v) for v in schema["enum"]):
        raise ReportSchemaError(f"{where}: {instance!r:.80} is not one of {schema['enum']!r}")
    if "pattern" in schema and isinstance(instance, str) and not re.search(schema["pattern"], instance):
        raise ReportSchemaError(f"{where}: {instance!r} does not match {schema['pattern']!r}")
    if "minimum" in schema and _TYPES["number"](instance) and instance < schema["minimum"]:
        raise ReportSchemaError(f"{where}: {instance!r} is less than the minimum of {schema['minimum']}")
    if isinstance(instance, dict):
        for key in schema.get("required", ()):
            if key not in instance:
                raise ReportSchemaError(f"{where}: {key!r} is a required property")
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for key, value in instance.items():
            if key in properties:
                check_subset(value, properties[key], root, (*path, key))
            elif extra is False:
                raise ReportSchemaError(f"{where}: additional property {key!r} is not allowed")
            elif isinstance(extra, dict):
                check_subset(value, extra, root, (*path, key))
    if isinstance(instance, list) and "items" in schema:
        for index, item in enumerate(instance):
            check_subset(item, schema["items"], root, (*path, index))
