"""Images on their way into mtmd: rendered with the llama.cpp policy, bounded by ``detail``.

Every image is rendered with :data:`vlmkit.images.policy.LLAMA_CPP` (formats stb_image reads, EXIF
orientation baked in), so no raw decoder failure reaches the user, and a failure names the image's
place in the chat (``messages[i].content[j]``). An image the policy takes as it is goes to mtmd as
its file's bytes (decoded once, by llama.cpp, as llama-server would); one vlmkit must decode anyway
(to scale it, turn it upright or read a format stb_image does not) goes as the RGB pixels it
decoded, never re-encoded for mtmd to decode again.

``detail`` bounds the long edge, which bounds the image tokens of every projector that tiles or
scales with resolution; an explicit token cap (``image_max_tokens``, or an int ``detail``) is met by
measuring the tokens mtmd gives and scaling the image down until it fits, a token floor
(``image_min_tokens``) by scaling it up (never past the policy's long edge). The three are an
image's :class:`Budget`: what, with the image's identity, names the tokens it becomes.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from PIL import Image

from vlmkit.chat import ImagePart
from vlmkit.images.policy import LLAMA_CPP, ImagePolicy
from vlmkit.images.render import RgbPixels, needs_change, render_pixels
from vlmkit.prediction import PredictionConfig

# Long-edge bound per named detail level (None: the policy's own limit, the model's full resolution).
DETAIL_LONG_EDGE: dict[str, int | None] = {"low": 512, "auto": 1024, "high": None}
MIN_LONG_EDGE = 64
MAX_GROWN_EDGE = 2048  # the longest edge a token floor scales an image up to, where the policy sets none

RENDERING = "rendering=2"
"""How vlmkit makes an image's pixels for mtmd; change it when that changes (it names embeddings on disk)."""


@dataclass(frozen=True)
class Budget:
    """How large an image may be in a prompt: a long edge (None: the policy's), a token cap and floor."""

    long_edge: int | None
    cap: int | None
    floor: int | None = None


def budget_of(part: ImagePart, config: PredictionConfig) -> Budget:
    """The budget of ``part``: its own ``detail``, else the prediction's (``"auto"`` when neither says).

    A token cap (``image_max_tokens`` or an int ``detail``) renders at full resolution and is then
    met by shrinking; the part's own int ``detail`` wins over the prediction's cap. The floor is
    the prediction's ``image_min_tokens``, lowered to the part's own cap where that is smaller.
    """
    default = config.detail
    detail = part.detail if part.detail is not None else (default if default is not None else "auto")
    long_edge = DETAIL_LONG_EDGE[detail] if isinstance(detail, str) else DETAIL_LONG_EDGE["high"]
    cap = part.detail if isinstance(part.detail, int) else config.max_image_tokens
    floor = config.image_min_tokens
    if floor is not None and cap is not None:
        floor = min(floor, cap)
    return Budget(long_edge, cap, floor)


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


def render_input(part: ImagePart, long_edge: int | None, *, grow_to: int | None = None) -> ImageInput:
    """``part``'s image for mtmd within ``long_edge``: its bytes when they do, else decoded pixels.

    With ``grow_to``, an image whose long edge is shorter is scaled up to it (a token floor).
    """
    handle = part.image
    policy = policy_for(long_edge)
    data: bytes | RgbPixels
    if grow_to is not None:
        pixels = _enlarged(render_pixels(handle, policy), grow_to)
        width, height, data = pixels.width, pixels.height, pixels
    elif needs_change(handle, policy):
        pixels = render_pixels(handle, policy)
        width, height, data = pixels.width, pixels.height, pixels
    else:
        original = handle.original
        width, height, data = original.width, original.height, original.data
    return ImageInput(data=data, key=f"{handle.identifier}:{width}x{height}", width=width, height=height)


def natural_edge(part: ImagePart) -> int:
    """The long edge ``part`` has at full resolution (within the llama.cpp policy's bound)."""
    handle = part.image
    edge = max(handle.width or 0, handle.height or 0)
    return min(edge, LLAMA_CPP.max_long_edge) if LLAMA_CPP.max_long_edge else edge


def _enlarged(pixels: RgbPixels, long_edge: int) -> RgbPixels:
    edge = max(pixels.width, pixels.height)
    if edge >= long_edge:
        return pixels
    scale = long_edge / edge
    size = (max(1, round(pixels.width * scale)), max(1, round(pixels.height * scale)))
    image = Image.frombytes("RGB", (pixels.width, pixels.height), pixels.data)
    image = image.resize(size, Image.Resampling.BICUBIC)
    transform = pixels.transform.resized(*image.size) if pixels.transform is not None else None
    return RgbPixels(image.tobytes(), image.width, image.height, transform)


def grow_edge(current: ImageInput, tokens: int, floor: int) -> int | None:
    """A larger long edge that should bring ``tokens`` up to ``floor`` (None: cannot grow further)."""
    edge = max(current.width, current.height)
    limit = LLAMA_CPP.max_long_edge or MAX_GROWN_EDGE
    if edge >= limit:
        return None
    scale = math.sqrt(floor / max(tokens, 1)) * 1.05
    return min(limit, max(edge + 1, math.ceil(edge * scale)))


def shrink_edge(current: ImageInput, tokens: int, cap: int) -> int | None:
    """A smaller long edge that should bring ``tokens`` under ``cap`` (None: cannot shrink further)."""
    edge = max(current.width, current.height)
    if edge <= MIN_LONG_EDGE:
        return None
    scale = math.sqrt(cap / tokens) * 0.95
    return max(MIN_LONG_EDGE, min(edge - 1, int(edge * scale)))
