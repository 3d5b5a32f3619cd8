"""Images on their way into mtmd: rendered with the llama.cpp policy, bounded by ``detail``.

Every image is rendered with :data:`vlmkit.images.policy.LLAMA_CPP` (formats stb_image reads, EXIF
orientation baked in), so no raw decoder failure reaches the user, and a failure names the image's
place in the chat (``messages[i].content[j]``). An image the policy takes as it is goes to mtmd as
its file's bytes (decoded once, by llama.cpp, as llama-server would); one vlmkit must decode anyway
(to scale it, turn it upright or read a format stb_image does not) goes as the RGB pixels it
decoded, never re-encoded for mtmd to decode again.

``detail`` bounds the long edge, which bounds the image tokens of every projector that tiles or
scales with resolution; an explicit token cap is met by measuring the tokens mtmd gives and scaling
the image down until it fits. The pair is an image's :class:`Budget`: what, with the image's
identity, names the tokens it becomes.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from vlmkit.chat import ImagePart
from vlmkit.images.policy import LLAMA_CPP, ImagePolicy
from vlmkit.images.render import RgbPixels, needs_change, render_pixels
from vlmkit.prediction import Detail

# Long-edge bound per named detail level (None: the policy's own limit, the model's full resolution).
DETAIL_LONG_EDGE: dict[str, int | None] = {"low": 512, "auto": 1024, "high": None}
MIN_LONG_EDGE = 64

RENDERING = "rendering=2"
"""How vlmkit makes an image's pixels for mtmd; change it when that changes (it names embeddings on disk)."""


@dataclass(frozen=True)
class Budget:
    """How large an image may be in a prompt: a long edge (None: the policy's) and a token cap."""

    long_edge: int | None
    cap: int | None


def budget_of(part: ImagePart, default: Detail | None) -> Budget:
    """The budget of ``part``: its own ``detail``, else the prediction's (``"auto"`` when neither says).

    A token cap (an int ``detail``) renders at full resolution and is then met by shrinking; the
    part's own cap wins over the prediction's.
    """
    detail = part.detail if part.detail is not None else (default if default is not None else "auto")
    long_edge = DETAIL_LONG_EDGE[detail] if isinstance(detail, str) else DETAIL_LONG_EDGE["high"]
    cap = part.detail if isinstance(part.detail, int) else default if isinstance(default, int) else None
    return Budget(long_edge, cap)


@dataclass(frozen=True)
class ImageInput:
    """An image ready for mtmd: a file's bytes or decoded pixels, named for the exact pixels sent."""

    data: bytes | RgbPixels
    key: str
    """``<content identifier>:<width>x<height>``: the same key always means the same pixels."""
    width: int
    height: int

    @property
    def nbytes(self) -> int:
        return len(self.data.data if isinstance(self.data, RgbPixels) else self.data)


def policy_for(long_edge: int | None) -> ImagePolicy:
    if long_edge is None:
        return LLAMA_CPP
    bound = min(long_edge, LLAMA_CPP.max_long_edge or long_edge)
    return dataclasses.replace(LLAMA_CPP, max_long_edge=bound)


def render_input(part: ImagePart, long_edge: int | None) -> ImageInput:
    """``part``'s image for mtmd within ``long_edge``: its bytes when they do, else decoded pixels."""
    handle = part.image
    policy = policy_for(long_edge)
    data: bytes | RgbPixels
    if needs_change(handle, policy):
        pixels = render_pixels(handle, policy)
        width, height, data = pixels.width, pixels.height, pixels
    else:
        original = handle.original
        width, height, data = original.width, original.height, original.data
    return ImageInput(data=data, key=f"{handle.identifier}:{width}x{height}", width=width, height=height)


def shrink_edge(current: ImageInput, tokens: int, cap: int) -> int | None:
    """A smaller long edge that should bring ``tokens`` under ``cap`` (None: cannot shrink further)."""
    edge = max(current.width, current.height)
    if edge <= MIN_LONG_EDGE:
        return None
    scale = math.sqrt(cap / tokens) * 0.95
    return max(MIN_LONG_EDGE, min(edge - 1, int(edge * scale)))
