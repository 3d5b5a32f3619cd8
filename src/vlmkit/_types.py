"""Small names every layer shares: an image's detail level, and how an error message names a value's type.

Nothing here imports anything of vlmkit's, so any module may import it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

Detail = Literal["low", "high", "auto"]
"""How closely a model looks at an image (OpenAI's ``detail``): few image tokens, full resolution, or its choice."""

DETAIL_NAMES: tuple[Detail, ...] = ("low", "high", "auto")


def type_name(value: object) -> str:
    """A value's type as an error message says it, in JSON's words: ``a string``, ``a number``, ``null``.

    Requests arrive as JSON or as the Python values JSON reads into, so one set of words serves both.
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "an array"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__
