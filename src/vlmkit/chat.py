"""The chat history: messages whose parts are text, images, and image references not read yet.

A :class:`Chat` holds messages whose content is :class:`TextPart`, :class:`ImagePart` (an
:class:`~vlmkit.images.ImageHandle`: bytes sniffed and validated) and :class:`ImageRef` (an image
named in a request, by URL, path, data URL or upload id, that nothing has read yet). Images keep
their identity (content identifier) through copies and JSON, so a backend can recognise an image it
has already encoded.

This module is pure values: nothing here reads a file, fetches a URL or decodes an image. OpenAI's
messages are read into a Chat, and written from one, by :mod:`vlmkit.wire.openai_chat` (the layer
above, built on these values: ``to_chat``, ``chat_from_history``, ``messages_from_chat``), which
makes every image it reads a reference; reading the references is :mod:`vlmkit.images.resolve`,
the only image I/O, and :meth:`Chat.with_images` puts the handles in.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from vlmkit._types import Detail
from vlmkit.errors import InvalidMessageError, VlmkitError
from vlmkit.images import ImageHandle
from vlmkit.images.document import Document
from vlmkit.images.video import Video

__all__ = [
    "ROLES",
    "Chat",
    "ChatMessage",
    "Detail",
    "ImagePart",
    "ImageRef",
    "MediaPart",
    "Part",
    "Role",
    "TextPart",
]

Role = Literal["system", "user", "assistant"]
ROLES: tuple[Role, ...] = ("system", "user", "assistant")


@dataclass(frozen=True)
class TextPart:
    text: str


@dataclass(frozen=True)
class ImagePart:
    image: ImageHandle
    detail: Detail | None = None


@dataclass(frozen=True)
class ImageRef:
    """An image named in a request but not read yet.

    ``url`` is what the request said: an ``http(s)://`` URL, a ``data:`` URL, base64 text, a local
    path, a ``gs://``/``s3://`` URI, or (``file_id``) the id of an image uploaded to a vlmkit server.
    ``format`` is the MIME type the request declared (checked against the bytes once there are
    bytes); ``location`` is where the part was, ``messages[i].content[j]``, for error messages.
    """

    url: str
    detail: Detail | None = None
    format: str | None = None
    location: str = ""
    file_id: bool = False


@dataclass(frozen=True)
class MediaPart:
    """A PDF (from ``prepare_document``) or a video (from ``prepare_video``): sent as the file itself to
    a provider that reads such files and takes this one, and everywhere else as images
    (:attr:`as_images`): a document's pages, each after ``"Page N:"``, a video's frames, each after
    its time (``"Frame at 0:01.5:"``)."""

    media: Document | Video
    detail: Detail | None = None

    @property
    def as_images(self) -> list[TextPart | ImagePart]:
        """The media as a model that reads only images gets it: texts and images, in order."""
        return [TextPart(p) if isinstance(p, str) else ImagePart(p, self.detail) for p in self.media.interleaved()]


Part = TextPart | ImagePart | ImageRef | MediaPart


@dataclass
class ChatMessage:
    role: Role
    content: list[Part] = field(default_factory=list)

    @property
    def flat_content(self) -> list[TextPart | ImagePart | ImageRef]:
        """The content with each document or video as its images: what a model that reads only images is sent."""
        out: list[TextPart | ImagePart | ImageRef] = []
        for p in self.content:
            if isinstance(p, MediaPart):
                out += p.as_images
            else:
                out.append(p)
        return out

    @property
    def text(self) -> str:
        """The message's text parts joined together."""
        return "".join(p.text for p in self.content if isinstance(p, TextPart))

    @property
    def images(self) -> list[ImageHandle]:
        """The images read, a document's pages included."""
        return [p.image for p in self.flat_content if isinstance(p, ImagePart)]

    @property
    def image_refs(self) -> list[ImageRef]:
        return [p for p in self.content if isinstance(p, ImageRef)]


class _HasContent(Protocol):
    @property
    def content(self) -> str: ...


class Chat:
    """A conversation: an optional system prompt, then user and assistant turns.

    ``Chat("You are terse.")`` starts with a system prompt.
    """

    def __init__(self, initial_prompt: str | None = None) -> None:
        self.messages: list[ChatMessage] = []
        if initial_prompt is not None:
            self.add_system_prompt(initial_prompt)

    # --- building ----------------------------------------------------------------------------

    def add_system_prompt(self, prompt: str) -> ChatMessage:
        return self._add("system", _check_text(prompt, "the system prompt"), ())

    def add_user_message(
        self,
        content: str,
        *,
        images: Iterable[ImageHandle | Document | Video] = (),
        detail: Detail | None = None,
    ) -> ChatMessage:
        """Add a user turn: text, then the images (handles from ``prepare_image``).

        A document (from ``prepare_document``) or a video (from ``prepare_video``) is a
        :class:`MediaPart`: the file itself for a provider that reads it, else its pages or frames.
        """
        return self._add("user", _check_text(content, "the user message"), images, detail)

    def add_assistant_response(self, response: str | _HasContent) -> ChatMessage:
        """Add an assistant turn: a string, or a prediction result (its ``content``)."""
        text = response if isinstance(response, str) else getattr(response, "content", None)
        return self._add("assistant", _check_text(text, "the assistant response"), ())

    def append(self, message: ChatMessage) -> None:
        self.messages.append(message)

    def _add(
        self, role: Role, text: str, images: Iterable[ImageHandle | Document | Video], detail: Detail | None = None
    ) -> ChatMessage:
        parts: list[Part] = [TextPart(text)] if text else []
        for i, image in enumerate(images):
            if isinstance(image, (Document, Video)):
                parts.append(MediaPart(image, detail))
                continue
            if inspect.isawaitable(image):
                raise InvalidMessageError(
                    f"images[{i}] is a {type(image).__name__}, not an image handle: "
                    "await client.files.prepare_image(...) first (the async client's methods are coroutines)"
                )
            if not isinstance(image, ImageHandle):
                raise InvalidMessageError(
                    f"images[{i}] is a {type(image).__name__}, not an image handle; "
                    "pass the result of vk.prepare_image(...)"
                )
            parts.append(ImagePart(image, detail))
        message = ChatMessage(role, parts)
        self.messages.append(message)
        return message

    # --- reading -----------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.messages)

    def __iter__(self) -> Iterator[ChatMessage]:
        return iter(self.messages)

    def __repr__(self) -> str:
        unread = len(self.image_refs)
        return (
            f"Chat({len(self.messages)} messages, {len(self.images)} images{f', {unread} not read' if unread else ''})"
        )

    @property
    def images(self) -> list[ImageHandle]:
        """The images read so far (see :attr:`image_refs` for the ones not read yet)."""
        return [img for m in self.messages for img in m.images]

    @property
    def image_refs(self) -> list[ImageRef]:
        """The images named but not read yet, in order (:func:`vlmkit.images.resolve.resolve_images` reads them)."""
        return [ref for m in self.messages for ref in m.image_refs]

    def copy(self) -> Chat:
        """An independent copy (images are immutable and shared)."""
        new = Chat()
        new.messages = [ChatMessage(m.role, list(m.content)) for m in self.messages]
        return new

    def with_images(self, images: Mapping[ImageRef, ImageHandle | Document]) -> Chat:
        """This chat with each reference in ``images`` replaced by its handle (a PDF's document: a
        :class:`MediaPart`); other references stay.

        Returns ``self`` when there is nothing to replace, else a copy (the parts are immutable).
        """
        if not images:
            return self
        new = Chat()
        new.messages = [
            ChatMessage(
                m.role,
                [_read_part(images[p], p.detail) if isinstance(p, ImageRef) and p in images else p for p in m.content],
            )
            for m in self.messages
        ]
        return new

    # --- JSON --------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form that keeps every image's bytes and identity (a document: its pages)."""
        return {
            "messages": [{"role": m.role, "content": [_part_to_dict(p) for p in m.flat_content]} for m in self.messages]
        }

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any]) -> Chat:
        chat = cls()
        try:
            raw_messages = obj["messages"]
        except (KeyError, TypeError):
            raise InvalidMessageError("a serialised chat needs a 'messages' list") from None
        for i, raw in enumerate(raw_messages):
            try:
                role = _role(raw.get("role"))
                chat.messages.append(ChatMessage(role, [_part_from_dict(p) for p in raw.get("content", [])]))
            except VlmkitError as exc:
                exc.add_location(f"messages[{i}]")
                raise
        return chat

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> Chat:
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidMessageError(f"the chat JSON is invalid: {exc}") from None
        return cls.from_dict(obj)


def _read_part(read: ImageHandle | Document, detail: Detail | None) -> ImagePart | MediaPart:
    return MediaPart(read, detail) if isinstance(read, Document) else ImagePart(read, detail)


def _check_text(text: object, what: str) -> str:
    if not isinstance(text, str):
        raise InvalidMessageError(f"{what} must be a string, not {type(text).__name__}")
    return text


def _role(role: object) -> Role:
    for known in ROLES:
        if role == known:
            return known
    if role == "developer":
        return "system"
    raise InvalidMessageError(f"role must be one of 'system', 'user', 'assistant', not {role!r}")


def _part_to_dict(part: TextPart | ImagePart | ImageRef) -> dict[str, Any]:
    if isinstance(part, TextPart):
        return {"type": "text", "text": part.text}
    if isinstance(part, ImageRef):
        return {
            "type": "image_ref",
            "url": part.url,
            "detail": part.detail,
            "format": part.format,
            "location": part.location,
            "file_id": part.file_id,
        }
    return {"type": "image", "image": part.image.to_dict(), "detail": part.detail}


def _part_from_dict(raw: Any) -> Part:
    if not isinstance(raw, Mapping):
        raise InvalidMessageError("a serialised part must be an object")
    kind = raw.get("type")
    if kind == "text":
        return TextPart(_check_text(raw.get("text"), "a text part's 'text'"))
    if kind == "image":
        return ImagePart(ImageHandle.from_dict(raw["image"]), raw.get("detail"))
    if kind == "image_ref":
        return ImageRef(
            _check_text(raw.get("url"), "an image reference's 'url'"),
            raw.get("detail"),
            raw.get("format"),
            str(raw.get("location") or ""),
            bool(raw.get("file_id")),
        )
    raise InvalidMessageError(f"unknown serialised part type {kind!r}")
