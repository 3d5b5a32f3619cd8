"""The chat history, and its conversion to and from OpenAI-style ``messages``.

A :class:`Chat` holds messages whose content is text and :class:`~vlmkit.images.ImageHandle` parts.
Images keep their identity (content identifier) through copies, JSON and OpenAI conversion, so a
backend can recognise an image it has already encoded.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from vlmkit.errors import InvalidMessageError, VlmkitError
from vlmkit.images import ImageHandle, ImagePolicy, prepare_image

if TYPE_CHECKING:
    from vlmkit.images.fetch import FetchOptions

Role = Literal["system", "user", "assistant"]
ROLES: tuple[Role, ...] = ("system", "user", "assistant")
Detail = Literal["low", "high", "auto"]


@dataclass(frozen=True)
class TextPart:
    text: str


@dataclass(frozen=True)
class ImagePart:
    image: ImageHandle
    detail: Detail | None = None


Part = TextPart | ImagePart


@dataclass
class ChatMessage:
    role: Role
    content: list[Part] = field(default_factory=list)

    @property
    def text(self) -> str:
        """The message's text parts joined together."""
        return "".join(p.text for p in self.content if isinstance(p, TextPart))

    @property
    def images(self) -> list[ImageHandle]:
        return [p.image for p in self.content if isinstance(p, ImagePart)]


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
        images: Iterable[ImageHandle] = (),
        detail: Detail | None = None,
    ) -> ChatMessage:
        """Add a user turn: text, then the images (handles from ``prepare_image``)."""
        return self._add("user", _check_text(content, "the user message"), images, detail)

    def add_assistant_response(self, response: str | _HasContent) -> ChatMessage:
        """Add an assistant turn: a string, or a prediction result (its ``content``)."""
        text = response if isinstance(response, str) else getattr(response, "content", None)
        return self._add("assistant", _check_text(text, "the assistant response"), ())

    def append(self, message: ChatMessage) -> None:
        self.messages.append(message)

    def _add(self, role: Role, text: str, images: Iterable[ImageHandle], detail: Detail | None = None) -> ChatMessage:
        parts: list[Part] = [TextPart(text)] if text else []
        for i, image in enumerate(images):
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
        return f"Chat({len(self.messages)} messages, {len(self.images)} images)"

    @property
    def images(self) -> list[ImageHandle]:
        return [img for m in self.messages for img in m.images]

    def copy(self) -> Chat:
        """An independent copy (images are immutable and shared)."""
        new = Chat()
        new.messages = [ChatMessage(m.role, list(m.content)) for m in self.messages]
        return new

    @classmethod
    def from_history(cls, history: str | Chat | Mapping[str, Any] | Sequence[Any]) -> Chat:
        """A chat from a user prompt string, another Chat, ``{"messages": [...]}`` or a message list."""
        if isinstance(history, Chat):
            return history.copy()
        if isinstance(history, str):
            chat = cls()
            chat.add_user_message(history)
            return chat
        if isinstance(history, Mapping):
            if "messages" not in history:
                raise InvalidMessageError("a history dict needs a 'messages' list")
            return cls.from_openai(history["messages"])
        if isinstance(history, (list, tuple)):
            return cls.from_openai(history)
        raise InvalidMessageError(
            f"cannot make a chat from a {type(history).__name__}; pass a string, a Chat, "
            "a {'messages': [...]} dict or a list of OpenAI-style messages"
        )

    # --- OpenAI messages ---------------------------------------------------------------------

    def to_openai(self, policy: ImagePolicy | None = None) -> list[dict[str, Any]]:
        """OpenAI-style messages; images as data URLs, rendered for ``policy`` when one is given."""
        out: list[dict[str, Any]] = []
        for m in self.messages:
            if all(isinstance(p, TextPart) for p in m.content):
                out.append({"role": m.role, "content": m.text})
                continue
            parts: list[dict[str, Any]] = []
            for p in m.content:
                if isinstance(p, TextPart):
                    parts.append({"type": "text", "text": p.text})
                else:
                    parts.append({"type": "image_url", "image_url": _image_url(p, policy)})
            out.append({"role": m.role, "content": parts})
        return out

    @classmethod
    def from_openai(cls, messages: Sequence[Any], *, fetch: FetchOptions | None = None) -> Chat:
        """Rebuild a chat from OpenAI-style messages. http(s) image URLs are fetched safely."""
        chat = cls()
        if not isinstance(messages, (list, tuple)):
            raise InvalidMessageError("messages must be a list of {'role': ..., 'content': ...} objects")
        for i, raw in enumerate(messages):
            try:
                chat.messages.append(_message_from_openai(raw, fetch))
            except VlmkitError as exc:
                exc.add_location(f"messages[{i}]")
                raise
        return chat

    # --- JSON --------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form that keeps every image's bytes and identity."""
        return {"messages": [{"role": m.role, "content": [_part_to_dict(p) for p in m.content]} for m in self.messages]}

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


def _check_text(text: object, what: str) -> str:
    if not isinstance(text, str):
        raise InvalidMessageError(f"{what} must be a string, not {type(text).__name__}")
    return text


def _role(role: object) -> Role:
    for known in ROLES:
        if role == known:
            return known
    if role in ("developer",):
        return "system"
    raise InvalidMessageError(f"role must be one of 'system', 'user', 'assistant', not {role!r}")


def _image_url(part: ImagePart, policy: ImagePolicy | None) -> dict[str, Any]:
    image = part.image
    if image.is_reference:
        url = image.source or ""
    else:
        url = image.render(policy).data_url
    body: dict[str, Any] = {"url": url}
    if part.detail:
        body["detail"] = part.detail
    if image.mime_type:
        body["format"] = image.mime_type
    return body


def _message_from_openai(raw: Any, fetch: FetchOptions | None) -> ChatMessage:
    if not isinstance(raw, Mapping):
        raise InvalidMessageError(f"a message must be an object, not {type(raw).__name__}")
    role = _role(raw.get("role"))
    content = raw.get("content")
    if content is None:
        return ChatMessage(role, [])
    if isinstance(content, str):
        return ChatMessage(role, [TextPart(content)] if content else [])
    if not isinstance(content, list):
        raise InvalidMessageError(f"content must be a string or a list of parts, not {type(content).__name__}")
    parts: list[Part] = []
    for j, part in enumerate(content):
        try:
            parts.append(_part_from_openai(part, fetch))
        except VlmkitError as exc:
            exc.add_location(f"content[{j}]")
            raise
    return ChatMessage(role, parts)


def _part_from_openai(part: Any, fetch: FetchOptions | None) -> Part:
    if not isinstance(part, Mapping):
        raise InvalidMessageError(f"a content part must be an object, not {type(part).__name__}")
    kind = part.get("type")
    if kind in ("text", "input_text"):
        return TextPart(_check_text(part.get("text"), "a text part's 'text'"))
    if kind in ("image_url", "input_image"):
        url, detail, declared = parse_image_url(part.get("image_url"))
        return ImagePart(prepare_image(url, format=declared, fetch=fetch), detail)
    raise InvalidMessageError(f"unknown content part type {kind!r}; vlmkit reads 'text' and 'image_url' parts")


def parse_image_url(value: Any) -> tuple[str, Detail | None, str | None]:
    """``(url, detail, format)`` of an ``image_url`` value: a string or ``{"url", "detail", "format"}``."""
    if isinstance(value, str):
        return value, None, None
    if not isinstance(value, Mapping):
        raise InvalidMessageError("an image_url part needs 'image_url': a URL string or {'url': ...}")
    url = value.get("url")
    if not isinstance(url, str) or not url:
        raise InvalidMessageError("an image_url part needs a non-empty string 'url'")
    detail = value.get("detail")
    if detail not in (None, "low", "high", "auto"):
        raise InvalidMessageError(f"detail must be 'low', 'high' or 'auto', not {detail!r}")
    declared = value.get("format")
    if declared is not None and not isinstance(declared, str):
        raise InvalidMessageError("format must be a MIME type string such as 'image/png'")
    return url, detail, declared


def _part_to_dict(part: Part) -> dict[str, Any]:
    if isinstance(part, TextPart):
        return {"type": "text", "text": part.text}
    return {"type": "image", "image": part.image.to_dict(), "detail": part.detail}


def _part_from_dict(raw: Any) -> Part:
    if not isinstance(raw, Mapping):
        raise InvalidMessageError("a serialised part must be an object")
    if raw.get("type") == "text":
        return TextPart(_check_text(raw.get("text"), "a text part's 'text'"))
    if raw.get("type") == "image":
        return ImagePart(ImageHandle.from_dict(raw["image"]), raw.get("detail"))
    raise InvalidMessageError(f"unknown serialised part type {raw.get('type')!r}")
