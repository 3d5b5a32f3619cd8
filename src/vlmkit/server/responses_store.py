"""Stored responses, for ``previous_response_id``: each one's whole conversation, so a follow-up sends
only its new input (no image again) and a local model finds the earlier turn's prefix in its cache.

In memory, the most recent conversations, their images read (a follow-up resolves nothing again):
at most :data:`MAX_KEPT` of them holding at most :data:`MAX_KEPT_BYTES` of images, the oldest
forgotten first. An image's bytes are held once however many kept conversations show it (a
conversation continued with ``previous_response_id`` shows its earlier turns' images again, and a
client that resends its whole conversation sends them again): each new image costs the server
memory it has to fault in, so an image already held costs nothing more.

Where the server has a data directory (``files_dir``), each conversation is also written to
``<files_dir>/responses/<id>.json`` as chat messages, before the response is answered, so a
follow-up still works after a restart. An image is written once, its bytes as they came, to
``<files_dir>/responses/images/<identifier>`` (the sha256 that names the image everywhere in
vlmkit), and the messages name it there: a turn writes its new images and a few kilobytes, not
every image of the conversation again as base64 in JSON. Read back, an image is a data URL again,
to be read by the server's rules as any other.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from vlmkit._files import write_whole
from vlmkit.chat import Chat, ChatMessage, ImagePart
from vlmkit.stream import call_in_thread
from vlmkit.wire.openai_chat import messages_from_chat, to_chat

MAX_KEPT = 256
"""Conversations kept in memory; the oldest is forgotten first (it stays on disk where there is one)."""
MAX_KEPT_BYTES = 128 * 1024 * 1024
"""Bytes of images the kept conversations may hold (an image in several of them counts once)."""

_ID = re.compile(r"^resp_[0-9a-f]{48}$")
_IMAGE_ID = re.compile(r"^[0-9a-f]{64}$")


class ResponseStore:
    def __init__(self, directory: str | Path | None, max_kept: int = MAX_KEPT, max_bytes: int = MAX_KEPT_BYTES) -> None:
        self.directory = Path(directory).expanduser() / "responses" if directory is not None else None
        self.max_kept = max_kept
        self.max_bytes = max_bytes
        self._kept: OrderedDict[str, Chat] = OrderedDict()
        self._images = _HeldImages()
        self._lock = threading.Lock()
        self._made = False

    async def put(self, response_id: str, chat: Chat) -> None:
        with self._lock:
            chat = _lean(chat, self._images)
            gone = self._kept.pop(response_id, None)
            if gone is not None:
                self._images.release(gone)
            self._kept[response_id] = chat
            while self._kept and (len(self._kept) > self.max_kept or self._images.bytes > self.max_bytes):
                _, gone = self._kept.popitem(last=False)
                self._images.release(gone)
        if self.directory is not None:
            await call_in_thread(lambda: self._write(response_id, chat), name="vlmkit-server-store")

    async def get(self, response_id: str) -> Chat | None:
        """The conversation of ``response_id`` (images read, or as data URLs when it came from disk)."""
        with self._lock:
            kept = self._kept.get(response_id)
            if kept is not None:
                self._kept.move_to_end(response_id)
                return kept
        if self.directory is None or not _ID.match(response_id):
            return None
        return await call_in_thread(lambda: self._read(response_id), name="vlmkit-server-store")

    @property
    def image_bytes(self) -> int:
        """Bytes of images the kept conversations hold, each image counted once."""
        return self._images.bytes

    def _write(self, response_id: str, chat: Chat) -> None:
        assert self.directory is not None
        images = self.directory / "images"
        if not self._made:
            images.mkdir(parents=True, exist_ok=True)
            self._made = True

        def named(part: ImagePart) -> dict[str, Any]:
            handle = part.image
            if handle.is_reference:
                return {"url": handle.source or "", "format": handle.mime_type}
            identifier = handle.identifier  # hashed here, off the event loop, once for bytes held once
            with self._lock:
                self._images.identified(handle.data, identifier)
            path = images / identifier
            if not path.exists():  # written by an earlier turn, or by another conversation showing it
                write_whole(path, handle.data)
            return {"file_id": identifier, "format": handle.mime_type}

        written = json.dumps({"messages": messages_from_chat(chat, image=named)})  # its images first
        write_whole(self.directory / f"{response_id}.json", written.encode())

    def _read(self, response_id: str) -> Chat | None:
        assert self.directory is not None
        try:
            data = json.loads((self.directory / f"{response_id}.json").read_text())
            messages = data["messages"]
            for message in messages:
                for part in message["content"] if isinstance(message.get("content"), list) else ():
                    image = part.get("image_url") if isinstance(part, dict) else None
                    if isinstance(image, dict) and "file_id" in image:
                        part["image_url"] = self._data_url(image)
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return to_chat(messages)

    def _data_url(self, image: dict[str, Any]) -> dict[str, Any]:
        """A stored image's reference as the data URL of its bytes (its detail and format kept)."""
        assert self.directory is not None
        name = image.pop("file_id")
        if not isinstance(name, str) or not _IMAGE_ID.match(name):  # never a path out of the store
            raise ValueError(f"not a stored image: {name!r}")
        data = base64.b64encode((self.directory / "images" / name).read_bytes()).decode("ascii")
        return {"url": f"data:{image.get('format') or 'application/octet-stream'};base64,{data}", **image}


class _HeldImages:
    """The image bytes of the kept conversations, each held once, with how many kept images show it.

    An image is found by a cheap key (its size and a few of its bytes) and then compared whole; the
    same bytes object (an earlier turn's image, kept with its conversation) compares at no cost.
    """

    def __init__(self) -> None:
        self._held: dict[tuple[int, bytes, bytes, bytes], list[_Held]] = {}
        self.bytes = 0

    def hold(self, data: bytes) -> _Held:
        """The held bytes equal to ``data`` (``data`` itself if none were), counted once more."""
        entries = self._held.setdefault(_key(data), [])
        for held in entries:
            if held.data is data or held.data == data:
                held.shown += 1
                return held
        entries.append(_Held(data))
        self.bytes += len(data)
        return entries[-1]

    def identified(self, data: bytes, identifier: str) -> None:
        """Remember the identifier of held ``data``, for the next image with the same bytes."""
        for held in self._held.get(_key(data), ()):
            if held.data is data:
                held.identifier = identifier

    def release(self, chat: Chat) -> None:
        """Count ``chat``'s images (each held by :meth:`hold`) once less; forget those no kept chat shows."""
        for data in _image_data(chat):
            key = _key(data)
            entries = self._held[key]
            held = next(h for h in entries if h.data is data)
            held.shown -= 1
            if held.shown == 0:
                entries.remove(held)
                self.bytes -= len(data)
                if not entries:
                    del self._held[key]


@dataclass(eq=False)
class _Held:
    data: bytes
    shown: int = 1
    identifier: str | None = None
    """The bytes' sha256, once the disk writer has computed it."""


def _key(data: bytes) -> tuple[int, bytes, bytes, bytes]:
    middle = len(data) // 2
    return len(data), data[:32], data[middle : middle + 32], data[-32:]


def _image_data(chat: Chat) -> list[bytes]:
    return [
        p.image.data for m in chat.messages for p in m.content if isinstance(p, ImagePart) and not p.image.is_reference
    ]


def _lean(chat: Chat, images: _HeldImages) -> Chat:
    """``chat`` with each image's handle copied without what was made of it for this turn (its base64 and
    data URL, a rendering), its bytes the ones ``images`` holds: the copy keeps the image's identity,
    so a follow-up still finds the engine's caches, and a kept image costs its bytes once."""
    out = Chat()
    for m in chat.messages:
        out.messages.append(
            ChatMessage(m.role, [_lean_part(p, images) if isinstance(p, ImagePart) else p for p in m.content])
        )
    return out


def _lean_part(part: ImagePart, images: _HeldImages) -> ImagePart:
    handle = part.image
    if handle.is_reference:
        return replace(part, image=replace(handle))
    held = images.hold(handle.data)
    if held.identifier is None:
        return replace(part, image=replace(handle, _data=held.data))
    return replace(part, image=replace(handle, _data=held.data, _identifier=held.identifier))
