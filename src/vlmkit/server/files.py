"""Uploaded images: sniffed and validated once on upload, then referred to by id in any number of chats.

The store keeps each image's bytes (as an :class:`~vlmkit.images.ImageHandle`) in memory, bounded
by a total size: an upload past it is refused (413), nothing is evicted behind a client's back.
Objects are OpenAI's ``FileObject`` shape, plus what vlmkit learned from the bytes.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

from vlmkit.images import ImageHandle
from vlmkit.server.errors import APIError

FILE_ID = re.compile(r"^file-[0-9a-f]{24}$")


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
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._files: dict[str, StoredFile] = {}
        self._bytes = 0
        self._lock = threading.Lock()

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
        return stored

    def get(self, file_id: str) -> StoredFile:
        stored = self._files.get(file_id)
        if stored is None:
            raise APIError(f"no file with id {file_id!r} on this server", 404, code="file_not_found")
        return stored

    def find(self, file_id: str) -> StoredFile | None:
        return self._files.get(file_id)

    def delete(self, file_id: str) -> StoredFile:
        with self._lock:
            stored = self._files.pop(file_id, None)
            if stored is None:
                raise APIError(f"no file with id {file_id!r} on this server", 404, code="file_not_found")
            self._bytes -= stored.image.size_bytes or 0
        return stored

    def list(self) -> list[StoredFile]:
        return sorted(self._files.values(), key=lambda f: f.created_at)

    @property
    def used_bytes(self) -> int:
        return self._bytes
