"""JSON bodies: ours written with images spliced in (:class:`Blob`, :func:`encode_json`), theirs read
where the shape is uncertain (:func:`dig`).

An image's base64 text or data URL needs no JSON escaping, so a provider module does not put it in
its body as a plain string but as a :class:`Blob`, a marker in the body tree. :func:`encode_json`
lets the JSON encoder write a short placeholder for each marker and joins the bytes around them:
the encoder never scans the megabytes, and the cost of an image is one copy. The markers are all
there is to it: which strings are spliced is visible in the tree the module built.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Blob:
    """Text for a JSON string that needs no escaping (base64, a base64 data URL), written in as it is."""

    text: str


def encode_json(body: Any) -> bytes:
    """``body`` (a JSON tree, with :class:`Blob` markers where images go) as compact UTF-8 JSON bytes."""
    blobs: list[str] = []
    marker = f"@vlmkit-blob-{uuid.uuid4().hex}-"

    def placeholder(value: Any) -> str:
        if not isinstance(value, Blob):
            raise TypeError(f"a request body holds a {type(value).__name__}, which is not JSON")
        blobs.append(value.text)
        return f"{marker}{len(blobs) - 1}"

    text = json.dumps(body, ensure_ascii=False, separators=(",", ":"), default=placeholder)
    if not blobs:
        return text.encode("utf-8")
    pieces = text.split('"' + marker)
    out = [pieces[0].encode("utf-8")]
    for piece in pieces[1:]:  # each is 'N"' and the JSON that follows the placeholder
        number, _, rest = piece.partition('"')
        out += [b'"', blobs[int(number)].encode("ascii"), b'"', rest.encode("utf-8")]
    return b"".join(out)


def dig(data: Any, *keys: str | int) -> Any:
    """``data[k1][k2]...`` or None where any step is missing (for provider JSON of uncertain shape)."""
    for key in keys:
        try:
            data = data[key]
        except (KeyError, IndexError, TypeError):
            return None
    return data
