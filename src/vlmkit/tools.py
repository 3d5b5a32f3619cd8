"""Tool calling's values: what a tool is, what the model asked for, and how it may choose.

:class:`ToolDefinition` is a tool the model may call (a name, a description, and a JSON Schema for
its arguments), checked when it is built: a name OpenAI's API accepts and a schema that is valid
JSON Schema. :class:`ToolCall` is one call the model made: an id, the tool's name and its arguments
as the JSON text the model wrote (:meth:`ToolCall.parsed_arguments` reads them).
:class:`ToolChoice` is whether the model may, must, or must not call a tool, or which one it must.
:func:`tool_from_function` describes a Python function as a tool from its signature and docstring.

Pure values, like :mod:`vlmkit.chat` (whose messages carry the calls and the tools' results) and
:mod:`vlmkit.prediction` (whose settings carry the tools and whose results carry the calls): nothing
here calls a tool. Reading and writing OpenAI's form of these is :mod:`vlmkit.wire.openai_chat`'s.
"""

from __future__ import annotations

import functools
import inspect
import json
import re
import secrets
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from vlmkit._types import type_name
from vlmkit.errors import InvalidToolError

__all__ = ["ToolCall", "ToolChoice", "ToolDefinition", "call_id", "tool_error", "tool_from_function"]

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
EMPTY_PARAMETERS: Mapping[str, Any] = {"type": "object", "properties": {}}


def tool_error(message: str, location: str | None = None) -> InvalidToolError:
    """An :class:`InvalidToolError` naming where (``tools[0].function.parameters``), when known."""
    exc = InvalidToolError(message)
    if location:
        exc.add_location(location)
    return exc


@dataclass(frozen=True)
class ToolDefinition:
    """A tool the model may call: ``parameters`` is the JSON Schema of its arguments (an object)."""

    name: str
    parameters: Mapping[str, Any] = field(default_factory=lambda: dict(EMPTY_PARAMETERS))
    description: str | None = None
    strict: bool | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise tool_error(
                f"a tool's name must be 1 to 64 letters, digits, '_' or '-', not {self.name!r}", "function.name"
            )
        if self.description is not None and not isinstance(self.description, str):
            raise tool_error(
                f"a tool's description must be a string, not {type_name(self.description)}", "function.description"
            )
        check_schema(self.parameters, "function.parameters")


def check_schema(schema: Any, location: str) -> None:
    """Refuse a tool's ``parameters`` that is not an object's JSON Schema (checked against the metaschema)."""
    if not isinstance(schema, Mapping):
        raise tool_error(f"parameters must be a JSON Schema object, not {type_name(schema)}", location)
    kind = schema.get("type")
    if kind is not None and kind != "object":
        raise tool_error(
            f"parameters must describe an object (the arguments by name): 'type' is {kind!r}, not 'object'", location
        )
    try:
        text = json.dumps(schema, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise tool_error(f"parameters must be JSON: {exc}", location) from None
    problem = _schema_problem(text)
    if problem is not None:
        raise tool_error(f"parameters is not valid JSON Schema: {problem}", location)


@functools.lru_cache(maxsize=1024)
def _schema_problem(text: str) -> str | None:
    """What is wrong with a schema (its canonical JSON text), or None. Cached: an agent sends the same
    tools with every request, and checking against the metaschema takes milliseconds a tool."""
    import jsonschema  # type: ignore[import-untyped]

    schema = json.loads(text)
    validator = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "".join(f"[{p!r}]" if isinstance(p, int) else f".{p}" for p in exc.path)
        return f"at {where or 'the top'}: {exc.message}"
    return None


@dataclass(frozen=True)
class ToolCall:
    """One call the model made: ``arguments`` is the JSON text it wrote (an object, when it is valid).

    ``signature`` is an opaque token a provider attached to the call and wants back with it (Gemini's
    thought signature: Gemini 3 refuses a history whose calls lost theirs).
    """

    id: str
    name: str
    arguments: str = "{}"
    signature: str | None = None

    def parsed_arguments(self) -> dict[str, Any]:
        """The arguments as a dict; text that is not a JSON object is an :class:`InvalidToolError`."""
        return parse_arguments(self.arguments, self.name)


def parse_arguments(text: str, name: str, location: str | None = None) -> dict[str, Any]:
    try:
        value = json.loads(text) if text.strip() else {}
    except ValueError as exc:
        raise tool_error(
            f"the arguments of the call to {name!r} are not valid JSON ({exc}): {text[:200]!r}", location
        ) from None
    if not isinstance(value, dict):
        raise tool_error(
            f"the arguments of the call to {name!r} must be a JSON object, not {type_name(value)}", location
        )
    return value


def call_id() -> str:
    """A fresh tool call id, in OpenAI's shape (``call_`` and 24 hex digits)."""
    return f"call_{secrets.token_hex(12)}"


ToolMode = Literal["none", "auto", "required"]


@dataclass(frozen=True)
class ToolChoice:
    """``auto`` (the model chooses), ``none`` (no calls), ``required`` (at least one call), or ``name``
    set: that tool must be called."""

    mode: ToolMode = "auto"
    name: str | None = None

    @classmethod
    def forced(cls, name: str) -> ToolChoice:
        return cls("required", name)


# --- Python functions as tools --------------------------------------------------------------------

_JSON_TYPES: dict[Any, dict[str, Any]] = {
    str: {"type": "string"},
    int: {"type": "integer"},
    float: {"type": "number"},
    bool: {"type": "boolean"},
    dict: {"type": "object"},
    list: {"type": "array"},
}


def tool_from_function(fn: Callable[..., Any], *, name: str | None = None) -> ToolDefinition:
    """A tool describing ``fn``: its name, its docstring's first paragraph, and its parameters' types
    (str, int, float, bool, list[...], dict, Literal[...], Optional) as JSON Schema; a parameter
    without a default is required."""
    signature = inspect.signature(fn)
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # an annotation that does not resolve: describe the parameter without a type
        hints = {}
    properties: dict[str, Any] = {}
    required: list[str] = []
    for pname, param in signature.parameters.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        properties[pname] = _schema_of(hints.get(pname, Any))
        if param.default is param.empty:
            required.append(pname)
    doc = inspect.getdoc(fn) or ""
    description = doc.split("\n\n", 1)[0].strip() or None
    parameters: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        parameters["required"] = required
    return ToolDefinition(name or fn.__name__, parameters, description)


def _schema_of(tp: Any) -> dict[str, Any]:
    if tp in _JSON_TYPES:
        return dict(_JSON_TYPES[tp])
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return {"enum": list(args)}
    if origin in (list, tuple, typing.get_origin(typing.Sequence[int])) and args:
        return {"type": "array", "items": _schema_of(args[0])}
    if origin in _JSON_TYPES:
        return dict(_JSON_TYPES[origin])
    if args and type(None) in args:  # Optional[X] / X | None
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return {"anyOf": [_schema_of(rest[0]), {"type": "null"}]}
    return {}
