"""Boxes and points in a model's answer, in the original image's pixels: ``vlmkit.grounding.parse``.

The work is in :mod:`vlmkit.images.grounding` (beside the rendering whose transform it undoes); this
module is its public name.
"""

from vlmkit.images.grounding import (
    CONVENTIONS,
    Box,
    Convention,
    GroundingError,
    Point,
    SentImage,
    convention_for,
    draw,
    parse,
    smart_resize,
)

__all__ = [
    "CONVENTIONS",
    "Box",
    "Convention",
    "GroundingError",
    "Point",
    "SentImage",
    "convention_for",
    "draw",
    "parse",
    "smart_resize",
]
