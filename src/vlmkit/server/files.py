"""Uploaded images: sniffed and validated once on upload, then referred to by id in any number of chats.

The store keeps each image's bytes (as an :class:`~vlmkit.images.ImageHandle`) in memory, bounded
by a total size: an upload past it is refused (413), nothing is evicted behind a client's back.
With a ``directory`` (``files_dir`` in the config) every upload is also written there, and the
store reads them back when the server starts again, so ids given out stay valid across restarts.
Objects are OpenAI's ``FileObject`` shape, plus what vlmkit learned from the bytes.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlmkit.errors import VlmkitError
from vlmkit.images import ImageHandle, image_from_bytes
from vlmkit.server.errors import APIError

log = logging.getLogger("vlmkit.server")

FILE_ID = re.compile(r"^file-[0-9a-f]{24}$")
"""The ids this server gives out."""

_ID_LIKE = re.compile(r"^file[-_][A-Za-z0-9_-]{1,100}$")


def looks_like_file_id(value: str) -> bool:
    """Whether ``value`` was meant as the id of an upload (this server's, or one in OpenAI's ``file-...``
    style), so that a reference to no file is answered "no such file", not "not a URL"."""
    return _ID_LIKE.match(value) is not None


@dataclass(frozen=True)
class StoredFile:
    id: str
    filename: str
    purpose: str
    created_at: int
    image: ImageHandle

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": self.image.size_bytes or 0,
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "status_details": None,
            "mime_type": self.image.mime_type,
            "width": self.image.width,
            "height": self.image.height,
            "identifier": self.image.identifier,
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

    def add(self, image: ImageHandle, filename: str, purpose: str) -> StoredFile:
        size = image.size_bytes or 0
        with self._lock:
            if self._bytes + size > self.max_bytes:
                raise APIError(
                    f"the file store is full ({self._bytes:,} of {self.max_bytes:,} bytes used); "
                    "delete files you no longer need with DELETE /v1/files/{id}",
                    413,
                    code="file_store_full",
                )
            stored = StoredFile(f"file-{secrets.token_hex(12)}", filename, purpose, int(time.time()), image)
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
                self._bytes -= stored.image.size_bytes or 0
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
                image = image_from_bytes(data, meta["filename"])
                stored = StoredFile(file_id, meta["filename"], meta["purpose"], int(meta["created_at"]), image)
            except (OSError, ValueError, KeyError, TypeError, VlmkitError) as exc:
                log.warning("skipping the stored upload %s: %s", record, exc)
                continue
            self._files[file_id] = stored
            self._bytes += image.size_bytes or 0

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
        (directory / stored.id, stored.image.data),
        (directory / f"{stored.id}.json", json.dumps(record).encode("utf-8")),
    ):
        partial = path.with_name(path.name + ".partial")
        try:
            partial.write_bytes(content)
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)  # gone after the rename; left only by a failed write
