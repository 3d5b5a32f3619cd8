"""Anthropic's Messages API, read and written in one place, with no I/O.

What ``vlmkit serve`` reads at ``POST /v1/messages`` (and ``/v1/messages/count_tokens``), following
Anthropic's API reference:

- ``model``; ``max_tokens`` (required, at least 1, as Anthropic requires; count_tokens needs none);
  ``system`` as a string or a list of text blocks; ``stop_sequences``, ``temperature``, ``top_p``,
  ``top_k``; ``stream``; ``metadata.user_id``. Settings become a
  :class:`~vlmkit.prediction.PredictionConfig`, the one validator.
- ``messages``: ``user`` and ``assistant`` turns whose content is a string or a list of blocks:
  ``text`` blocks, and (in user turns) ``image`` blocks whose ``source`` is ``base64`` (with its
  ``media_type``, checked against the bytes once they are read), ``url`` or ``file`` (the id of an
  image uploaded to the server's ``/v1/files``). An image becomes an
  :class:`~vlmkit.chat.ImageRef` located at ``messages[i].content[j]``, read later by
  :mod:`vlmkit.images.resolve`. Tools, documents and thinking blocks are refused, naming where.

What is written: the ``message`` body, the streamed events (``message_start``,
``content_block_start``, ``ping``, ``content_block_delta``, ``content_block_stop``,
``message_delta``, ``message_stop``, and ``error``), the count_tokens answer, and errors in
Anthropic's shape (``{"type": "error", "error": {"type", "message"}}``). A stop reason maps onto
Anthropic's ``stop_reason`` through one table (:data:`STOP_REASONS`).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from vlmkit._types import type_name
from vlmkit.chat import Chat, ChatMessage, ImageRef, Part, TextPart
from vlmkit.errors import BadRequestError, ImageFormatMismatchError, InvalidMessageError, VlmkitError
from vlmkit.prediction import PredictionConfig, PredictionResult, PredictionStats, StopReason, setting_error

__all__ = [
    "ERROR_TYPES",
    "STOP_REASONS",
    "EventWriter",
    "MessagesRequest",
    "count_body",
    "error_body",
    "message_body",
    "message_id",
    "read_request",
    "restate",
    "stop_reason_of",
    "to_chat",
]

# --- errors --------------------------------------------------------------------------------------

ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "timeout_error",
    413: "request_too_large",
    422: "invalid_request_error",
    429: "rate_limit_error",
    499: "invalid_request_error",
    502: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
}
"""Anthropic's error ``type`` for each status vlmkit answers with."""


def error_body(message: str, status: int, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    """An error in Anthropic's shape (``code`` and ``param`` have no place in it: the message names the part)."""
    kind = ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return {"type": "error", "error": {"type": kind, "message": message}}


def restate(exc: VlmkitError) -> VlmkitError:
    """An image error in this protocol's words: a declared ``media_type`` that is not what the bytes are."""
    if isinstance(exc, ImageFormatMismatchError):
        out = ImageFormatMismatchError(
            f"source.media_type is {exc.declared!r} but the image's bytes are {exc.actual}; "
            f"send media_type {exc.actual!r} (or convert the image to {exc.declared})",
            declared=exc.declared,
            actual=exc.actual,
        )
        if exc.location:
            out.add_location(exc.location)
        return out
    return exc


# --- the request ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class MessagesRequest:
    """A ``POST /v1/messages`` body, checked. The messages are read by :func:`to_chat` once the model
    is known to exist (so an unknown model is answered before the messages are looked at)."""

    model: str
    messages: list[Any]
    system: Any = None
    config: PredictionConfig = field(default_factory=PredictionConfig)
    stream: bool = False
    user: str | None = None


def read_request(body: Mapping[str, Any], *, count_only: bool = False) -> MessagesRequest:
    """The fields of a Messages body; a bad one is an :class:`~vlmkit.errors.InvalidSettingError` naming it.

    ``count_only`` reads a count_tokens body, which has no ``max_tokens`` and no sampling settings.
    """
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise setting_error("model", "model is required: the name of a model from GET /v1/models")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        shown = "an empty list" if isinstance(messages, list) else type_name(messages)
        raise setting_error("messages", f"messages must be a non-empty list of {{'role', 'content'}}, not {shown}")
    for name in ("tools", "tool_choice"):
        if body.get(name):
            exc = BadRequestError(
                f"{name}: tool use is not supported on /v1/messages yet; send the request without {name!r}, "
                "or use /v1/chat/completions, which calls tools"
            )
            exc.location = name
            raise exc
    if count_only:
        return MessagesRequest(model, messages, body.get("system"))
    tokens = body.get("max_tokens")
    if tokens is None:
        raise setting_error("max_tokens", "max_tokens is required: the most tokens to generate (at least 1)")
    stop = body.get("stop_sequences")
    if stop is not None and (not isinstance(stop, list) or not all(isinstance(s, str) for s in stop)):
        raise setting_error("stop_sequences", f"stop_sequences must be a list of strings, not {type_name(stop)}")
    values = {"max_tokens": tokens, "temperature": body.get("temperature"), "top_p": body.get("top_p")}
    values["top_k"] = body.get("top_k")
    config = PredictionConfig(**{k: v for k, v in values.items() if v is not None}, stop=tuple(stop or ()))
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise setting_error("stream", f"stream must be true or false, not {type_name(stream)}")
    metadata = body.get("metadata")
    user = metadata.get("user_id") if isinstance(metadata, Mapping) else None
    return MessagesRequest(
        model, messages, body.get("system"), config, bool(stream), user if isinstance(user, str) else None
    )


def to_chat(messages: list[Any], system: Any = None) -> Chat:
    """A :class:`Chat` of the system prompt and the messages; every image an :class:`ImageRef`."""
    chat = Chat()
    if system is not None:
        text = _system_text(system)
        if text:
            chat.messages.append(ChatMessage("system", [TextPart(text)]))
    for i, raw in enumerate(messages):
        chat.messages.append(_message(raw, f"messages[{i}]"))
    return chat


def _system_text(system: Any) -> str:
    if isinstance(system, str):
        return system
    if not isinstance(system, list):
        raise InvalidMessageError.at(
            f"system must be a string or a list of text blocks, not {type_name(system)}", "system"
        )
    texts = []
    for j, block in enumerate(system):
        if not isinstance(block, Mapping) or block.get("type") != "text" or not isinstance(block.get("text"), str):
            raise InvalidMessageError.at("a system block must be {'type': 'text', 'text': ...}", f"system[{j}]")
        texts.append(block["text"])
    return "\n\n".join(texts)


def _message(raw: Any, where: str) -> ChatMessage:
    if not isinstance(raw, Mapping):
        raise InvalidMessageError.at(f"a message must be an object, not {type_name(raw)}", where)
    role = raw.get("role")
    if role not in ("user", "assistant"):
        hint = "; put a system prompt in the top-level 'system' field" if role == "system" else ""
        raise InvalidMessageError.at(f"role must be 'user' or 'assistant', not {role!r}{hint}", f"{where}.role")
    content = raw.get("content")
    if isinstance(content, str):
        return ChatMessage(role, [TextPart(content)] if content else [])
    if not isinstance(content, list):
        raise InvalidMessageError.at(
            f"content must be a string or a list of blocks, not {type_name(content)}", f"{where}.content"
        )
    return ChatMessage(role, [_block(block, role, f"{where}.content[{j}]") for j, block in enumerate(content)])


def _block(block: Any, role: str, where: str) -> Part:
    if not isinstance(block, Mapping):
        raise InvalidMessageError.at(f"a content block must be an object, not {type_name(block)}", where)
    kind = block.get("type")
    if kind == "text":
        text = block.get("text")
        if not isinstance(text, str):
            raise InvalidMessageError.at(f"a text block needs a string 'text', not {type_name(text)}", where)
        return TextPart(text)
    if kind != "image":
        raise InvalidMessageError.at(
            f"content block type {kind!r} is not supported; vlmkit reads 'text' and 'image' blocks", where
        )
    if role != "user":
        raise InvalidMessageError.at("images can only be sent in user messages, not in an assistant message", where)
    source = block.get("source")
    if not isinstance(source, Mapping):
        raise InvalidMessageError.at("an image block needs a 'source': {'type': 'base64' | 'url' | 'file', ...}", where)
    kind = source.get("type")
    if kind == "base64":
        media_type, data = source.get("media_type"), source.get("data")
        if not isinstance(media_type, str) or not media_type.startswith("image/"):
            raise InvalidMessageError.at(
                f"a base64 source needs 'media_type', the image's type such as 'image/jpeg', not {media_type!r}",
                f"{where}.source.media_type",
            )
        if not isinstance(data, str) or not data:
            raise InvalidMessageError.at(
                "a base64 source needs 'data': the image's bytes in base64", f"{where}.source.data"
            )
        return ImageRef(f"data:{media_type};base64,{data}", None, media_type, where)
    if kind == "url":
        url = source.get("url")
        if not isinstance(url, str) or not url:
            raise InvalidMessageError.at("a url source needs 'url': an http(s) URL of the image", f"{where}.source.url")
        return ImageRef(url, None, None, where)
    if kind == "file":
        file_id = source.get("file_id")
        if not isinstance(file_id, str) or not file_id:
            raise InvalidMessageError.at(
                "a file source needs 'file_id': the id of an image uploaded to /v1/files", f"{where}.source"
            )
        return ImageRef(file_id, None, None, where, file_id=True)
    raise InvalidMessageError.at(f"source.type must be 'base64', 'url' or 'file', not {kind!r}", f"{where}.source.type")


# --- stop reasons --------------------------------------------------------------------------------

STOP_REASONS: dict[StopReason, str] = {
    StopReason.EOS_FOUND: "end_turn",
    StopReason.STOP_STRING_FOUND: "stop_sequence",
    StopReason.USER_STOPPED: "end_turn",
    StopReason.FAILED: "end_turn",
    StopReason.MAX_PREDICTED_TOKENS_REACHED: "max_tokens",
    StopReason.CONTEXT_LENGTH_REACHED: "max_tokens",
    StopReason.CONTENT_FILTERED: "refusal",
    StopReason.TOOL_CALLS: "tool_use",
}
"""Each stop reason's Anthropic ``stop_reason``."""


def stop_reason_of(stop: StopReason) -> str:
    return STOP_REASONS.get(stop, "end_turn")


def _stop_sequence(result: PredictionResult, config: PredictionConfig) -> str | None:
    """The stop sequence that ended the reply, where it can be told: the only one the request gave."""
    if result.stats.stop_reason is StopReason.STOP_STRING_FOUND and len(config.stop) == 1:
        return config.stop[0]
    return None


# --- answers -------------------------------------------------------------------------------------


def message_id() -> str:
    return f"msg_{secrets.token_hex(12)}"


def _usage(stats: PredictionStats | None) -> dict[str, Any]:
    if stats is None:
        return {"input_tokens": 0, "output_tokens": 0}
    cached = stats.cached_prompt_tokens
    return {
        "input_tokens": stats.prompt_tokens - cached,
        "output_tokens": stats.predicted_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
    }


def message_body(
    result: PredictionResult, model: str, config: PredictionConfig, id: str | None = None
) -> dict[str, Any]:
    """The ``message`` answering a request."""
    return {
        "id": id or message_id(),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": result.content}],
        "stop_reason": stop_reason_of(result.stats.stop_reason),
        "stop_sequence": _stop_sequence(result, config),
        "usage": _usage(result.stats),
    }


def count_body(tokens: int) -> dict[str, Any]:
    return {"input_tokens": tokens}


class EventWriter:
    """The events of one streamed message, as ``(event name, data)`` pairs: :meth:`start` (the message,
    its text block and a ping), :meth:`text` for each fragment, :meth:`finish` (the block's end, the
    stop reason and usage, and the message's end), and :meth:`error`."""

    def __init__(self, model: str, config: PredictionConfig, id: str | None = None) -> None:
        self.model = model
        self.config = config
        self.id = id or message_id()

    def start(self) -> list[tuple[str, dict[str, Any]]]:
        message: dict[str, Any] = {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": _usage(None),
        }
        return [
            ("message_start", {"type": "message_start", "message": message}),
            (
                "content_block_start",
                {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
            ),
            ("ping", {"type": "ping"}),
        ]

    def text(self, content: str) -> tuple[str, dict[str, Any]]:
        delta = {"type": "text_delta", "text": content}
        return "content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}

    def finish(self, result: PredictionResult) -> list[tuple[str, dict[str, Any]]]:
        delta = {
            "stop_reason": stop_reason_of(result.stats.stop_reason),
            "stop_sequence": _stop_sequence(result, self.config),
        }
        return [
            ("content_block_stop", {"type": "content_block_stop", "index": 0}),
            ("message_delta", {"type": "message_delta", "delta": delta, "usage": _usage(result.stats)}),
            ("message_stop", {"type": "message_stop"}),
        ]

    def error(self, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """An error after the stream started: ``body`` is :func:`error_body`'s."""
        return "error", body
