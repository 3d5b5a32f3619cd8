"""vlmkit's neutral completion request, and the parsing of OpenAI-format messages into it.

An image in a request is an :class:`ImageInput`: either a validated :class:`ImageHandle` (from a data
URL, base64, a local path or a ``gs://``/``s3://`` reference) or an ``http(s)`` URL kept as it is, so
that providers that fetch URLs themselves receive the URL and the others fetch it safely (see
:mod:`vlmkit.providers.images`). Nothing here touches the network.

Every malformed message or part is a :class:`BadRequestError` whose message starts with where it is,
e.g. ``messages[2].content[1]: ...``.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from vlmkit.chat import Chat, parse_image_url
from vlmkit.chat import ImagePart as ChatImagePart
from vlmkit.errors import BadRequestError, InvalidMessageError, VlmkitError
from vlmkit.images import ImageHandle, image_from_bytes, prepare_image

Role = Literal["system", "user", "assistant"]
Detail = Literal["low", "high", "auto"]


@dataclass(frozen=True)
class TextInput:
    text: str


@dataclass(frozen=True)
class ImageInput:
    """An image in a request: a handle, or an http(s) URL not fetched yet (``handle`` is then None)."""

    handle: ImageHandle | None
    url: str | None = None
    detail: Detail | None = None
    format: str | None = None
    """The MIME type the caller declared (checked against the bytes once there are bytes)."""
    location: str = ""
    """Where the part is in the request, ``messages[i].content[j]``, for error messages."""


Part = TextInput | ImageInput


@dataclass
class Message:
    role: Role
    content: list[Part]

    @property
    def text(self) -> str:
        return "".join(p.text for p in self.content if isinstance(p, TextInput))

    @property
    def images(self) -> list[ImageInput]:
        return [p for p in self.content if isinstance(p, ImageInput)]


@dataclass
class Params:
    """Generation settings, named as in OpenAI's Chat Completions API."""

    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    stop: list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    response_format: dict[str, Any] | None = None
    user: str | None = None


@dataclass
class CompletionRequest:
    """A provider-neutral chat completion request."""

    model: str
    """The model's name at the provider (without the ``provider/`` prefix)."""
    messages: list[Message]
    params: Params = field(default_factory=Params)
    stream: bool = False
    extra_body: dict[str, Any] = field(default_factory=dict)
    """Provider-specific fields merged into the top level of the wire body as they are."""

    @property
    def images(self) -> list[ImageInput]:
        return [p for m in self.messages for p in m.images]

    @property
    def system_text(self) -> str:
        return "\n\n".join(m.text for m in self.messages if m.role == "system")


_PARAM_NAMES = frozenset(Params.__dataclass_fields__)


def build_params(kwargs: Mapping[str, Any]) -> Params:
    """:class:`Params` from keyword arguments, each checked for its type (``max_completion_tokens`` too)."""
    values = dict(kwargs)
    if "max_completion_tokens" in values:
        if values.get("max_tokens") is None:
            values["max_tokens"] = values["max_completion_tokens"]
        del values["max_completion_tokens"]
    unknown = set(values) - _PARAM_NAMES
    if unknown:
        raise BadRequestError(
            f"unknown parameter(s) {', '.join(sorted(unknown))}; pass provider-specific fields in extra_body={{...}}"
        )
    for name in ("temperature", "top_p", "presence_penalty", "frequency_penalty"):
        value = values.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise BadRequestError(f"{name} must be a number, not {type(value).__name__}")
    for name in ("max_tokens", "seed"):
        value = values.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise BadRequestError(f"{name} must be an integer, not {type(value).__name__}")
    if values.get("max_tokens") is not None and values["max_tokens"] < 1:
        raise BadRequestError(f"max_tokens must be at least 1, not {values['max_tokens']}")
    stop = values.get("stop")
    if isinstance(stop, str):
        values["stop"] = [stop]
    elif stop is not None and not (isinstance(stop, (list, tuple)) and all(isinstance(s, str) for s in stop)):
        raise BadRequestError("stop must be a string or a list of strings")
    elif stop is not None:
        values["stop"] = list(stop)
    fmt = values.get("response_format")
    if fmt is not None and not (isinstance(fmt, Mapping) and isinstance(fmt.get("type"), str)):
        raise BadRequestError("response_format must be an object such as {'type': 'json_object'}")
    return Params(**values)


def parse_messages(messages: Any) -> list[Message]:
    """OpenAI-format messages (or a :class:`Chat`) as neutral messages; local images are read, URLs kept."""
    if isinstance(messages, Chat):
        return _from_chat(messages)
    if not isinstance(messages, Sequence) or isinstance(messages, (str, bytes)):
        raise InvalidMessageError("messages must be a list of {'role': ..., 'content': ...} objects")
    if not messages:
        raise InvalidMessageError("messages is empty: send at least one message")
    out = []
    for i, raw in enumerate(messages):
        try:
            out.append(_message(raw, i))
        except VlmkitError as exc:
            exc.add_location(f"messages[{i}]")
            raise
    return out


def _from_chat(chat: Chat) -> list[Message]:
    out = []
    for i, m in enumerate(chat.messages):
        parts: list[Part] = []
        for j, p in enumerate(m.content):
            if isinstance(p, ChatImagePart):
                parts.append(ImageInput(p.image, None, p.detail, None, f"messages[{i}].content[{j}]"))
            else:
                parts.append(TextInput(p.text))
        out.append(Message(m.role, parts))
    if not out:
        raise InvalidMessageError("the chat is empty: add at least one message")
    return out


def _role(value: Any) -> Role:
    if value in ("system", "developer"):
        return "system"
    if value in ("user", "assistant"):
        return value  # type: ignore[no-any-return]
    if value == "tool":
        raise InvalidMessageError("role 'tool' is not supported: vlmkit's providers layer does not do tool calls yet")
    raise InvalidMessageError(f"role must be 'system', 'developer', 'user' or 'assistant', not {value!r}")


def _message(raw: Any, index: int) -> Message:
    if not isinstance(raw, Mapping):
        raise InvalidMessageError(f"a message must be an object, not {type(raw).__name__}")
    role = _role(raw.get("role"))
    content = raw.get("content")
    if content is None:
        if role == "assistant":
            return Message(role, [])
        raise InvalidMessageError("the message has no 'content'")
    if isinstance(content, str):
        return Message(role, [TextInput(content)])
    if not isinstance(content, list):
        raise InvalidMessageError(f"content must be a string or a list of parts, not {type(content).__name__}")
    parts: list[Part] = []
    for j, part in enumerate(content):
        try:
            parts.append(_part(part, role, f"messages[{index}].content[{j}]"))
        except VlmkitError as exc:
            exc.add_location(f"content[{j}]")
            raise
    return Message(role, parts)


def _part(part: Any, role: Role, location: str) -> Part:
    if not isinstance(part, Mapping):
        raise InvalidMessageError(f"a content part must be an object, not {type(part).__name__}")
    kind = part.get("type")
    if kind in ("text", "input_text"):
        text = part.get("text")
        if not isinstance(text, str):
            raise InvalidMessageError(f"a text part needs a string 'text', not {type(text).__name__}")
        return TextInput(text)
    if kind in ("image_url", "input_image"):
        if role != "user":
            raise InvalidMessageError(f"images can only be sent in user messages, not in a {role} message")
        url, detail, declared = parse_image_url(part.get("image_url"))
        handle = _image(url, declared)
        return ImageInput(handle, url if handle is None else None, detail, declared, location)
    raise InvalidMessageError(f"unknown content part type {kind!r}; vlmkit reads 'text' and 'image_url' parts")


def _is_http(url: str) -> bool:
    return url[:8].lower().startswith(("http://", "https://"))


def _image(url: str, declared: str | None) -> ImageHandle | None:
    """The handle for a non-http image: data URL, gs://, s3://, file://, a local path or bare base64."""
    if _is_http(url):
        return None
    if "://" not in url[:16] and not url.startswith("data:") and _looks_like_base64(url) and not _is_file(url):
        try:
            data = base64.b64decode(url, validate=True)
        except (binascii.Error, ValueError):
            data = None
        if data:
            return image_from_bytes(data, format=declared)
    return prepare_image(url, format=declared)


def _is_file(text: str) -> bool:
    try:
        return len(text) < 4096 and Path(text).expanduser().is_file()
    except (OSError, ValueError):
        return False


def _looks_like_base64(text: str) -> bool:
    if len(text) < 16:
        return False
    sample = text[:256] + text[-4:]
    return all(ch.isalnum() or ch in "+/=" for ch in sample)
