"""Stored responses, for ``previous_response_id``: each one's whole conversation, so a follow-up sends
only its new input (no image again) and a local model finds the earlier turn's prefix in its cache.

In memory, the most recent :data:`MAX_KEPT` conversations, their images read (a follow-up resolves
nothing again). Where the server has a data directory (``files_dir``), each is also written to
``<files_dir>/responses/<id>.json`` as chat messages, images as data URLs, so a follow-up still
works after a restart (its images are then read again from the file).
"""

from __future__ import annotations

import json
import re
import threading
from collections import OrderedDict
from pathlib import Path

from vlmkit.chat import Chat
from vlmkit.stream import call_in_thread
from vlmkit.wire.openai_chat import messages_from_chat, to_chat

MAX_KEPT = 256
"""Conversations kept in memory; the oldest is forgotten first (it stays on disk where there is one)."""

_ID = re.compile(r"^resp_[0-9a-f]{48}$")


class ResponseStore:
    def __init__(self, directory: str | Path | None, max_kept: int = MAX_KEPT) -> None:
        self.directory = Path(directory).expanduser() / "responses" if directory is not None else None
        self.max_kept = max_kept
        self._kept: OrderedDict[str, Chat] = OrderedDict()
        self._lock = threading.Lock()

    async def put(self, response_id: str, chat: Chat) -> None:
        with self._lock:
            self._kept[response_id] = chat
            self._kept.move_to_end(response_id)
            while len(self._kept) > self.max_kept:
                self._kept.popitem(last=False)
        if self.directory is not None:
            await call_in_thread(lambda: self._write(response_id, chat), name="vlmkit-server-store")

    async def get(self, response_id: str) -> Chat | None:
        """The conversation of ``response_id`` (images read, or as references when it came from disk)."""
        with self._lock:
            chat = self._kept.get(response_id)
            if chat is not None:
                self._kept.move_to_end(response_id)
                return chat
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
