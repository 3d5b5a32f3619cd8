"""Uploaded images, PDFs and videos: sniffed and validated once on upload, then referred to by id in
any number of chats.

An image is kept as an :class:`~vlmkit.images.ImageHandle`. A PDF is opened and its first page
rendered, a video's first frame decoded, before an id is given out (so a damaged or encrypted file is
a 400 at upload time); their bytes are kept, and a chat that names them reads them as any other
source's bytes: the PDF's pages rendered, the video's frames sampled for that request
(:mod:`vlmkit.images.resolve`). Anything else is refused, saying what is taken.

The store keeps each file's bytes in memory, bounded
by a total size: an upload past it is refused (413), nothing is evicted behind a client's back.
With a ``directory`` (``files_dir`` in the config) every upload is also written there, and the
store reads them back when the server starts again, so ids given out stay valid across restarts.
Objects are OpenAI's ``FileObject`` shape, plus what vlmkit learned from the bytes.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlmkit._files import write_whole
from vlmkit.errors import InvalidVideoError, UnsupportedImageError, VlmkitError
from vlmkit.images import ImageHandle, image_from_bytes
from vlmkit.images.document import Document, is_pdf, prepare_document
from vlmkit.images.handle import content_identifier
from vlmkit.images.probe import DEFAULT_MAX_PIXELS
from vlmkit.images.sniff import describe_non_image, sniff_format
from vlmkit.images.video import Video, prepare_video
from vlmkit.server.errors import APIError

log = logging.getLogger("vlmkit.server")

FILE_ID = re.compile(r"^file-[0-9a-f]{24}$")
"""The ids this server gives out."""

_ID_LIKE = re.compile(r"^file[-_][A-Za-z0-9_-]{1,100}$")


def looks_like_file_id(value: str) -> bool:
    """Whether ``value`` was meant as the id of an upload (this server's, or one in OpenAI's ``file-...``
    style), so that a reference to no file is answered "no such file", not "not a URL"."""
    return _ID_LIKE.match(value) is not None


Upload = ImageHandle | Document | Video
"""What an upload's bytes were read as (:func:`read_upload`)."""


def read_upload(data: bytes, filename: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> Upload:
    """An upload, checked before an id is given out: an image (sniffed and probed), a PDF (opened, its
    first page rendered) or a video or animation (its first frame decoded); anything else is an
    :class:`~vlmkit.errors.UnsupportedImageError` saying what it is and what is taken."""
    if is_pdf(data[:1024]):
        return prepare_document(data, filename, pages=1, max_pixels=max_pixels)
    if sniff_format(data) is not None:
        return image_from_bytes(data, filename, max_pixels=max_pixels)
    try:
        return prepare_video(data, filename, frames=1)
    except InvalidVideoError:
        raise UnsupportedImageError(
            f"{filename!r} is neither an image, a PDF nor a video: found {describe_non_image(data).split(';')[0]}. "
            "Upload an image (JPEG, PNG, WebP, GIF, BMP, TIFF, HEIC/HEIF, AVIF), a PDF, "
            "or a video (MP4, WebM, MOV, ...)"
        ) from None


@dataclass(frozen=True)
class StoredFile:
    id: str
    filename: str
    purpose: str
    created_at: int
    data: bytes = field(repr=False)
    mime_type: str
    image: ImageHandle | None = None
    """The image; None for a PDF or a video, whose bytes a chat reads (pages rendered, frames sampled)."""
    facts: dict[str, Any] = field(default_factory=dict)
    """What the upload's check learned: a PDF's ``pages``, a video's size and ``duration``."""

    @classmethod
    def of(cls, upload: Upload, id: str, filename: str, purpose: str, created_at: int) -> StoredFile:
        if isinstance(upload, ImageHandle):
            return cls(id, filename, purpose, created_at, upload.data, upload.mime_type or "", upload)
        if isinstance(upload, Document):
            facts: dict[str, Any] = {"pages": upload.page_count}
            return cls(id, filename, purpose, created_at, upload.data, upload.mime_type, facts=facts)
        facts = {"width": upload.width, "height": upload.height, "duration": round(upload.duration, 3)}
        return cls(id, filename, purpose, created_at, upload.data, upload.mime_type, facts=facts)

    def to_dict(self) -> dict[str, Any]:
        image = self.image
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.data),
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "status_details": None,
            "mime_type": self.mime_type,
            "width": image.width if image is not None else None,
            "height": image.height if image is not None else None,
            "identifier": image.identifier if image is not None else content_identifier(self.data),
            **self.facts,
        }


class FileStore:
    def __init__(self, max_bytes: int, directory: str | Path | None = None) -> None:
        self.max_bytes = max_bytes
        self.directory = Path(directory).expanduser() if directory is not None else None
        self._files: dict[str, StoredFile] = {}
        self._bytes = 0
        self._lock = threading.Lock()
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._load(self.directory)

    def add(self, upload: Upload, filename: str, purpose: str) -> StoredFile:
        size = len(upload.data)
        with self._lock:
            if self._bytes + size > self.max_bytes:
                raise APIError(
                    f"the file store is full ({self._bytes:,} of {self.max_bytes:,} bytes used); "
                    "delete files you no longer need with DELETE /v1/files/{id}",
                    413,
                    code="file_store_full",
                )
            stored = StoredFile.of(upload, f"file-{secrets.token_hex(12)}", filename, purpose, int(time.time()))
            self._files[stored.id] = stored
            self._bytes += size
        if self.directory is not None:
            try:
                _write(self.directory, stored)
            except OSError as exc:
                self._forget(stored.id)
                self._unlink(stored.id)
                message = f"the upload could not be saved on the server: {exc}"
                raise APIError(message, 507, code="storage_error") from None
        return stored

    def get(self, file_id: str) -> StoredFile:
        stored = self._files.get(file_id)
        if stored is None:
            raise _not_found(file_id)
        return stored

    def find(self, file_id: str) -> StoredFile | None:
        return self._files.get(file_id)

    def delete(self, file_id: str) -> StoredFile:
        stored = self._forget(file_id)
        if stored is None:
            raise _not_found(file_id)
        self._unlink(file_id)
        return stored

    def _unlink(self, file_id: str) -> None:
        if self.directory is not None:
            for path in (self.directory / f"{file_id}.json", self.directory / file_id):  # the record first
                path.unlink(missing_ok=True)

    def _forget(self, file_id: str) -> StoredFile | None:
        with self._lock:
            stored = self._files.pop(file_id, None)
            if stored is not None:
                self._bytes -= len(stored.data)
        return stored

    def _load(self, directory: Path) -> None:
        """Read back the uploads of earlier runs; a damaged one is skipped with a warning, left on disk."""
        for record in sorted(directory.glob("file-*.json")):
            try:
                meta = json.loads(record.read_text("utf-8"))
                file_id = meta["id"]
                if not isinstance(file_id, str) or not FILE_ID.match(file_id) or record.stem != file_id:
                    raise ValueError(f"the record names the id {file_id!r}")
                data = (directory / file_id).read_bytes()
                upload = read_upload(data, meta["filename"])
                stored = StoredFile.of(upload, file_id, meta["filename"], meta["purpose"], int(meta["created_at"]))
            except (OSError, ValueError, KeyError, TypeError, VlmkitError) as exc:
                log.warning("skipping the stored upload %s: %s", record, exc)
                continue
            self._files[file_id] = stored
            self._bytes += len(stored.data)

    def list(self) -> list[StoredFile]:
        return sorted(self._files.values(), key=lambda f: f.created_at)

    @property
    def used_bytes(self) -> int:
        return self._bytes


def _not_found(file_id: str) -> APIError:
    return APIError(f"no file with id {file_id!r} on this server", 404, code="file_not_found")


def _write(directory: Path, stored: StoredFile) -> None:
    """The bytes, then the record that makes them an upload: each written whole, then renamed into place."""
    record = {"id": stored.id, "filename": stored.filename, "purpose": stored.purpose, "created_at": stored.created_at}
    for path, content in (
        (directory / stored.id, stored.data),
        (directory / f"{stored.id}.json", json.dumps(record).encode("utf-8")),
    ):
        write_whole(path, content)
