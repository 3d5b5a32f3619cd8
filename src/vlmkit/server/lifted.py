"""Large base64 images taken out of a JSON body before it is parsed.

A 1 MB image arrives as 1.4 MB of base64 inside the JSON body. Parsing it makes a 1.4 MB string
(scanned, copied, its pages faulted in) only for the image layer to decode it back to bytes. Here
each large ``"data:...;base64,..."`` string (OpenAI's image URLs), and each large base64 value of a
``"data"`` key (Anthropic's base64 image sources), is found in the raw bytes, decoded straight from
them, and replaced by a short placeholder, so the JSON parser only sees the small rest of the body.
A data URL whose payload is a placeholder (as Anthropic's reader writes a source) stands for the
same bytes.

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
_START = b'"data'
"""What both kinds of lifted strings start with: a data URL (``"data:``) or a ``"data"`` key."""
_IMAGE_PATHS = frozenset(
    {
        ("messages", "*", "content", "*", "image_url", "url"),
        ("messages", "*", "content", "*", "image_url"),  # the Responses API's input_image form
        ("input", "*", "content", "*", "image_url"),  # ... in a Responses request
        ("messages", "*", "content", "*", "source", "data"),  # Anthropic's base64 image source
        ("messages", "*", "content", "*", "video_url", "url"),
        ("messages", "*", "content", "*", "video_url"),
        ("messages", "*", "content", "*", "file", "file_data"),  # a PDF
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
        """The decoded bytes behind a placeholder, or a data URL whose payload is one (None for any other string)."""
        span = self.spans.get(text)
        if span is None and text.startswith("data:"):
            span = self.spans.get(text.partition(",")[2])
        return span.data if span is not None else None

    def text(self, placeholder: str) -> str:
        span = self.spans[placeholder]
        return self.source[span.start : span.end].decode("ascii")


def lift(body: bytes) -> Lifted:
    """``body`` with every large, plain base64 image string replaced by a placeholder."""
    view = memoryview(body)
    found = _spans(body, view)
    if not found:
        return Lifted(body, body)
    pieces: list[bytes | memoryview] = []
    spans: dict[str, _Span] = {}
    token = secrets.token_hex(8)
    done = 0
    for span in found:
        placeholder = f"vlmkit-lifted-{token}-{len(spans)}"
        spans[placeholder] = span
        pieces += [view[done : span.start], placeholder.encode("ascii")]
        done = span.end
    pieces.append(view[done:])
    return Lifted(b"".join(pieces), body, spans)


def _spans(body: bytes, view: memoryview) -> list[_Span]:
    """The strings to lift, in order: large ``"data:...;base64,..."`` strings, and large strict-base64
    values of a ``"data"`` key. One pass: the search goes on after a lifted string, never through it."""
    out = []
    at = body.find(_START)
    while at >= 0:
        span = None
        if not _escaped(body, at):
            after = body[at + len(_START) : at + len(_START) + 1]
            if after == b":":  # a data URL: the string itself
                end = body.find(b'"', at + 1)
                if end - at > MIN_LIFT:
                    data = _decode(body, view, at + 1, end)
                    span = _Span(at + 1, end, data) if data is not None else None
            elif after == b'"':  # a "data" key: its value
                span = _data_value(body, view, _skip_space(body, at + len(_START) + 1))
        if span is not None:
            out.append(span)
        at = body.find(_START, span.end + 1 if span is not None else at + 1)
    return out


def _data_value(body: bytes, view: memoryview, colon: int) -> _Span | None:
    if body[colon : colon + 1] != b":":
        return None
    start = _skip_space(body, colon + 1)
    if body[start : start + 1] != b'"':
        return None
    end = body.find(b'"', start + 1)
    if end - start <= MIN_LIFT:
        return None
    try:
        return _Span(start + 1, end, pybase64.b64decode(view[start + 1 : end], validate=True))
    except (binascii.Error, ValueError):  # not strict base64: left to the parser
        return None


def _skip_space(body: bytes, at: int) -> int:
    while body[at : at + 1] in (b" ", b"\t", b"\n", b"\r"):
        at += 1
    return at


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
