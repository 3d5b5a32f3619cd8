"""OpenAI's Responses API, read and written in one place, with no I/O.

It shares OpenAI's chat rules with :mod:`vlmkit.wire.openai_chat` rather than restating them: an
``input`` item is a chat message, its ``input_text`` / ``input_image`` parts (an ``image_url`` as a
URL or data URL, or a ``file_id``, with ``detail``) are read by that module's message reader (at
``input[i].content[j]``), and the settings by its :func:`~vlmkit.wire.openai_chat.config_from_openai`
after renaming (``max_output_tokens`` is ``max_tokens``, ``text.format`` is ``response_format``).
What is the Responses API's own is here:

- ``input`` as a string (one user message) or a list of message items (``{"role", "content"}``,
  ``"type": "message"`` optional); an assistant item's ``output_text`` parts read as text; other
  item types (function calls, reasoning, item references) are refused, naming where.
  ``instructions`` is a system message in front. ``previous_response_id`` names a stored turn whose
  conversation comes first (the server keeps it); ``store: false`` keeps this one out of the store.
- ``text.format``: ``{"type": "text"}``, ``{"type": "json_object"}`` or ``{"type": "json_schema",
  "name", "schema", "strict"}`` (flat, where chat completions nest it under ``json_schema``).
- The ``response`` object, and the typed stream events (``response.created``,
  ``response.in_progress``, ``response.output_item.added``, ``response.content_part.added``,
  ``response.output_text.delta`` / ``.done``, ``response.content_part.done``,
  ``response.output_item.done``, ``response.completed``, and ``error``), each with its
  ``sequence_number``. A reply cut short by its token limit is ``status: "incomplete"`` with
  ``incomplete_details.reason: "max_output_tokens"``.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from vlmkit._types import type_name
from vlmkit.chat import Chat, ChatMessage, TextPart
from vlmkit.errors import InvalidMessageError, InvalidSettingError
from vlmkit.prediction import PredictionConfig, PredictionResult, PredictionStats, StopReason, setting_error
from vlmkit.wire.openai_chat import config_from_openai, finish_reason_of, to_chat

__all__ = [
    "EventWriter",
    "ResponsesRequest",
    "read_request",
    "response_body",
    "response_id",
    "to_chat_of",
]

_SETTINGS = {"max_output_tokens": "max_tokens", "temperature": "temperature", "top_p": "top_p"}
_NO_TOOLS = (
    "is not supported on /v1/responses yet; send the request without it, or use /v1/chat/completions, which calls tools"
)
_PARTS = ("input_text", "input_image", "output_text", "refusal", "text")


@dataclass(frozen=True)
class ResponsesRequest:
    """A ``POST /v1/responses`` body, checked; ``input`` is read by :func:`to_chat_of` once the model is known."""

    model: str
    input: Any
    instructions: str | None = None
    config: PredictionConfig = field(default_factory=PredictionConfig)
    stream: bool = False
    previous_response_id: str | None = None
    store: bool = True
    user: str | None = None
    text_format: dict[str, Any] = field(default_factory=lambda: {"type": "text"})


def read_request(body: Mapping[str, Any]) -> ResponsesRequest:
    """The fields of a Responses body; a bad one is an :class:`InvalidSettingError` naming it."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise setting_error("model", "model is required: the name of a model from GET /v1/models")
    given = body.get("input")
    if not isinstance(given, (str, list)) or not given:
        shown = "empty" if isinstance(given, (str, list)) else type_name(given)
        raise setting_error("input", f"input must be a string or a non-empty list of items, not {shown}")
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise setting_error("instructions", f"instructions must be a string, not {type_name(instructions)}")
    for name in ("stream", "store"):
        if body.get(name) is not None and not isinstance(body[name], bool):
            raise setting_error(name, f"{name} must be true or false, not {type_name(body[name])}")
    for name in ("tools", "tool_choice"):
        if body.get(name):
            raise setting_error(name, f"{name} {_NO_TOOLS}")
    previous = body.get("previous_response_id")
    if previous is not None and (not isinstance(previous, str) or not previous):
        raise setting_error("previous_response_id", "previous_response_id must be the id of an earlier response")
    text_format = _text_format(body.get("text"))
    settings = {ours: body.get(theirs) for theirs, ours in _SETTINGS.items()}
    settings["response_format"] = _chat_format(text_format)
    try:
        config = config_from_openai(settings, extensions=False)
    except InvalidSettingError as exc:
        theirs = {"max_tokens": "max_output_tokens", "response_format": "text.format"}.get(exc.location or "")
        if theirs is None:
            raise
        raise setting_error(theirs, exc.message.replace(exc.location or "", theirs, 1)) from None
    user = body.get("user")
    return ResponsesRequest(
        model,
        given,
        instructions,
        config,
        bool(body.get("stream")),
        previous,
        body.get("store") is not False,
        user if isinstance(user, str) else None,
        text_format,
    )


def _text_format(text: Any) -> dict[str, Any]:
    if text is None:
        return {"type": "text"}
    fmt = text.get("format") if isinstance(text, Mapping) else None
    if fmt is None and isinstance(text, Mapping):
        return {"type": "text"}
    if not isinstance(fmt, Mapping) or fmt.get("type") not in ("text", "json_object", "json_schema"):
        shown = f"type {fmt.get('type')!r}" if isinstance(fmt, Mapping) else type_name(fmt)
        raise setting_error(
            "text.format", f"text.format must be {{'type': 'text' | 'json_object' | 'json_schema', ...}}, not {shown}"
        )
    if fmt["type"] == "json_schema" and not isinstance(fmt.get("schema"), Mapping):
        raise setting_error("text.format", "a json_schema text.format needs 'schema': the JSON schema of the reply")
    return dict(fmt)


def _chat_format(fmt: Mapping[str, Any]) -> dict[str, Any] | None:
    """Chat completions' ``response_format`` for a ``text.format``."""
    if fmt["type"] == "text":
        return None
    if fmt["type"] == "json_object":
        return {"type": "json_object"}
    inner = {k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}
    return {"type": "json_schema", "json_schema": inner}


def to_chat_of(req: ResponsesRequest, history: Chat | None = None) -> Chat:
    """The conversation of a request: the stored ``history`` (of ``previous_response_id``), the
    instructions, then the input; every image an :class:`~vlmkit.chat.ImageRef` at ``input[i].content[j]``."""
    chat = Chat()
    if req.instructions:
        chat.messages.append(ChatMessage("system", [TextPart(req.instructions)]))
    if history is not None:
        chat.messages.extend(m for m in history.messages if m.role != "system")
    given = req.input
    if isinstance(given, str):
        chat.messages.append(ChatMessage("user", [TextPart(given)]))
        return chat
    chat.messages.extend(to_chat([_message(item, f"input[{i}]") for i, item in enumerate(given)], at="input").messages)
    return chat


def _message(item: Any, where: str) -> dict[str, Any]:
    """An input item as a chat message (which :func:`~vlmkit.wire.openai_chat.to_chat` reads)."""
    if not isinstance(item, Mapping):
        raise InvalidMessageError.at(f"an input item must be an object, not {type_name(item)}", where)
    kind = item.get("type", "message")
    if kind != "message":
        raise InvalidMessageError.at(
            f"input items of type {kind!r} are not supported; send messages ({{'role', 'content'}})", where
        )
    content = item.get("content")
    if not isinstance(content, list):
        return dict(item)
    parts = []
    for j, part in enumerate(content):
        name = part.get("type") if isinstance(part, Mapping) else None
        if name not in _PARTS:
            raise InvalidMessageError.at(
                f"content part type {name!r} is not supported; vlmkit reads 'input_text' and 'input_image' "
                "(and 'output_text' in assistant items)",
                f"{where}.content[{j}]",
            )
        parts.append({"type": "text", "text": part.get("text")} if name == "output_text" else part)
    return {**item, "content": parts}


# --- answers -------------------------------------------------------------------------------------


def response_id() -> str:
    return f"resp_{secrets.token_hex(24)}"


def _usage(stats: PredictionStats) -> dict[str, Any]:
    return {
        "input_tokens": stats.prompt_tokens,
        "input_tokens_details": {"cached_tokens": stats.cached_prompt_tokens},
        "output_tokens": stats.predicted_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": stats.prompt_tokens + stats.predicted_tokens,
    }


def _message_item(item_id: str, text: str | None, status: str) -> dict[str, Any]:
    content = [] if text is None else [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]
    return {"type": "message", "id": item_id, "status": status, "role": "assistant", "content": content}


def response_body(
    req: ResponsesRequest,
    result: PredictionResult | None,
    *,
    id: str,
    item_id: str,
    created_at: int,
) -> dict[str, Any]:
    """The ``response`` object: in progress (no ``result`` yet), completed or incomplete."""
    status, incomplete, output, usage = "in_progress", None, [], None
    if result is not None:
        cut = finish_reason_of(result.stats.stop_reason) == "length"  # OpenAI's one table of stop reasons
        status = "incomplete" if cut else "completed"
        if cut:
            by_limit = result.stats.stop_reason is StopReason.MAX_PREDICTED_TOKENS_REACHED
            incomplete = {"reason": "max_output_tokens" if by_limit else "max_input_tokens"}
        output = [_message_item(item_id, result.content, status)]
        usage = _usage(result.stats)
    return {
        "id": id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "error": None,
        "incomplete_details": incomplete,
        "instructions": req.instructions,
        "max_output_tokens": req.config.max_tokens,
        "model": req.model,
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": req.previous_response_id,
        "reasoning": {"effort": None, "summary": None},
        "store": req.store,
        "temperature": req.config.temperature,
        "text": {"format": req.text_format},
        "tool_choice": "auto",
        "tools": [],
        "top_p": req.config.top_p,
        "truncation": "disabled",
        "usage": usage,
        "user": req.user,
        "metadata": {},
    }


class EventWriter:
    """The typed events of one streamed response, numbered in order, as ``(type, data)`` pairs."""

    def __init__(self, req: ResponsesRequest, id: str | None = None) -> None:
        self.req = req
        self.id = id or response_id()
        self.item_id = f"msg_{secrets.token_hex(24)}"
        self.created_at = int(time.time())
        self.sequence = 0
        self.text_so_far: list[str] = []

    def _event(self, kind: str, **data: Any) -> tuple[str, dict[str, Any]]:
        out = {"type": kind, "sequence_number": self.sequence, **data}
        self.sequence += 1
        return kind, out

    def body(self, result: PredictionResult | None) -> dict[str, Any]:
        return response_body(self.req, result, id=self.id, item_id=self.item_id, created_at=self.created_at)

    def start(self) -> list[tuple[str, dict[str, Any]]]:
        where = {"item_id": self.item_id, "output_index": 0, "content_index": 0}
        return [
            self._event("response.created", response=self.body(None)),
            self._event("response.in_progress", response=self.body(None)),
            self._event(
                "response.output_item.added", output_index=0, item=_message_item(self.item_id, None, "in_progress")
            ),
            self._event(
                "response.content_part.added",
                **where,
                part={"type": "output_text", "text": "", "annotations": [], "logprobs": []},
            ),
        ]

    def text(self, delta: str) -> tuple[str, dict[str, Any]]:
        self.text_so_far.append(delta)
        where = {"item_id": self.item_id, "output_index": 0, "content_index": 0}
        return self._event("response.output_text.delta", **where, delta=delta, logprobs=[])

    def finish(self, result: PredictionResult) -> list[tuple[str, dict[str, Any]]]:
        where = {"item_id": self.item_id, "output_index": 0, "content_index": 0}
        done = self.body(result)
        item = done["output"][0]
        final = "response.incomplete" if done["status"] == "incomplete" else "response.completed"
        return [
            self._event("response.output_text.done", **where, text=result.content, logprobs=[]),
            self._event("response.content_part.done", **where, part=item["content"][0]),
            self._event("response.output_item.done", output_index=0, item=item),
            self._event(final, response=done),
        ]

    def error(self, message: str, code: str | None, param: str | None) -> tuple[str, dict[str, Any]]:
        return self._event("error", code=code, message=message, param=param)
