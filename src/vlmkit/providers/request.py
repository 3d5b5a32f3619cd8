"""vlmkit's provider-neutral completion request: what each provider module translates.

The request is built, not parsed, here: :mod:`vlmkit.wire.openai_chat` reads OpenAI-format messages
into a :class:`~vlmkit.chat.Chat` and the settings into a :class:`~vlmkit.prediction.PredictionConfig`
(its validator is the only one), :mod:`vlmkit.images.resolve` reads the images, and
:func:`request_messages` / :func:`request_params` give the provider modules their view of it. An
image is an :class:`ImageInput`: a validated :class:`ImageHandle`, or an ``http(s)`` URL kept as it
is for providers that fetch URLs themselves. Nothing here touches the network or the disk.

Tools travel as vlmkit's values (:mod:`vlmkit.tools`): the request's ``tools`` and ``tool_choice``,
an assistant message's ``tool_calls``, and a ``tool`` message's ``tool_call_id`` with the name of the
tool it answers (``tool_name``: Gemini and Ollama name a result by its tool, not by its call).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from vlmkit._types import Detail
from vlmkit.chat import Chat, ImagePart, MediaPart, Role, TextPart, tool_results
from vlmkit.chat import Part as ChatPart
from vlmkit.errors import InvalidMessageError
from vlmkit.images import ImageHandle
from vlmkit.images.document import Document
from vlmkit.images.video import Video
from vlmkit.prediction import PredictionConfig
from vlmkit.providers.media import sends_native
from vlmkit.tools import ToolCall, ToolChoice, ToolDefinition
from vlmkit.wire.openai_chat import config_to_openai


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


@dataclass(frozen=True)
class MediaInput:
    """A PDF or a video sent as itself, to a provider that reads it (see :mod:`vlmkit.providers.media`)."""

    media: Document | Video
    location: str = ""


Part = TextInput | ImageInput | MediaInput


@dataclass
class Message:
    role: Role
    content: list[Part]
    tool_calls: list[ToolCall] = field(default_factory=list)
    tool_call_id: str | None = None
    tool_name: str | None = None
    """For a ``tool`` message: the name of the tool whose call it answers."""

    @property
    def text(self) -> str:
        return "".join(p.text for p in self.content if isinstance(p, TextInput))

    @property
    def images(self) -> list[ImageInput]:
        return [p for p in self.content if isinstance(p, ImageInput)]

    @property
    def text_only(self) -> bool:
        return all(isinstance(p, TextInput) for p in self.content)


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


_PARAMS = frozenset(f.name for f in dataclasses.fields(Params))


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
    tools: tuple[ToolDefinition, ...] = ()
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    n: int = 1
    """How many choices: sent as ``n`` where the provider takes it (its route's ``n`` option), else
    the request is repeated (see :mod:`vlmkit.providers.call`)."""

    @property
    def images(self) -> list[ImageInput]:
        return [p for m in self.messages for p in m.images]

    @property
    def system_text(self) -> str:
        return "\n\n".join(m.text for m in self.messages if m.role == "system")


def request_messages(chat: Chat, provider: str = "") -> list[Message]:
    """The provider modules' view of a chat whose images are read (or kept as http(s) URLs).

    A document or video is a :class:`MediaInput` where ``provider`` reads it as it is and it fits
    (:func:`~vlmkit.providers.media.sends_native`), else its images: pages or frames, each after its text.
    """
    if not chat.messages:
        raise InvalidMessageError("the chat is empty: add at least one message")
    answers = tool_results(chat.messages)
    out = []
    for i, m in enumerate(chat.messages):
        parts: list[Part] = []
        content: list[ChatPart] = []
        for p in m.content:
            if isinstance(p, MediaPart) and not sends_native(p.media, provider):
                content += p.as_images
            else:
                content.append(p)
        for j, p in enumerate(content):
            if isinstance(p, MediaPart):
                parts.append(MediaInput(p.media, f"messages[{i}].content[{j}]"))
            elif isinstance(p, TextPart):
                parts.append(TextInput(p.text))
            elif isinstance(p, ImagePart):
                parts.append(ImageInput(p.image, None, p.detail, None, f"messages[{i}].content[{j}]"))
            else:
                parts.append(ImageInput(None, p.url, p.detail, p.format, p.location or f"messages[{i}].content[{j}]"))
        answered = answers.get(i)
        out.append(Message(m.role, parts, list(m.tool_calls), m.tool_call_id, answered.name if answered else None))
    return out


def request_params(config: PredictionConfig, user: str | None = None) -> Params:
    """The provider modules' view of the settings: OpenAI's names, as OpenAI's request has them (the
    tools are the request's own fields)."""
    return Params(**{k: v for k, v in config_to_openai(config).items() if k in _PARAMS}, user=user)
