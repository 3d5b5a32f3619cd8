"""Documented image token costs, to budget a prompt before it is sent.

- OpenAI (GPT-4o family, tile method): ``low`` is a flat 85 tokens; ``high`` fits the image in
  2048 x 2048, scales its short side down to 768, and costs 170 per 512-px tile plus 85.
- Anthropic: the image is first scaled to the policy's size (1568 px long edge, ~1.15 MP), then costs
  ``ceil(width * height / 750)`` tokens.
- Gemini: an image with both sides <= 384 px is one 258-token tile; a larger one is cut into tiles of
  a crop unit ``floor(min(w, h) / 1.5)`` (clamped to 256..768), 258 tokens each. ``low`` detail
  (media resolution low) is a single tile.
"""

from __future__ import annotations

import math

from vlmkit._types import Detail
from vlmkit.errors import VlmkitError
from vlmkit.images.handle import ImageHandle
from vlmkit.images.policy import ANTHROPIC


def estimate_image_tokens(handle: ImageHandle, target: str, detail: Detail = "auto") -> int:
    """Tokens that ``handle`` costs at ``target`` (``openai``, ``anthropic`` or ``gemini``)."""
    if handle.width is None or handle.height is None:
        raise VlmkitError(f"the size of {handle.source or handle.name!r} is unknown (a reference), so its cost is too")
    if detail not in ("low", "high", "auto"):
        raise VlmkitError(f"detail must be 'low', 'high' or 'auto', not {detail!r}")
    estimate = ESTIMATORS.get(target)
    if estimate is None:
        raise VlmkitError(f"no token estimate for {target!r}; known targets: {', '.join(sorted(ESTIMATORS))}")
    return estimate(handle.width, handle.height, detail)


def openai_tokens(width: int, height: int, detail: Detail = "auto") -> int:
    if detail == "low":
        return 85
    scale = min(1.0, 2048 / max(width, height))
    w, h = width * scale, height * scale
    scale = min(1.0, 768 / min(w, h))
    w, h = w * scale, h * scale
    return 85 + 170 * math.ceil(w / 512) * math.ceil(h / 512)


def anthropic_tokens(width: int, height: int, detail: Detail = "auto") -> int:
    w, h = ANTHROPIC.target_size(width, height)
    return math.ceil(w * h / 750)


def gemini_tokens(width: int, height: int, detail: Detail = "auto") -> int:
    if detail == "low" or (width <= 384 and height <= 384):
        return 258
    unit = min(768, max(256, math.floor(min(width, height) / 1.5)))
    return 258 * math.ceil(width / unit) * math.ceil(height / unit)


ESTIMATORS = {"openai": openai_tokens, "anthropic": anthropic_tokens, "gemini": gemini_tokens}
