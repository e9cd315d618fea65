"""OpenAI's `response_format` (a request's dict) -> the pipeline's ResponseFormat, checked.

Every API's request reaches the pipeline through this one reading: Chat Completions sends
`response_format` as it is; another API translates its own field into this shape first.
A schema is checked here as a JSON schema (the meta-schema its `$schema` names, else draft 2020-12);
whether the engine can compile it is the backend's check (Backend.check_sampling), before any draft.
"""

from __future__ import annotations

import re
from typing import Any

from jsonschema import exceptions, validators

from serving.backends.base import ResponseFormat
from serving.errors import InvalidRequest

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_KINDS = "'text', 'json_object' or 'json_schema'"


def _refuse(message: str, param: str) -> InvalidRequest:
    return InvalidRequest(message, param=param)


def check_json_schema(schema: Any, param: str) -> None:
    """Raise InvalidRequest (naming `param` and the problem) unless `schema` is a JSON schema."""
    if not isinstance(schema, dict):
        raise _refuse(f"{param} must be a JSON schema object, got {type(schema).__name__}", param)
    try:
        validators.validator_for(schema).check_schema(schema)
    except exceptions.SchemaError as exc:
        where = "/".join(str(part) for part in exc.path)
        raise _refuse(f"{param} is not a valid JSON schema: {exc.message}"
                      + (f" (at {where})" if where else ""), param) from exc


def response_format(value: dict[str, Any] | None) -> ResponseFormat | None:
    """The JSON shape `value` asks for; None for free text (absent, null or type "text")."""
    if value is None:
        return None
    kind = value.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return ResponseFormat("json_object")
    if kind != "json_schema":
        raise _refuse(f"response_format type {kind!r} is not supported; use {_KINDS}", "response_format.type")
    spec = value.get("json_schema")
    if not isinstance(spec, dict):
        raise _refuse("response_format type 'json_schema' needs a json_schema object: "
                      '{"name": ..., "schema": {...}, "strict": true}', "response_format.json_schema")
    name = spec.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise _refuse("response_format.json_schema.name must be 1 to 64 letters, digits, '_' or '-'",
                      "response_format.json_schema.name")
    schema = spec.get("schema")
    if schema is None:
        raise _refuse("response_format.json_schema.schema is missing: send the JSON schema the answer must "
                      "follow, or use type 'json_object'", "response_format.json_schema.schema")
    check_json_schema(schema, "response_format.json_schema.schema")
    strict = spec.get("strict")
    if strict is not None and not isinstance(strict, bool):
        raise _refuse("response_format.json_schema.strict must be true, false or null",
                      "response_format.json_schema.strict")
    description = spec.get("description")
    return ResponseFormat("json_schema", schema, name, strict,
                          description if isinstance(description, str) else None)
