"""Check a JSON body against an official SDK's request TypedDicts, strictly.

pydantic's TypedDict validation ignores unknown keys and checks ``Iterable`` fields lazily, so it
would pass a body with a misspelt field; this walker fails on any key the SDK does not declare, any
missing required key, any literal that is not allowed, and checks every element of every list.
"""

from __future__ import annotations

import collections.abc
import types
import typing
from typing import Any, Literal, Union, get_args, get_origin

from typing_extensions import is_typeddict


def check(value: Any, tp: Any, path: str = "body") -> None:
    problem = _problem(value, tp, path)
    assert problem is None, problem


def _problem(value: Any, tp: Any, path: str) -> str | None:
    origin = get_origin(tp)
    if tp in (Any, object):
        return None
    if origin is typing.Annotated:
        return _problem(value, get_args(tp)[0], path)
    if tp is type(None):
        return None if value is None else f"{path}: expected null, got {value!r}"
    if origin in (Union, types.UnionType):
        problems = [_problem(value, arm, path) for arm in get_args(tp)]
        if any(p is None for p in problems):
            return None
        return f"{path}: matches no variant of {tp}: " + " | ".join(p for p in problems if p)[:2000]
    if origin is Literal:
        return None if value in get_args(tp) else f"{path}: {value!r} is not one of {get_args(tp)}"
    if is_typeddict(tp):
        if not isinstance(value, dict):
            return f"{path}: expected an object ({tp.__name__}), got {type(value).__name__}"
        hints = typing.get_type_hints(tp)
        unknown = set(value) - set(hints)
        if unknown:
            return f"{path}: {tp.__name__} has no field(s) {sorted(unknown)}"
        missing = set(tp.__required_keys__) - set(value)
        if missing:
            return f"{path}: {tp.__name__} misses required {sorted(missing)}"
        for key, item in value.items():
            problem = _problem(item, hints[key], f"{path}.{key}")
            if problem:
                return problem
        return None
    if origin in (list, collections.abc.Iterable, collections.abc.Sequence, typing.List):  # noqa: UP006
        if not isinstance(value, list):
            return f"{path}: expected a list, got {type(value).__name__}"
        (item_tp,) = get_args(tp) or (Any,)
        for i, item in enumerate(value):
            problem = _problem(item, item_tp, f"{path}[{i}]")
            if problem:
                return problem
        return None
    if origin in (dict, collections.abc.Mapping, typing.Dict):  # noqa: UP006
        return None if isinstance(value, dict) else f"{path}: expected an object"
    if tp is str:
        return None if isinstance(value, str) else f"{path}: expected a string, got {value!r}"
    if tp is bool:
        return None if isinstance(value, bool) else f"{path}: expected a boolean, got {value!r}"
    if tp is int:
        return None if isinstance(value, int) and not isinstance(value, bool) else f"{path}: expected an int"
    if tp is float:
        return None if isinstance(value, (int, float)) and not isinstance(value, bool) else f"{path}: expected a number"
    if isinstance(tp, type):
        return None if isinstance(value, tp) else f"{path}: expected {tp.__name__}, got {type(value).__name__}"
    return None  # a type this walker does not know: accept
