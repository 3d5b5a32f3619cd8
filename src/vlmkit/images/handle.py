"""``ImageHandle``: one validated image, cheap to create, identified by its content; and the two ways
to make one, from bytes (sniffed and validated: :func:`image_from_bytes`) and from a ``gs://`` or
``s3://`` URI (:func:`reference_handle`). Reading whatever a user hands in is :mod:`~vlmkit.images.source`.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import mimetypes
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from PIL import Image

from vlmkit.errors import ImageFormatMismatchError, ImageSourceError, UnsupportedImageError
from vlmkit.images.grounding import Box, Point, draw
from vlmkit.images.policy import ImagePolicy
from vlmkit.images.probe import DEFAULT_MAX_PIXELS, image_summary, probe
from vlmkit.images.render import RenderedImage, original, render
from vlmkit.images.sniff import ImageFormat, describe_non_image, sniff_format

REFERENCE_SCHEMES = ("gs://", "s3://")


def content_identifier(data: bytes) -> str:
    """The identifier of image bytes: the same bytes always give the same identifier."""
    return hashlib.sha256(data).hexdigest()


def _extension(fmt: ImageFormat | None) -> str:
    if fmt is None:
        return ""
    return {ImageFormat.JPEG: ".jpg", ImageFormat.TIFF: ".tiff"}.get(fmt, f".{fmt.name.lower()}")


@dataclass(frozen=True, eq=False)
class ImageHandle:
    """An image that has been sniffed and validated, ready to be rendered for any target.

    ``width`` and ``height`` are as the image is meant to be seen (EXIF orientation applied).
    A *reference* handle (``gs://``, ``s3://``) carries no bytes: only providers that read such
    URIs themselves accept it, and its ``mime_type`` is the declared one.
    Two handles are equal when they hold the same bytes under the same name and source.
    """

    mime_type: str | None
    size_bytes: int | None
    width: int | None
    height: int | None
    frames: int = 1
    orientation: int = 1
    mode: str | None = None
    source: str | None = None
    """Where the image came from when that was a URL or URI (kept for providers that fetch URLs)."""
    _data: bytes | None = field(default=None, repr=False)
    _name: str | None = field(default=None, repr=False)
    _identifier: str | None = field(default=None, repr=False)

    @property
    def identifier(self) -> str:
        """The sha256 of the bytes (of the URI for a reference), computed on first use.

        Hashing costs about 0.6 ms per MB, so it is left until something needs the image's identity
        (a cache key, a file id): an image passed straight through to a provider never pays for it.
        """
        value = self._identifier
        if value is None:
            value = content_identifier(self._data if self._data is not None else (self.source or "").encode())
            object.__setattr__(self, "_identifier", value)
        return value

    @property
    def name(self) -> str:
        """The name given, or ``image-<identifier prefix>.<extension>``."""
        if self._name is not None:
            return self._name
        return f"image-{self.identifier[:12]}{_extension(self.format)}"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ImageHandle):
            return NotImplemented
        return (self.identifier, self.name, self.source) == (other.identifier, other.name, other.source)

    def __hash__(self) -> int:
        return hash(self.identifier)

    def __repr__(self) -> str:
        """One short line, never the bytes; the identity only once computed (a repr does not hash)."""
        parts = [repr(self._name)] if self._name is not None else []
        if self._data is None:
            parts += [self.mime_type or "unknown type", f"reference to {self.source}"]
        else:
            parts.append(image_summary(self.mime_type, self.width, self.height, self.size_bytes))
        if self._identifier is not None:
            parts.append(f"id {self._identifier[:12]}")
        return f"ImageHandle({', '.join(parts)})"

    @property
    def format(self) -> ImageFormat | None:
        return ImageFormat.from_mime(self.mime_type) if self.mime_type else None

    @property
    def is_reference(self) -> bool:
        """True for a ``gs://``/``s3://`` reference that carries no bytes."""
        return self._data is None

    @property
    def animated(self) -> bool:
        return self.frames > 1

    @property
    def data(self) -> bytes:
        """The original bytes, untouched."""
        if self._data is None:
            raise ImageSourceError(
                f"{self.source} is a reference without image bytes; only providers that read "
                "such URIs themselves (Vertex AI for gs://, Bedrock for s3://) can take it"
            )
        return self._data

    @cached_property
    def original(self) -> RenderedImage:
        """The original bytes as a :class:`RenderedImage` (their base64 and data URL computed once)."""
        return original(self)

    def render(self, policy: ImagePolicy | None) -> RenderedImage:
        """Bytes that satisfy ``policy``, changing as little as possible (cached).

        ``None`` gives the original bytes, whose base64 and data URL are then computed once.
        """
        return render(self, policy)

    def draw(self, found: Iterable[Box | Point], *, width: int | None = None) -> Image.Image:
        """This image upright at full size, with boxes and points (``prediction.boxes``,
        :func:`vlmkit.grounding.parse`) drawn on it: a new RGB PIL image, one colour per label."""
        return draw(self, found, width=width)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form that keeps the image's bytes and identity (no network needed to restore)."""
        out: dict[str, Any] = {
            "identifier": self.identifier,
            "name": self.name,
            "mime_type": self.mime_type,
            "source": self.source,
        }
        if self._data is not None:
            out["data"] = base64.b64encode(self._data).decode("ascii")
        return out

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> ImageHandle:
        """Rebuild a handle from :meth:`to_dict`, re-validating the bytes and checking the identifier."""
        try:
            name, identifier, data_b64 = obj["name"], obj["identifier"], obj.get("data")
        except (KeyError, TypeError):
            raise ImageSourceError(
                "a serialised image needs 'identifier', 'name' and 'data' (or 'source' for a reference)"
            ) from None
        if data_b64 is None:
            return reference_handle(str(obj.get("source")), name=name, format=obj.get("mime_type"))
        try:
            data = base64.b64decode(data_b64, validate=True)
        except (ValueError, TypeError):
            raise ImageSourceError(f"the serialised image {name!r} has invalid base64 data") from None
        handle = image_from_bytes(data, name)
        if handle.identifier != identifier:
            raise ImageSourceError(f"the serialised image {name!r} does not match its identifier: its data was changed")
        if obj.get("source"):
            handle = dataclasses.replace(handle, source=obj["source"])
        return handle


def image_from_bytes(
    data: bytes,
    name: str | None = None,
    *,
    format: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    source: str | None = None,
) -> ImageHandle:
    """Sniff and validate image bytes: the type comes from the bytes, never from a label."""
    declared = _declared_format(format)
    fmt = sniff_format(data)
    if fmt is None:
        found = describe_non_image(data)
        where = f" {name!r}" if name else ""
        raise UnsupportedImageError(
            f"the image{where} is not an image vlmkit reads: found {found}. "
            "Supported: JPEG, PNG, WebP, GIF, BMP, TIFF, HEIC/HEIF, AVIF"
        )
    if declared is not None and not _same_format(declared, fmt):
        raise ImageFormatMismatchError(
            f"format={format!r} was declared but the bytes are {fmt.mime_type}; "
            f"drop format= to use the real type, or pass the right file",
            declared=declared.mime_type,
            actual=fmt.mime_type,
        )
    info = probe(data, fmt, max_pixels=max_pixels)
    width, height = info.display_size
    return ImageHandle(
        mime_type=fmt.mime_type,
        size_bytes=len(data),
        width=width,
        height=height,
        frames=info.frames,
        orientation=info.orientation,
        mode=info.mode,
        source=source,
        _data=data,
        _name=name or None,
    )


def reference_handle(uri: str, *, name: str | None = None, format: str | None = None) -> ImageHandle:
    """A handle for a ``gs://``/``s3://`` URI: no bytes, so ``format`` (or the extension) is taken as given."""
    if not uri.startswith(REFERENCE_SCHEMES):
        raise ImageSourceError(f"{uri!r} is not a gs:// or s3:// reference")
    declared = _declared_format(format)
    if declared is None:
        guessed = mimetypes.guess_type(uri)[0]
        declared = ImageFormat.from_mime(guessed) if guessed else None
    return ImageHandle(
        mime_type=declared.mime_type if declared else None,
        size_bytes=None,
        width=None,
        height=None,
        source=uri,
        _name=name or name_from_url(uri) or uri,
    )


def _declared_format(format: str | None) -> ImageFormat | None:
    if format is None:
        return None
    declared = ImageFormat.from_mime(format)
    if declared is None:
        raise UnsupportedImageError(
            f"format={format!r} is not an image type vlmkit reads; use a MIME type such as "
            "'image/jpeg', 'image/png', 'image/webp', 'image/gif', 'image/heic' or 'image/avif'"
        )
    return declared


def _same_format(declared: ImageFormat, actual: ImageFormat) -> bool:
    heif_family = {ImageFormat.HEIC, ImageFormat.HEIF}
    return declared is actual or (declared in heif_family and actual in heif_family)


def name_from_url(url: str) -> str | None:
    """The last segment of a URL's path, unquoted (None when empty): a default name for what it names."""
    tail = urllib.parse.urlparse(url).path.rsplit("/", 1)[-1]
    return urllib.parse.unquote(tail) or None
