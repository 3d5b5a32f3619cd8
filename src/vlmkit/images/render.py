"""Rendering an image for a target: the original bytes when they are acceptable, else the least change.

The ladder, from cheapest to most lossy: pass the bytes through; re-encode (other format, first frame,
EXIF orientation baked in); downscale to the policy's size (JPEG decoded at reduced scale); lower the
JPEG/WebP quality until the byte limit is met; downscale further. Results are cached by
``(identifier, policy)`` within a memory budget, so each image is encoded once per target.

This module sits below :mod:`~vlmkit.images.handle`: it renders anything that has an image's bytes and
header facts (:class:`Renderable`, which ``ImageHandle`` is), and ``ImageHandle.render`` calls it.

A target that takes decoded pixels rather than a file (llama.cpp's mtmd) gets them from
:func:`render_pixels`: the same decode and resize, without encoding what it would only decode again.

Each result records what was done to the picture as an :class:`ImageTransform` (the EXIF rotation
and the scale from the original, upright size to the size sent), so an answer given in the sent
image's coordinates can be mapped back to the original's (:mod:`vlmkit.images.grounding`) from what
really happened rather than from a recomputation of it.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import cached_property
from typing import Protocol

import pybase64
from PIL import Image, ImageOps

from vlmkit.errors import ImageTooLargeError, InvalidImageError
from vlmkit.images.policy import ImagePolicy, base64_length
from vlmkit.images.probe import image_summary, open_image, over_pillow_limit
from vlmkit.images.sniff import ImageFormat


@dataclass(frozen=True)
class ImageTransform:
    """What rendering did to an image's geometry: rotated upright by its EXIF ``orientation``, then
    scaled from ``original`` (the upright size, as ``ImageHandle.width``/``height`` give it) to ``size``.

    Rendering never crops or pads, so these three facts are the whole mapping. Coordinates are
    pixels with the origin at the top-left corner of the top-left pixel (a box's right edge is
    ``x2``, so a full-image box is ``(0, 0, width, height)``).
    """

    original: tuple[int, int]
    size: tuple[int, int]
    orientation: int = 1

    @classmethod
    def identity(cls, width: int, height: int, orientation: int = 1) -> ImageTransform:
        return cls((width, height), (width, height), orientation)

    def resized(self, width: int, height: int) -> ImageTransform:
        """This transform followed by a further resize of its output to ``width`` x ``height``."""
        return ImageTransform(self.original, (width, height), self.orientation)

    def to_original(self, x: float, y: float) -> tuple[float, float]:
        """A point of the sent image in the original (upright) image's pixels."""
        return x * self.original[0] / self.size[0], y * self.original[1] / self.size[1]

    def from_original(self, x: float, y: float) -> tuple[float, float]:
        """A point of the original (upright) image in the sent image's pixels."""
        return x * self.size[0] / self.original[0], y * self.size[1] / self.original[1]

    @property
    def stored_size(self) -> tuple[int, int]:
        """The original's size as its pixels are stored in the file (before the EXIF rotation)."""
        w, h = self.original
        return (h, w) if self.orientation in (5, 6, 7, 8) else (w, h)

    def to_stored(self, x: float, y: float) -> tuple[float, float]:
        """A point of the upright original in the file's stored pixels (undoing the EXIF rotation)."""
        sw, sh = self.stored_size
        return _UNROTATE[self.orientation](x, y, sw, sh)


# Upright (displayed) point -> stored point, per EXIF orientation (TIFF 6.0 / EXIF 2.3 definitions):
# the inverse of what ImageOps.exif_transpose does to the stored pixels.
_UNROTATE = {
    1: lambda x, y, w, h: (x, y),
    2: lambda x, y, w, h: (w - x, y),
    3: lambda x, y, w, h: (w - x, h - y),
    4: lambda x, y, w, h: (x, h - y),
    5: lambda x, y, w, h: (y, x),
    6: lambda x, y, w, h: (y, h - x),
    7: lambda x, y, w, h: (w - y, h - x),
    8: lambda x, y, w, h: (w - y, x),
}


@dataclass(frozen=True)
class RenderedImage:
    """Image bytes ready for one target, with their (true) MIME type."""

    data: bytes
    mime_type: str
    width: int
    height: int
    changed: bool
    """False when the original bytes passed through untouched."""
    transform: ImageTransform | None = field(default=None, compare=False)
    """How the original's pixels became these (see :class:`ImageTransform`)."""

    def __repr__(self) -> str:
        """One short line: printing a rendered image must not print megabytes of bytes."""
        how = "re-encoded" if self.changed else "original bytes"
        return f"RenderedImage({image_summary(self.mime_type, self.width, self.height, len(self.data))}, {how})"

    @cached_property
    def base64(self) -> str:
        """The data as base64 (computed once)."""
        return _base64("", self.data)

    @cached_property
    def data_url(self) -> str:
        """The data as a ``data:`` URL (computed once)."""
        return _base64(f"data:{self.mime_type};base64,", self.data)


class Renderable(Protocol):
    """What rendering reads from an image: an :class:`~vlmkit.images.handle.ImageHandle`."""

    @property
    def identifier(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def data(self) -> bytes: ...
    @property
    def mime_type(self) -> str | None: ...
    @property
    def format(self) -> ImageFormat | None: ...
    @property
    def size_bytes(self) -> int | None: ...
    @property
    def width(self) -> int | None: ...
    @property
    def height(self) -> int | None: ...
    @property
    def orientation(self) -> int: ...
    @property
    def mode(self) -> str | None: ...
    @property
    def animated(self) -> bool: ...
    @property
    def original(self) -> RenderedImage:
        """Its own bytes as a :class:`RenderedImage`, kept with it (see :func:`original`)."""
        ...


_BASE64_CHUNK = 3 * 32 * 1024
"""Bytes encoded per step: a multiple of 3 (no padding between chunks), small enough to reuse heap memory."""


def _base64(prefix: str, data: bytes) -> str:
    """``prefix`` + base64 of ``data``, built with one large allocation (SIMD base64 where the CPU has it).

    Encoding in chunks and joining once avoids a second multi-megabyte string (a full copy, and
    fresh pages to fault in) that ``prefix + b64encode(data)`` would make.
    """
    view = memoryview(data)
    parts = [prefix]
    parts.extend(pybase64.b64encode_as_string(view[i : i + _BASE64_CHUNK]) for i in range(0, len(view), _BASE64_CHUNK))
    return "".join(parts)


class RenderCache:
    """A thread-safe LRU of rendered images, bounded by an estimate of the memory they hold."""

    def __init__(self, max_bytes: int = 256 * 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[str, ImagePolicy | None], RenderedImage] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def _weight(item: RenderedImage) -> int:
        # the bytes plus room for their base64 and data URL
        return len(item.data) + 2 * base64_length(len(item.data))

    def get(self, key: tuple[str, ImagePolicy | None]) -> RenderedImage | None:
        with self._lock:
            item = self._entries.get(key)
            if item is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return item

    def put(self, key: tuple[str, ImagePolicy | None], item: RenderedImage) -> None:
        weight = self._weight(item)
        if weight > self.max_bytes:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._size -= self._weight(old)
            self._entries[key] = item
            self._size += weight
            while self._size > self.max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self._size -= self._weight(evicted)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._size = 0

    def __len__(self) -> int:
        return len(self._entries)


render_cache = RenderCache()
"""The process-wide cache that :func:`render` uses."""


def render(handle: Renderable, policy: ImagePolicy | None) -> RenderedImage:
    """Bytes of ``handle`` that satisfy ``policy``, changing as little as possible (cached).

    ``policy=None``, or a policy the image already meets, gives the original bytes: they are kept with
    the handle (their base64 and data URL computed once), not in the cache, so an image passed
    straight through never needs its identifier hashed.
    """
    if policy is None or not needs_change(handle, policy):
        return handle.original
    key = (handle.identifier, policy)
    hit = render_cache.get(key)
    if hit is not None:
        return hit
    result = _render(handle, policy)
    render_cache.put(key, result)
    return result


def needs_change(handle: Renderable, policy: ImagePolicy | None) -> list[str]:
    """Why ``handle``'s original bytes would not do for ``policy`` (empty when they would)."""
    fmt = handle.format
    reasons: list[str] = []
    if policy is None:
        return reasons
    if fmt is None or not policy.accepts_format(fmt):
        reasons.append(f"{policy.name} does not accept {handle.mime_type}")
    if handle.animated and not policy.animated:
        reasons.append(f"{policy.name} does not accept animation")
    if handle.orientation != 1 and not policy.applies_exif_orientation:
        reasons.append("EXIF orientation must be applied")
    if policy.modes is not None and handle.mode not in policy.modes:
        reasons.append(f"{policy.name} does not decode {handle.mode} pixels")
    if handle.width is not None and handle.height is not None and not policy.fits_size(handle.width, handle.height):
        reasons.append(f"{handle.width}x{handle.height} is over {policy.name}'s size limits")
    if handle.size_bytes is not None and not policy.fits_bytes(handle.size_bytes):
        reasons.append(f"{handle.size_bytes:,} bytes is over {policy.name}'s byte limits")
    return reasons


def original(handle: Renderable) -> RenderedImage:
    """``handle``'s own bytes as a rendered image (use ``handle.original``, which keeps it)."""
    data = handle.data  # a reference has none: this raises the error that says so
    assert handle.width is not None and handle.height is not None
    transform = ImageTransform.identity(handle.width, handle.height, handle.orientation)
    return RenderedImage(data, handle.mime_type or "", handle.width, handle.height, False, transform)


@dataclass(frozen=True)
class RgbPixels:
    """Decoded pixels, 8-bit RGB, row after row (``width * height * 3`` bytes)."""

    data: bytes
    width: int
    height: int
    transform: ImageTransform | None = field(default=None, compare=False)
    """How the original's pixels became these (see :class:`ImageTransform`)."""

    def __repr__(self) -> str:
        return f"RgbPixels({self.width}x{self.height})"


def render_pixels(handle: Renderable, policy: ImagePolicy) -> RgbPixels:
    """``handle``'s first frame as RGB pixels: upright, within ``policy``'s size, alpha on white.

    For a target that decodes files itself this is the image :func:`render` would send, before
    its encoding: nothing lossy in between, and no second decode. Not cached: whoever asks keeps
    what it made of them.
    """
    image = _sized(handle, policy)
    rgb = _flatten(image)
    if rgb.mode != "RGB":
        rgb = rgb.convert("RGB")
    return RgbPixels(rgb.tobytes(), rgb.width, rgb.height, transform_to(handle, rgb.width, rgb.height))


def _sized(handle: Renderable, policy: ImagePolicy) -> Image.Image:
    """The first frame, upright, resized to fit ``policy``'s size limits."""
    assert handle.width is not None and handle.height is not None and handle.format is not None
    target = policy.target_size(handle.width, handle.height)
    image = _decode(handle, target)
    if image.size != target:
        image = image.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0)
    return image


def decode_upright(handle: Renderable) -> Image.Image:
    """``handle``'s first frame, decoded upright at its full size (for drawing on the original)."""
    assert handle.width is not None and handle.height is not None
    return _decode(handle, (handle.width, handle.height))


def _render(handle: Renderable, policy: ImagePolicy) -> RenderedImage:
    assert handle.format is not None
    image = _sized(handle, policy)
    out, mime, size = _encode_within(image, handle.format, policy, handle.name)
    return RenderedImage(out, mime, size[0], size[1], True, transform_to(handle, *size))


def transform_to(handle: Renderable, width: int, height: int) -> ImageTransform:
    """The transform from ``handle``'s upright original to the ``width`` x ``height`` it was rendered at."""
    assert handle.width is not None and handle.height is not None
    return ImageTransform((handle.width, handle.height), (width, height), handle.orientation)


def _decode(handle: Renderable, target: tuple[int, int]) -> Image.Image:
    """Decode the first frame, upright, at no less than ``target`` (JPEG decodes at reduced scale)."""
    assert handle.format is not None
    try:
        with open_image(handle.data, handle.format) as im:
            if handle.format is ImageFormat.JPEG and im.mode in ("RGB", "L"):
                stored = target[::-1] if handle.orientation in (5, 6, 7, 8) else target
                im.draft(im.mode, stored)
            im.seek(0)
            im.load()
            upright = ImageOps.exif_transpose(im) if handle.orientation != 1 else im.copy()
    except Image.DecompressionBombError:
        raise over_pillow_limit(handle.format.name) from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError) as exc:
        raise InvalidImageError(
            f"the image {handle.name!r} ({handle.mime_type}) cannot be decoded ({exc}); "
            "the file is truncated or corrupt"
        ) from None
    return upright


def _has_alpha(im: Image.Image) -> bool:
    return im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (im.mode == "P" and "transparency" in im.info)


def _output_format(source: ImageFormat, image: Image.Image, policy: ImagePolicy) -> ImageFormat:
    """The source format where accepted; else PNG for alpha and palette art (GIF), JPEG for the rest."""
    if source in (ImageFormat.JPEG, ImageFormat.PNG, ImageFormat.WEBP) and policy.accepts_format(source):
        return source
    lossless_first = _has_alpha(image) or source is ImageFormat.GIF or image.mode in ("P", "1")
    order = (
        (ImageFormat.PNG, ImageFormat.WEBP, ImageFormat.JPEG)
        if lossless_first
        else (ImageFormat.JPEG, ImageFormat.PNG, ImageFormat.WEBP)
    )
    for fmt in order:
        if policy.accepts_format(fmt):
            return fmt
    raise ImageTooLargeError(f"{policy.name} accepts none of JPEG, PNG or WebP; vlmkit cannot encode for it")


def _encode_within(
    image: Image.Image, source: ImageFormat, policy: ImagePolicy, name: str
) -> tuple[bytes, str, tuple[int, int]]:
    """Encode ``image`` to meet the byte limits: switch to a lossy format, lower quality, then shrink."""
    alpha = _has_alpha(image)
    fmt = _output_format(source, image, policy)
    quality = policy.jpeg_quality
    for _ in range(16):
        out = _encode(image, fmt, quality)
        if policy.fits_bytes(len(out)):
            return out, fmt.mime_type, image.size
        lossy = ImageFormat.WEBP if alpha else ImageFormat.JPEG
        if fmt is ImageFormat.PNG and policy.accepts_format(lossy):
            fmt = lossy
        elif fmt is not ImageFormat.PNG and quality > 55:
            quality -= 15
        elif min(image.size) > 16:
            image = image.resize(
                (max(1, image.width * 3 // 4), max(1, image.height * 3 // 4)), Image.Resampling.LANCZOS
            )
        else:
            break
    raise ImageTooLargeError(
        f"the image {name!r} cannot be brought under {policy.name}'s byte limit "
        f"(max_bytes={policy.max_bytes}, max_base64_bytes={policy.max_base64_bytes})"
    )


def _encode(image: Image.Image, fmt: ImageFormat, quality: int) -> bytes:
    buf = io.BytesIO()
    if fmt is ImageFormat.JPEG:
        _flatten(image).save(buf, format="JPEG", quality=quality)
    elif fmt is ImageFormat.WEBP:
        im = image if image.mode in ("RGB", "RGBA") else image.convert("RGBA" if _has_alpha(image) else "RGB")
        im.save(buf, format="WEBP", quality=quality, method=4)
    else:
        im = image if image.mode in ("1", "L", "LA", "P", "RGB", "RGBA") else _to_8bit(image)
        im.save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def _to_8bit(image: Image.Image) -> Image.Image:
    if image.mode.startswith("I"):
        return image.point(lambda v: v / 256).convert("L")
    return image.convert("RGBA" if _has_alpha(image) else "RGB")


def _flatten(image: Image.Image) -> Image.Image:
    """RGB or L pixels for JPEG: alpha is composited onto white, other modes converted."""
    if image.mode in ("RGB", "L"):
        return image
    if _has_alpha(image):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return _to_8bit(image) if image.mode.startswith("I") else image.convert("RGB")
