"""Responses in OpenAI's ``ChatCompletion`` and ``ChatCompletionChunk`` shapes, whatever the provider.

Plain dataclasses: read them as attributes (``response.choices[0].message.content``) or as a dict
(``response["choices"][0]["message"]["content"]``), and ``to_dict()`` gives the JSON form. They are
the Python objects ``completion()`` returns; the protocol itself (finish reasons, ids, the bodies a
server writes) is :mod:`vlmkit.wire.openai_chat`'s.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from vlmkit.tools import ToolCall
from vlmkit.wire.openai_chat import (
    FinishReason,
    ToolCallAssembler,
    completion_id,
    signature_of,
    signature_to_openai,
)

__all__ = [
    "ChatCompletion",
    "ChatCompletionChunk",
    "Choice",
    "ChunkChoice",
    "ChunkMaker",
    "Delta",
    "DeltaFunction",
    "DeltaToolCall",
    "FinishReason",
    "Function",
    "ResponseMessage",
    "ResponseToolCall",
    "StreamedAnswer",
    "Usage",
    "completion_of",
    "merged",
]


class _Record:
    """Attribute and item access, and ``to_dict``/``model_dump`` (the names LiteLLM and pydantic use)."""

    def __getitem__(self, key: str) -> Any:
        try:
            return getattr(self, key)
        except AttributeError:
            raise KeyError(key) from None

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key, default)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self, dict_factory=_fields)  # type: ignore[call-overload, no-any-return]

    def model_dump(self) -> dict[str, Any]:
        return self.to_dict()


def _fields(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A record's fields, but a call's ``extra_content`` only where it has some (OpenAI's shape has none)."""
    return {k: v for k, v in pairs if not (k == "extra_content" and v is None)}


@dataclass
class Usage(_Record):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0

    @classmethod
    def of(cls, prompt: int | None, completion: int | None) -> Usage:
        p, c = int(prompt or 0), int(completion or 0)
        return cls(p, c, p + c)


@dataclass
class Function(_Record):
    name: str
    arguments: str
    """The arguments as JSON text, as OpenAI sends them."""


@dataclass
class ResponseToolCall(_Record):
    id: str
    function: Function
    type: Literal["function"] = "function"
    extra_content: dict[str, Any] | None = None
    """A provider's signature of the call, as Gemini's OpenAI-compatible API writes it
    (``{"google": {"thought_signature": ...}}``): send it back with the call."""

    @classmethod
    def of(cls, call: ToolCall) -> ResponseToolCall:
        return cls(call.id, Function(call.name, call.arguments), extra_content=_extra(call.signature))

    def to_call(self) -> ToolCall:
        """vlmkit's value of this call."""
        return ToolCall(self.id, self.function.name, self.function.arguments, signature_of(self.to_dict()))


def _extra(signature: str | None) -> dict[str, Any] | None:
    extra: dict[str, Any] | None = signature_to_openai(signature).get("extra_content")
    return extra


@dataclass
class ResponseMessage(_Record):
    content: str | None
    role: Literal["assistant"] = "assistant"
    tool_calls: list[ResponseToolCall] | None = None


@dataclass
class Choice(_Record):
    message: ResponseMessage
    finish_reason: FinishReason | None = "stop"
    index: int = 0
    logprobs: Any = None


@dataclass
class ChatCompletion(_Record):
    choices: list[Choice]
    model: str
    usage: Usage = field(default_factory=Usage)
    id: str = field(default_factory=completion_id)
    created: int = field(default_factory=lambda: int(time.time()))
    object: Literal["chat.completion"] = "chat.completion"
    system_fingerprint: str | None = None
    provider: str | None = None
    """Which provider answered (vlmkit's addition; OpenAI's clients ignore it)."""

    @property
    def content(self) -> str:
        """The first choice's text ('' when there is none)."""
        return (self.choices[0].message.content or "") if self.choices else ""


@dataclass
class DeltaFunction(_Record):
    name: str | None = None
    arguments: str | None = None


@dataclass
class DeltaToolCall(_Record):
    """A piece of a streamed tool call: the first piece of call ``index`` has its id and name, later
    ones more of its arguments (:class:`~vlmkit.wire.openai_chat.ToolCallAssembler` joins them)."""

    index: int
    id: str | None = None
    function: DeltaFunction = field(default_factory=DeltaFunction)
    type: Literal["function"] | None = None
    extra_content: dict[str, Any] | None = None


@dataclass
class Delta(_Record):
    content: str | None = None
    role: Literal["assistant"] | None = None
    tool_calls: list[DeltaToolCall] | None = None


@dataclass
class ChunkChoice(_Record):
    delta: Delta
    finish_reason: FinishReason | None = None
    index: int = 0
    logprobs: Any = None


@dataclass
class ChatCompletionChunk(_Record):
    choices: list[ChunkChoice]
    model: str
    id: str
    created: int
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    usage: Usage | None = None
    system_fingerprint: str | None = None


class StreamedAnswer:
    """A streamed completion put together chunk by chunk: its text, finish reason, usage and tool calls
    (a call's arguments arrive in pieces), for those who answer from a provider's stream."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.finish: str | None = None
        self.usage: Usage | None = None
        self._calls = ToolCallAssembler()

    def feed(self, chunk: ChatCompletionChunk) -> list[str]:
        """Take in ``chunk``; returns its pieces of text, in order."""
        self.usage = chunk.usage or self.usage
        texts = []
        for choice in chunk.choices:
            self.finish = choice.finish_reason or self.finish
            self._calls.feed([piece.to_dict() for piece in choice.delta.tool_calls or ()])
            if choice.delta.content:
                texts.append(choice.delta.content)
        self.parts += texts
        return texts

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def tool_calls(self) -> list[ToolCall]:
        return self._calls.calls()


def completion_of(
    text: str | None,
    model: str,
    *,
    finish_reason: FinishReason | None,
    usage: Usage,
    id: str | None = None,
    created: int | None = None,
    provider: str | None = None,
    tool_calls: Sequence[ToolCall] = (),
) -> ChatCompletion:
    """A one-choice completion (whose finish reason is ``tool_calls`` when it holds calls)."""
    calls = [ResponseToolCall.of(c) for c in tool_calls] or None
    if calls and finish_reason in (None, "stop"):
        finish_reason = "tool_calls"
    return ChatCompletion(
        choices=[Choice(ResponseMessage(text or None if calls else text, tool_calls=calls), finish_reason)],
        model=model,
        usage=usage,
        id=id or completion_id(),
        created=created or int(time.time()),
        provider=provider,
    )


def merged(answers: Sequence[ChatCompletion], usage: Usage | None = None) -> ChatCompletion:
    """One completion holding each answer's first choice in turn (index 0, 1, ...): the ``n`` choices
    of a request asked ``n`` times (usage summed), or read from one answer (its ``usage``)."""
    choices = [dataclasses.replace(a.choices[0], index=i) for i, a in enumerate(answers) if a.choices]
    if usage is None:
        usage = Usage.of(sum(a.usage.prompt_tokens for a in answers), sum(a.usage.completion_tokens for a in answers))
    return dataclasses.replace(answers[0], choices=choices, usage=usage)


class ChunkMaker:
    """Chunks of one stream, sharing its id, model and creation time.

    The first chunk carries ``role="assistant"``, as OpenAI's do.
    """

    def __init__(self, model: str, id: str | None = None, created: int | None = None) -> None:
        self.model = model
        self.id = id or completion_id()
        self.created = created or int(time.time())
        self._role_sent = False
        self.finished = False
        self.called = False

    def text(self, content: str) -> ChatCompletionChunk:
        return self._chunk(Delta(content, self._role()), None)

    def tool_call(
        self,
        index: int,
        id: str | None = None,
        name: str | None = None,
        arguments: str | None = None,
        signature: str | None = None,
    ) -> ChatCompletionChunk:
        """A piece of call ``index``: its start (``id``, ``name``, a provider's signature) or more of its arguments."""
        self.called = True
        kind: Literal["function"] | None = "function" if id else None
        piece = DeltaToolCall(index, id, DeltaFunction(name, arguments), kind, _extra(signature))
        return self._chunk(Delta(None, self._role(), [piece]), None)

    def finish(self, reason: FinishReason | None, usage: Usage | None = None) -> ChatCompletionChunk:
        """The last chunk (``tool_calls`` is its reason when the stream held calls and ended normally)."""
        self.finished = True
        if self.called and reason in (None, "stop"):
            reason = "tool_calls"
        return self._chunk(Delta(None, self._role()), reason, usage)

    def usage(self, usage: Usage) -> ChatCompletionChunk:
        """A usage-only chunk (no choices), as OpenAI sends with ``stream_options.include_usage``."""
        return ChatCompletionChunk([], self.model, self.id, self.created, usage=usage)

    def _role(self) -> Literal["assistant"] | None:
        if self._role_sent:
            return None
        self._role_sent = True
        return "assistant"

    def _chunk(self, delta: Delta, reason: FinishReason | None, usage: Usage | None = None) -> ChatCompletionChunk:
        return ChatCompletionChunk([ChunkChoice(delta, reason)], self.model, self.id, self.created, usage=usage)
