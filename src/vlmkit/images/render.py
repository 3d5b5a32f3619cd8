"""Rendering an image for a target: the original bytes when they are acceptable, else the least change.

The ladder, from cheapest to most lossy: pass the bytes through; re-encode (other format, first frame,
EXIF orientation baked in); downscale to the policy's size (JPEG decoded at reduced scale); lower the
JPEG/WebP quality until the byte limit is met; downscale further. Results are cached by
``(identifier, policy)`` within a memory budget, so each image is encoded once per target.

This module sits below :mod:`~vlmkit.images.handle`: it renders anything that has an image's bytes and
header facts (:class:`Renderable`, which ``ImageHandle`` is), and ``ImageHandle.render`` calls it.

A target that takes decoded pixels rather than a file (llama.cpp's mtmd) gets them from
:func:`render_pixels`: the same decode and resize, without encoding what it would only decode again.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from dataclasses import dataclass
from functools import cached_property
from typing import Protocol

import pybase64
from PIL import Image, ImageOps

from vlmkit.errors import ImageTooLargeError, InvalidImageError
from vlmkit.images.policy import ImagePolicy, base64_length
from vlmkit.images.probe import image_summary, open_image, over_pillow_limit
from vlmkit.images.sniff import ImageFormat


@dataclass(frozen=True)
class RenderedImage:
    """Image bytes ready for one target, with their (true) MIME type."""

    data: bytes
    mime_type: str
    width: int
    height: int
    changed: bool
    """False when the original bytes passed through untouched."""

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
    return RenderedImage(data, handle.mime_type or "", handle.width, handle.height, False)


@dataclass(frozen=True)
class RgbPixels:
    """Decoded pixels, 8-bit RGB, row after row (``width * height * 3`` bytes)."""

    data: bytes
    width: int
    height: int

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
    return RgbPixels(rgb.tobytes(), rgb.width, rgb.height)


def _sized(handle: Renderable, policy: ImagePolicy) -> Image.Image:
    """The first frame, upright, resized to fit ``policy``'s size limits."""
    assert handle.width is not None and handle.height is not None and handle.format is not None
    target = policy.target_size(handle.width, handle.height)
    image = _decode(handle, target)
    if image.size != target:
        image = image.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0)
    return image


def _render(handle: Renderable, policy: ImagePolicy) -> RenderedImage:
    assert handle.format is not None
    image = _sized(handle, policy)
    out, mime = _encode_within(image, handle.format, policy, handle.name)
    return RenderedImage(out, mime, image.width, image.height, True)


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


def _encode_within(image: Image.Image, source: ImageFormat, policy: ImagePolicy, name: str) -> tuple[bytes, str]:
    """Encode ``image`` to meet the byte limits: switch to a lossy format, lower quality, then shrink."""
    alpha = _has_alpha(image)
    fmt = _output_format(source, image, policy)
    quality = policy.jpeg_quality
    for _ in range(16):
        out = _encode(image, fmt, quality)
        if policy.fits_bytes(len(out)):
            return out, fmt.mime_type
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
