"""``ImageHandle``: one validated image, cheap to create, identified by its content."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from vlmkit.errors import ImageSourceError
from vlmkit.images.sniff import ImageFormat

if TYPE_CHECKING:
    from vlmkit.images.policy import ImagePolicy
    from vlmkit.images.render import RenderedImage


def content_identifier(data: bytes) -> str:
    """The identifier of image bytes: the same bytes always give the same identifier."""
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class ImageHandle:
    """An image that has been sniffed and validated, ready to be rendered for any target.

    ``width`` and ``height`` are as the image is meant to be seen (EXIF orientation applied).
    A *reference* handle (``gs://``, ``s3://``) carries no bytes: only providers that read such
    URIs themselves accept it, and its ``mime_type`` is the declared one.
    """

    identifier: str
    name: str
    mime_type: str | None
    size_bytes: int | None
    width: int | None
    height: int | None
    frames: int = 1
    orientation: int = 1
    mode: str | None = None
    source: str | None = None
    """Where the image came from when that was a URL or URI (kept for providers that fetch URLs)."""
    _data: bytes | None = field(default=None, repr=False, compare=False)

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

    def render(self, policy: ImagePolicy | None) -> RenderedImage:
        """Bytes that satisfy ``policy``, changing as little as possible (cached).

        ``None`` gives the original bytes, whose base64 and data URL are then computed once.
        """
        from vlmkit.images.render import render

        return render(self, policy)

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
        from vlmkit.images.source import prepare_image, reference_handle

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
        handle = prepare_image(data, name=name)
        if handle.identifier != identifier:
            raise ImageSourceError(f"the serialised image {name!r} does not match its identifier: its data was changed")
        if obj.get("source"):
            handle = dataclasses.replace(handle, source=obj["source"])
        return handle
