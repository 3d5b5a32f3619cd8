"""Large base64 ``data:`` URLs taken out of a JSON body before it is parsed.

A 1 MB image arrives as 1.4 MB of base64 inside the JSON body. Parsing it makes a 1.4 MB string
(scanned, copied, its pages faulted in) only for the image layer to decode it back to bytes. Here
each large ``"data:...;base64,..."`` string is found in the raw bytes, decoded straight from them,
and replaced by a short placeholder, so the JSON parser only sees the small rest of the body.

The rewrite is exact: a string is lifted only when it is unescaped, has no backslash or control
character in it and its payload is strict base64, so the placeholder plays the same part in the
JSON as the text it replaces. After parsing, :func:`reinstate` puts the original text back
wherever a placeholder is not an image part's URL (a text message that happens to be a data URL).
"""

from __future__ import annotations

import binascii
import secrets
from dataclasses import dataclass, field
from typing import Any

import pybase64

MIN_LIFT = 64 * 1024
"""Strings shorter than this are left to the JSON parser (lifting them would not pay)."""
_MAX_HEADER = 256
_START = b'"data:'
_IMAGE_PATHS = frozenset(
    {
        ("messages", "*", "content", "*", "image_url", "url"),
        ("messages", "*", "content", "*", "image_url"),  # the Responses API's input_image form
        ("input", "*", "content", "*", "image_url"),  # ... in a Responses request
    }
)


@dataclass
class _Span:
    start: int
    end: int
    data: bytes


@dataclass
class Lifted:
    """A body with its large data URLs replaced by placeholders, and what each placeholder stands for."""

    body: bytes
    source: bytes
    spans: dict[str, _Span] = field(default_factory=dict)

    def image(self, text: str) -> bytes | None:
        """The decoded bytes behind a placeholder (None for any other string)."""
        span = self.spans.get(text)
        return span.data if span is not None else None

    def text(self, placeholder: str) -> str:
        span = self.spans[placeholder]
        return self.source[span.start : span.end].decode("ascii")


def lift(body: bytes) -> Lifted:
    """``body`` with every large, plain base64 data URL string replaced by a placeholder."""
    pieces: list[bytes | memoryview] = []
    spans: dict[str, _Span] = {}
    view = memoryview(body)
    token = secrets.token_hex(8)
    done = 0
    start = body.find(_START)
    while start >= 0:
        end = body.find(b'"', start + 1)
        if end < 0:
            break
        data = _decode(body, view, start + 1, end) if end - start > MIN_LIFT and not _escaped(body, start) else None
        if data is not None:
            placeholder = f"vlmkit-lifted-{token}-{len(spans)}"
            spans[placeholder] = _Span(start + 1, end, data)
            pieces += [view[done : start + 1], placeholder.encode("ascii")]
            done = end
        start = body.find(_START, end + 1 if data is not None else start + 1)
    if not spans:
        return Lifted(body, body)
    pieces.append(view[done:])
    return Lifted(b"".join(pieces), body, spans)


def reinstate(value: Any, lifted: Lifted) -> None:
    """Put the original text back for every placeholder in ``value`` that is not an image part's URL."""
    if lifted.spans:
        _walk(value, lifted, ())


def _walk(value: Any, lifted: Lifted, path: tuple[str, ...]) -> None:
    if isinstance(value, dict):
        if any(key in lifted.spans for key in value):  # a key that was a long data URL: rare, but exact
            renamed = {lifted.text(k) if k in lifted.spans else k: v for k, v in value.items()}
            value.clear()
            value.update(renamed)
        items: Any = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return
    for key, item in list(items):
        here = (*path, key if isinstance(key, str) else "*")
        if isinstance(item, str):
            if item in lifted.spans and here not in _IMAGE_PATHS:
                value[key] = lifted.text(item)
        else:
            _walk(item, lifted, here)


def _escaped(body: bytes, quote: int) -> bool:
    """Whether the quote at ``quote`` is escaped (an odd number of backslashes before it)."""
    n = 0
    while quote - n - 1 >= 0 and body[quote - n - 1] == 0x5C:
        n += 1
    return n % 2 == 1


def _decode(body: bytes, view: memoryview, start: int, end: int) -> bytes | None:
    """The image bytes of the data URL ``body[start:end]``, or None to leave it to the JSON parser."""
    comma = body.find(b",", start, min(end, start + _MAX_HEADER))
    if comma < 0 or not body.endswith(b";base64", start, comma):
        return None
    header = body[start:comma]
    if b"\\" in header or not header.isascii() or any(c < 0x20 for c in header):
        return None
    try:
        return pybase64.b64decode(view[comma + 1 : end], validate=True)  # rejects backslashes and controls
    except (binascii.Error, ValueError):
        return None
