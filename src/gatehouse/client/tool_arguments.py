"""A tool's arguments from the command line (``--arg NAME=VALUE`` or ``--json-args``), checked against its input schema."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from gatehouse.client.errors import ClientError


class BadArguments(ClientError):
    """Tool arguments that do not fit the tool's input schema: a usage error."""

    exit_code = 2


def required_arguments(schema: dict | None) -> str:
    properties = (schema or {}).get("properties") or {}
    names = (schema or {}).get("required") or []
    return ", ".join(f"{name}: {_type_name(properties.get(name))}" for name in names)


def _type_name(prop: Any) -> str:
    kind = prop.get("type") if isinstance(prop, dict) else None
    if isinstance(kind, list):
        return "|".join(kind)
    return kind or "any"


@dataclass(frozen=True)
class ArgumentOptions:
    """What ``--arg`` (values still text) or ``--json-args`` said, before the tool's input schema is known."""

    texts: dict[str, str]
    given: dict[str, Any] | None = None

    @classmethod
    def parse(cls, args: list[str], json_args: str | None) -> ArgumentOptions:
        """Bad input is a usage error (exit 2) before anything is sent."""
        if args and json_args is not None:
            raise BadArguments("give --arg NAME=VALUE options or --json-args, not both")
        if json_args is not None:
            try:
                given = json.loads(json_args)
            except ValueError as exc:
                raise BadArguments(f"--json-args is not valid JSON: {exc}") from None
            if not isinstance(given, dict):
                raise BadArguments("--json-args must be a JSON object, e.g. '{\"title\": \"hello\"}'")
            return cls({}, given)
        texts: dict[str, str] = {}
        for item in args:
            name, sep, value = item.partition("=")
            if not sep or not name.strip():
                raise BadArguments(f"--arg {item!r} is not NAME=VALUE")
            texts[name.strip()] = value
        return cls(texts)

    def for_tool(self, schema: dict | None) -> dict[str, Any]:
        """The arguments to send: ``--arg`` values read as JSON unless the schema wants text, checked against it."""
        if self.given is not None:
            arguments = self.given
        else:
            properties = (schema or {}).get("properties") or {}
            arguments = {name: _arg_value(text, properties.get(name)) for name, text in self.texts.items()}
        if schema:
            check_arguments(arguments, schema)
        return arguments


def _arg_value(text: str, prop: Any) -> Any:
    if isinstance(prop, dict) and prop.get("type") == "string":
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


def check_arguments(arguments: dict[str, Any], schema: dict) -> None:
    """Raise ``BadArguments`` naming the first argument that does not fit (JSON Schema 2020-12, the tool's inputSchema)."""
    from jsonschema import exceptions as schema_errors
    from jsonschema.validators import validator_for

    try:
        validator = validator_for(schema)(schema)
        error = schema_errors.best_match(validator.iter_errors(arguments))
    except schema_errors.SchemaError:
        return
    if error is None:
        return
    where = ".".join(str(p) for p in error.absolute_path)
    raise BadArguments(f"argument {where}: {error.message}" if where else f"arguments: {error.message}")
