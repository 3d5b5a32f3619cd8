"""``prepare_image``: whatever a user hands in as an image, turned into a validated ``ImageHandle``.

The reading happens here (files, file objects, PIL images, data and file URLs, and http(s) through
:mod:`~vlmkit.images.fetch`); the bytes then become a handle through :mod:`~vlmkit.images.handle`.
"""

from __future__ import annotations

import binascii
import inspect
import io
import os
import re
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Union

import anyio.to_thread
import pybase64
from PIL import Image

from vlmkit.errors import ImageSourceError
from vlmkit.images.fetch import FetchedImage, FetchOptions, afetch_image, fetch_image
from vlmkit.images.handle import REFERENCE_SCHEMES, ImageHandle, image_from_bytes, name_from_url, reference_handle
from vlmkit.images.probe import DEFAULT_MAX_PIXELS

ImageSource = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, Image.Image, ImageHandle, Any]
"""Anything :func:`prepare_image` takes: a path, URL, image bytes, binary file object, PIL image or handle."""


def prepare_image(
    src: ImageSource,
    name: str | None = None,
    *,
    format: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    fetch: FetchOptions | None = None,
) -> ImageHandle:
    """Read, sniff and validate an image, returning a handle for it.

    ``src`` is a filesystem path, image bytes (bytes are always data, never a path), a binary file
    object, a ``PIL.Image.Image``, or a URL: ``http(s)://`` (fetched safely, see ``fetch``),
    ``data:``, ``file://``; ``gs://`` and ``s3://`` URIs are kept as references.
    ``format`` declares a MIME type: it must agree with what the bytes are.
    """
    if isinstance(src, ImageHandle):
        return src
    if isinstance(src, str) and is_http(src):
        return _from_fetched(fetch_image(src, fetch), src, name, format, max_pixels)
    if isinstance(src, str) and src.startswith(REFERENCE_SCHEMES):
        return reference_handle(src, name=name, format=format)
    data, default_name, source = read_source(src)
    return image_from_bytes(data, name or default_name, format=format, max_pixels=max_pixels, source=source)


async def aprepare_image(
    src: ImageSource,
    name: str | None = None,
    *,
    format: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    fetch: FetchOptions | None = None,
) -> ImageHandle:
    """:func:`prepare_image` for async code: network, file reads and header parsing run off the loop."""
    if isinstance(src, str) and is_http(src):
        fetched = await afetch_image(src, fetch)
        return await anyio.to_thread.run_sync(_from_fetched, fetched, src, name, format, max_pixels)
    return await anyio.to_thread.run_sync(
        lambda: prepare_image(src, name, format=format, max_pixels=max_pixels, fetch=fetch)
    )


def _from_fetched(
    fetched: FetchedImage, url: str, name: str | None, format: str | None, max_pixels: int
) -> ImageHandle:
    return image_from_bytes(
        fetched.data, name or name_from_url(fetched.url), format=format, max_pixels=max_pixels, source=url
    )


def read_source(src: ImageSource) -> tuple[bytes, str | None, str | None]:
    """The bytes of a local source, a default name, and the URI it came from (if any)."""
    if isinstance(src, bytes):
        return src, None, None
    if isinstance(src, (bytearray, memoryview)):
        return bytes(src), None, None
    if isinstance(src, Image.Image):
        return _encode_pil(src), None, None
    if isinstance(src, str):
        return _read_string(src)
    if isinstance(src, os.PathLike):
        path = Path(os.fspath(src))
        return _read_file(path), path.name, None
    if callable(getattr(src, "read", None)):
        return _read_fileobj(src)
    if inspect.isawaitable(src):
        raise ImageSourceError(
            f"cannot make an image from a {type(src).__name__}: await it first, and pass what it returns"
        )
    raise ImageSourceError(
        f"cannot make an image from a {type(src).__name__}; pass a path, a URL, image bytes, "
        "a binary file object or a PIL image"
    )


def _read_string(src: str) -> tuple[bytes, str | None, str | None]:
    if src.startswith("data:"):
        return _decode_data_url(src), None, None
    if src.startswith("file://"):
        parsed = urllib.parse.urlparse(src)
        path = Path(urllib.request.url2pathname(parsed.path))
        return _read_file(path), path.name, src
    path = Path(src).expanduser()
    if is_file(path):
        return _read_file(path), path.name, None
    raise ImageSourceError(_not_a_source_message(src))


def is_file(path: str | Path) -> bool:
    """Whether ``path`` names an existing file (this asks the disk)."""
    try:
        return Path(path).expanduser().is_file()
    except (OSError, ValueError):  # a name too long for the OS, or with a NUL in it
        return False


def _not_a_source_message(src: str) -> str:
    shown = src if len(src) <= 80 else src[:77] + "..."
    if "://" in src[:16]:
        scheme = src.split("://", 1)[0]
        return (
            f"{shown!r} uses the scheme {scheme}://, which vlmkit does not read; "
            "use http(s)://, data:, file://, gs://, s3:// or a local path"
        )
    if len(src) > 200 and looks_like_base64(src):
        return (
            f"the string {shown!r} is neither an existing file nor a URL. It looks like base64: pass it "
            "as a data URL ('data:image/png;base64,...') or decode it to bytes first"
        )
    return f"{shown!r} is neither an existing file nor a URL (looked for the file in {os.getcwd()})"


def looks_like_base64(text: str) -> bool:
    """Whether ``text`` could be bare base64 data (standard or URL-safe alphabet), judged from its ends."""
    return len(text) >= 16 and all(ch.isalnum() or ch in "+/=_-" for ch in text[:256] + text[-4:])


def _decode_data_url(url: str) -> bytes:
    header, sep, payload = url.partition(",")
    if not sep:
        raise ImageSourceError("the data URL has no ',' between its header and its data")
    if not payload.strip():
        raise ImageSourceError("the data URL has no data after its ','; put the image's base64 there")
    if header.endswith(";base64"):
        try:
            return pybase64.b64decode(payload, validate=True)  # strict decoding is the SIMD path, several times faster
        except (binascii.Error, ValueError):
            return _decode_loose_base64(payload)
    return urllib.parse.unquote_to_bytes(payload)


_NOT_BASE64 = re.compile(r"[^A-Za-z0-9+/=\s]")
_BASE64_REMEDY = "send the image's bytes in standard base64 (A-Z, a-z, 0-9, + and /), e.g. base64.b64encode(data)"


def _decode_loose_base64(payload: str) -> bytes:
    """Base64 that the strict decoder refused: line-wrapped or unpadded is decoded, anything else is
    an error that says what is wrong and where (never data silently dropped, leaving an empty image)."""
    bad = _NOT_BASE64.search(payload)
    if bad is not None:
        char = bad.group()
        why = " (URL-safe base64: use + and / instead of - and _)" if char in "-_" else ""
        raise ImageSourceError(
            f"the data URL's base64 is invalid: {char!r} at offset {bad.start()} of the data is not a base64 "
            f"character{why}; {_BASE64_REMEDY}"
        )
    text = "".join(payload.split())
    padding = text.find("=")
    if padding >= 0 and text.rstrip("=") != text[:padding]:
        raise ImageSourceError(
            f"the data URL's base64 is invalid: '=' padding in the middle of the data, at character {padding} "
            f"of {len(text)} (two base64 texts joined?); {_BASE64_REMEDY}"
        )
    text = text.rstrip("=")
    if len(text) % 4 == 1:
        raise ImageSourceError(
            f"the data URL's base64 is invalid: {len(text)} characters cannot be base64 (one too many, or the "
            f"data is cut short); {_BASE64_REMEDY}"
        )
    return pybase64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def _read_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ImageSourceError(f"no such image file: {str(path)!r}") from None
    except IsADirectoryError:
        raise ImageSourceError(f"{str(path)!r} is a directory, not an image file") from None
    except OSError as exc:
        raise ImageSourceError(f"cannot read the image file {str(path)!r}: {exc.strerror or exc}") from None


def _read_fileobj(obj: Any) -> tuple[bytes, str | None, str | None]:
    data = obj.read()
    name = getattr(obj, "name", None)
    name = os.path.basename(name) if isinstance(name, str) else None
    if isinstance(data, str):
        raise ImageSourceError("the file object was opened in text mode and returned str; open the image with 'rb'")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ImageSourceError(f"the file object's read() returned {type(data).__name__}, not bytes")
    return bytes(data), name, None


def _encode_pil(image: Image.Image) -> bytes:
    """A PIL image as PNG bytes (lossless); rendering re-encodes it smaller where a target needs it."""
    buf = io.BytesIO()
    im = image if image.mode in ("1", "L", "LA", "P", "RGB", "RGBA", "I;16") else image.convert("RGBA")
    im.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def is_http(src: str) -> bool:
    """Whether ``src`` is an ``http://`` or ``https://`` URL (the scheme in any case)."""
    return src[:8].lower().startswith(("http://", "https://"))
