"""Stored responses, for ``previous_response_id``: each one's whole conversation, so a follow-up sends
only its new input (no image again) and a local model finds the earlier turn's prefix in its cache.

In memory, the most recent conversations, their images read (a follow-up resolves nothing again):
at most :data:`MAX_KEPT` of them holding at most :data:`MAX_KEPT_BYTES` of images, the oldest
forgotten first. Where the server has a data directory (``files_dir``), each is also written to
``<files_dir>/responses/<id>.json`` as chat messages, images as data URLs, so a follow-up still
works after a restart (its images are then read again from the file).
"""

from __future__ import annotations

import json
import re
import threading
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path

from vlmkit.chat import Chat, ChatMessage, ImagePart
from vlmkit.stream import call_in_thread
from vlmkit.wire.openai_chat import messages_from_chat, to_chat

MAX_KEPT = 256
"""Conversations kept in memory; the oldest is forgotten first (it stays on disk where there is one)."""
MAX_KEPT_BYTES = 128 * 1024 * 1024
"""Bytes of images the kept conversations may hold (an image in several of them counts in each)."""

_ID = re.compile(r"^resp_[0-9a-f]{48}$")


class ResponseStore:
    def __init__(self, directory: str | Path | None, max_kept: int = MAX_KEPT, max_bytes: int = MAX_KEPT_BYTES) -> None:
        self.directory = Path(directory).expanduser() / "responses" if directory is not None else None
        self.max_kept = max_kept
        self.max_bytes = max_bytes
        self._kept: OrderedDict[str, tuple[Chat, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    async def put(self, response_id: str, chat: Chat) -> None:
        chat = _lean(chat)
        size = sum(p.image.size_bytes or 0 for m in chat.messages for p in m.content if isinstance(p, ImagePart))
        with self._lock:
            self._kept[response_id] = (chat, size)
            self._bytes += size
            while self._kept and (len(self._kept) > self.max_kept or self._bytes > self.max_bytes):
                _, (_, gone) = self._kept.popitem(last=False)
                self._bytes -= gone
        if self.directory is not None:
            await call_in_thread(lambda: self._write(response_id, chat), name="vlmkit-server-store")

    async def get(self, response_id: str) -> Chat | None:
        """The conversation of ``response_id`` (images read, or as references when it came from disk)."""
        with self._lock:
            kept = self._kept.get(response_id)
            if kept is not None:
                self._kept.move_to_end(response_id)
                return kept[0]
        if self.directory is None or not _ID.match(response_id):
            return None
        return await call_in_thread(lambda: self._read(response_id), name="vlmkit-server-store")

    def _write(self, response_id: str, chat: Chat) -> None:
        assert self.directory is not None
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{response_id}.json"
        part = path.with_suffix(".part")
        part.write_text(json.dumps({"messages": messages_from_chat(chat)}))
        part.replace(path)

    def _read(self, response_id: str) -> Chat | None:
        assert self.directory is not None
        try:
            data = json.loads((self.directory / f"{response_id}.json").read_text())
        except (OSError, ValueError):
            return None
        return to_chat(data["messages"])


def _lean(chat: Chat) -> Chat:
    """``chat`` with each image's handle copied without what was made of it for this turn (its base64 and
    data URL, a rendering): the copy shares the image's bytes and identity, so a follow-up still finds
    the engine's caches, and a kept image costs its bytes only."""
    out = Chat()
    for m in chat.messages:
        parts = [replace(p, image=replace(p.image)) if isinstance(p, ImagePart) else p for p in m.content]
        out.messages.append(ChatMessage(m.role, parts))
    return out
