"""The chat history: messages whose parts are text, images, and image references not read yet.

A :class:`Chat` holds messages whose content is :class:`TextPart`, :class:`ImagePart` (an
:class:`~vlmkit.images.ImageHandle`: bytes sniffed and validated) and :class:`ImageRef` (an image
named in a request, by URL, path, data URL or upload id, that nothing has read yet). An assistant message
may carry :class:`~vlmkit.tools.ToolCall` s (``tool_calls``), and a ``tool`` message is one tool's
result (``tool_call_id`` names the call it answers): text and images, like a user message. Images keep
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
from vlmkit.errors import InvalidMessageError, InvalidToolError, VlmkitError
from vlmkit.images import ImageHandle
from vlmkit.images.document import Document
from vlmkit.images.video import Video
from vlmkit.tools import ToolCall

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
    "ToolCall",
    "tool_results",
]

Role = Literal["system", "user", "assistant", "tool"]
ROLES: tuple[Role, ...] = ("system", "user", "assistant", "tool")


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
    ``video``: the part named a video (vLLM's ``video_url``), to be read as frames, not as one image.
    """

    url: str
    detail: Detail | None = None
    format: str | None = None
    location: str = ""
    file_id: bool = False
    video: bool = False


@dataclass(frozen=True)
class MediaPart:
    """A PDF (from ``prepare_document``) or a video (from ``prepare_video``): sent as the file itself to
    a provider that reads such files and takes this one, and everywhere else as images
    (:attr:`as_images`): a document's pages, each after ``"Page N:"``, a video's frames, each after
    its time (``"Frame at 0:01.5:"``)."""

    media: Document | Video
    detail: Detail | None = None
    location: str = ""
    """Where a request named it (``messages[i].content[j]``), when it was read from one, for errors."""

    @property
    def as_images(self) -> list[TextPart | ImagePart]:
        """The media as a model that reads only images gets it: texts and images, in order."""
        return [TextPart(p) if isinstance(p, str) else ImagePart(p, self.detail) for p in self.media.interleaved()]


Part = TextPart | ImagePart | ImageRef | MediaPart


@dataclass
class ChatMessage:
    """One turn. ``tool_calls`` are an assistant's calls; ``tool_call_id`` is the call a ``tool``
    message answers."""

    role: Role
    content: list[Part] = field(default_factory=list)
    tool_calls: list[ToolCall] = field(default_factory=list)
    tool_call_id: str | None = None

    def replaced(self, content: list[Part]) -> ChatMessage:
        """This message with other content (its calls and call id kept)."""
        return ChatMessage(self.role, content, list(self.tool_calls), self.tool_call_id)

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
        """Add an assistant turn: a string, or a prediction result (its ``content`` and ``tool_calls``)."""
        text = response if isinstance(response, str) else getattr(response, "content", None)
        calls = [] if isinstance(response, str) else getattr(response, "tool_calls", None) or []
        if text is None and calls:  # a turn of calls alone
            text = ""
        message = self._add("assistant", _check_text(text, "the assistant response"), ())
        message.tool_calls = [_check_call(c, f"tool_calls[{i}]") for i, c in enumerate(calls)]
        return message

    def add_tool_calls(self, calls: Iterable[ToolCall], text: str = "") -> ChatMessage:
        """Add an assistant turn that calls tools (with ``text`` said beside the calls)."""
        message = self._add("assistant", _check_text(text, "the assistant text"), ())
        message.tool_calls = [_check_call(c, f"tool_calls[{i}]") for i, c in enumerate(calls)]
        return message

    def add_tool_result(
        self,
        call: ToolCall | str,
        content: str = "",
        *,
        images: Iterable[ImageHandle] = (),
        detail: Detail | None = None,
    ) -> ChatMessage:
        """Add a tool's result for ``call`` (a :class:`ToolCall` or its id): text, then images."""
        call_id = call.id if isinstance(call, ToolCall) else call
        if not isinstance(call_id, str) or not call_id:
            raise InvalidMessageError(f"a tool result needs the id of the call it answers, not {call_id!r}")
        message = self._add("tool", _check_text(content, "the tool result"), images, detail)
        message.tool_call_id = call_id
        return message

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
        new.messages = [m.replaced(list(m.content)) for m in self.messages]
        return new

    def with_images(self, images: Mapping[ImageRef, ImageHandle | Document | Video]) -> Chat:
        """This chat with each reference in ``images`` replaced by its handle (a PDF's document or a
        video: a :class:`MediaPart`); other references stay.

        Returns ``self`` when there is nothing to replace, else a copy (the parts are immutable).
        """
        if not images:
            return self
        new = Chat()
        new.messages = [
            m.replaced([_read_part(images[p], p) if isinstance(p, ImageRef) and p in images else p for p in m.content])
            for m in self.messages
        ]
        return new

    # --- JSON --------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form that keeps every image's bytes and identity (a document: its pages)."""
        return {"messages": [_message_to_dict(m) for m in self.messages]}

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
                message = ChatMessage(role, [_part_from_dict(p) for p in raw.get("content", [])])
                message.tool_calls = [_call_from_dict(c) for c in raw.get("tool_calls") or []]
                message.tool_call_id = raw.get("tool_call_id")
                chat.messages.append(message)
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


def _read_part(read: ImageHandle | Document | Video, ref: ImageRef) -> ImagePart | MediaPart:
    if isinstance(read, (Document, Video)):
        return MediaPart(read, ref.detail, ref.location)
    return ImagePart(read, ref.detail)


def tool_results(messages: Iterable[ChatMessage]) -> dict[int, ToolCall]:
    """Each tool message's index and the call it answers; a result answering no call made before it
    is an :class:`~vlmkit.errors.InvalidToolError` naming ``messages[i].tool_call_id``."""
    calls: dict[str, ToolCall] = {}
    answered: dict[int, ToolCall] = {}
    for i, m in enumerate(messages):
        for call in m.tool_calls:
            calls[call.id] = call
        if m.role != "tool":
            continue
        answer = calls.get(m.tool_call_id or "")
        if answer is None:
            exc = InvalidToolError(
                f"this tool result answers the call id {m.tool_call_id!r}, but no assistant message before it "
                f"made that call (calls made: {', '.join(map(repr, calls)) or 'none'}); "
                "send the assistant message with its tool_calls first, and answer each call by its id"
            )
            exc.add_location(f"messages[{i}].tool_call_id")
            raise exc
        answered[i] = answer
    return answered


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
    raise InvalidMessageError(f"role must be one of 'system', 'user', 'assistant', 'tool', not {role!r}")


def _check_call(call: object, where: str) -> ToolCall:
    if not isinstance(call, ToolCall):
        raise InvalidMessageError(f"{where} is a {type(call).__name__}, not a vlmkit.tools.ToolCall")
    return call


def _message_to_dict(m: ChatMessage) -> dict[str, Any]:
    out: dict[str, Any] = {"role": m.role, "content": [_part_to_dict(p) for p in m.flat_content]}
    if m.tool_calls:
        out["tool_calls"] = [
            {
                "id": c.id,
                "name": c.name,
                "arguments": c.arguments,
                **({"signature": c.signature} if c.signature else {}),
            }
            for c in m.tool_calls
        ]
    if m.tool_call_id is not None:
        out["tool_call_id"] = m.tool_call_id
    return out


def _call_from_dict(raw: Any) -> ToolCall:
    if not isinstance(raw, Mapping):
        raise InvalidMessageError("a serialised tool call must be an object")
    return ToolCall(
        _check_text(raw.get("id"), "a tool call's 'id'"),
        _check_text(raw.get("name"), "a tool call's 'name'"),
        _check_text(raw.get("arguments", "{}"), "a tool call's 'arguments'"),
        raw.get("signature") if isinstance(raw.get("signature"), str) else None,
    )


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
            "video": part.video,
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
            bool(raw.get("video")),
        )
    raise InvalidMessageError(f"unknown serialised part type {kind!r}")
