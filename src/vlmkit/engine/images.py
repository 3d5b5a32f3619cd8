"""Images on their way into mtmd: rendered with the llama.cpp policy, bounded by ``detail``.

Every image is rendered with :data:`vlmkit.images.policy.LLAMA_CPP` (formats stb_image reads, EXIF
orientation baked in), so no raw decoder failure reaches the user, and a failure names the image's
place in the chat (``messages[i].content[j]``). ``detail`` bounds the long edge,
which bounds the image tokens of every projector that tiles or scales with resolution; an explicit
token cap is met by measuring the tokens mtmd gives and scaling the image down until it fits.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

from vlmkit.chat import ImagePart
from vlmkit.errors import ImageError
from vlmkit.images.policy import LLAMA_CPP, ImagePolicy
from vlmkit.prediction import Detail

# Long-edge bound per named detail level (None: the policy's own limit, the model's full resolution).
DETAIL_LONG_EDGE: dict[str, int | None] = {"low": 512, "auto": 1024, "high": None}
MIN_LONG_EDGE = 64


@dataclass(frozen=True)
class ImageInput:
    """An image ready for mtmd: the bytes, and the id its chunks are cached under."""

    data: bytes
    bitmap_id: str
    width: int
    height: int


def detail_of(part: ImagePart, default: Detail | None) -> Detail:
    if part.detail is not None:
        return part.detail
    return default if default is not None else "auto"


def long_edge_for(detail: Detail) -> int | None:
    if isinstance(detail, str):
        return DETAIL_LONG_EDGE[detail]
    return DETAIL_LONG_EDGE["high"]


def policy_for(long_edge: int | None) -> ImagePolicy:
    if long_edge is None:
        return LLAMA_CPP
    bound = min(long_edge, LLAMA_CPP.max_long_edge or long_edge)
    return dataclasses.replace(LLAMA_CPP, max_long_edge=bound)


def render_input(part: ImagePart, long_edge: int | None, occurrence: int) -> ImageInput:
    """Render ``part`` for mtmd within ``long_edge``. The id names the exact pixels sent."""
    r = part.image.render(policy_for(long_edge))
    key = f"{part.image.identifier}:{r.width}x{r.height}"
    return ImageInput(data=r.data, bitmap_id=f"{key}@{occurrence}", width=r.width, height=r.height)


def render_inputs(
    parts: Sequence[ImagePart], default: Detail | None, edges: dict[int, int | None], where: Sequence[str]
) -> list[ImageInput]:
    """Render every image; ``edges`` overrides the long-edge bound of some (by index).

    ``where`` names each part's place in the chat; an image that cannot be rendered raises its
    :class:`~vlmkit.errors.ImageError` located there.
    """
    out: list[ImageInput] = []
    seen: dict[str, int] = {}
    for i, part in enumerate(parts):
        edge = edges.get(i, long_edge_for(detail_of(part, default)))
        occurrence = seen.get(part.image.identifier, 0)
        seen[part.image.identifier] = occurrence + 1
        try:
            out.append(render_input(part, edge, occurrence))
        except ImageError as exc:
            exc.add_location(where[i])
            raise
    return out


def shrink_edge(current: ImageInput, tokens: int, cap: int) -> int | None:
    """A smaller long edge that should bring ``tokens`` under ``cap`` (None: cannot shrink further)."""
    edge = max(current.width, current.height)
    if edge <= MIN_LONG_EDGE:
        return None
    scale = math.sqrt(cap / tokens) * 0.95
    return max(MIN_LONG_EDGE, min(edge - 1, int(edge * scale)))
