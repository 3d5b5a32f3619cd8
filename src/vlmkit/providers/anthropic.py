"""Anthropic Messages API.

Wire format: ``POST {api_base}/v1/messages`` with ``x-api-key`` and ``anthropic-version`` headers; the
system prompt is a top-level ``system`` string; images are ``{"type": "image", "source": ...}``
blocks whose source is ``{"type": "base64", "media_type", "data"}`` (rendered for Anthropic: at most
1568 px on the long edge, 5 MB of base64) or ``{"type": "url", "url"}`` (Anthropic fetches it).
Streams are server-sent events: ``message_start``, ``content_block_delta`` (``text_delta``),
``message_delta`` (stop reason, output tokens), ``message_stop``, ``error``.

Tools are ``tools`` of ``{"name", "description", "input_schema"}``; ``tool_choice`` is ``auto``,
``any`` (OpenAI's ``required``), ``tool`` (a named one) or ``none``, and ``parallel_tool_calls=False``
is its ``disable_parallel_tool_use``. A call is a ``tool_use`` block of an assistant message; results
are ``tool_result`` blocks of the next user message, and their images are image blocks inside the
``tool_result``, where Anthropic takes them. Streamed calls start with a ``content_block_start`` of a
``tool_use`` block and their arguments come as ``input_json_delta`` pieces.
"""

from __future__ import annotations

import json
from typing import Any

from vlmkit.images.document import PDF_MIME
from vlmkit.providers.base import Event, ProviderConfig, WireRequest
from vlmkit.providers.jsonbody import Blob, dig
from vlmkit.providers.rendering import reference_error, render
from vlmkit.providers.request import CompletionRequest, ImageInput, MediaInput, Message, TextInput
from vlmkit.providers.response import (
    ChatCompletion,
    ChatCompletionChunk,
    ChunkMaker,
    FinishReason,
    Usage,
    completion_of,
)
from vlmkit.providers.status import provider_error
from vlmkit.tools import ToolCall, ToolChoice, parse_arguments

STREAM_FORMAT = "sse"
API_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096
"""``max_tokens`` is required by the Messages API; this is sent when the caller gives none."""


def build_request(req: CompletionRequest, cfg: ProviderConfig) -> WireRequest:
    p = req.params
    body: dict[str, Any] = {
        "model": req.model,
        "max_tokens": p.max_tokens or int(cfg.options.get("default_max_tokens", DEFAULT_MAX_TOKENS)),
        "messages": _messages(req.messages, cfg),
    }
    if req.system_text:
        body["system"] = req.system_text
    if p.temperature is not None:
        body["temperature"] = p.temperature
    if p.top_p is not None:
        body["top_p"] = p.top_p
    if p.stop:
        body["stop_sequences"] = p.stop
    if p.user:
        body["metadata"] = {"user_id": p.user}
    if req.stream:
        body["stream"] = True
    if req.tools:
        body["tools"] = [
            {
                "name": t.name,
                "input_schema": dict(t.parameters),
                **({"description": t.description} if t.description else {}),
            }
            for t in req.tools
        ]
    choice = _tool_choice(req.tool_choice, req.parallel_tool_calls)
    if choice and req.tools:
        body["tool_choice"] = choice
    body.update(req.extra_body)
    headers = {
        "Content-Type": "application/json",
        "Accept": "application/json",
        "anthropic-version": str(cfg.options.get("api_version", API_VERSION)),
    }
    if cfg.api_key:
        headers["x-api-key"] = cfg.api_key
    headers.update(cfg.headers)
    return WireRequest(cfg.api_base.rstrip("/") + "/v1/messages", headers, body)


def _tool_choice(choice: ToolChoice | None, parallel: bool | None) -> dict[str, Any] | None:
    if choice is None and parallel is not False:
        return None
    if choice is None or choice.mode == "auto":
        out: dict[str, Any] = {"type": "auto"}
    elif choice.mode == "none":
        return {"type": "none"}
    elif choice.name is not None:
        out = {"type": "tool", "name": choice.name}
    else:
        out = {"type": "any"}
    if parallel is False:
        out["disable_parallel_tool_use"] = True
    return out


def _messages(messages: list[Message], cfg: ProviderConfig) -> list[dict[str, Any]]:
    """Messages API turns: tool results are user turns, and turns of one role in a row are merged
    (all results answering one assistant turn go in one user message)."""
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "system":
            continue
        role = "assistant" if m.role == "assistant" else "user"
        if m.role == "tool":
            content: str | list[dict[str, Any]] = [_tool_result(m, cfg)]
        elif m.text_only and not m.tool_calls:
            content = m.text
        else:
            content = _blocks(m, cfg)
        if out and out[-1]["role"] == role:
            last = out[-1]
            last["content"] = _as_blocks(last["content"]) + _as_blocks(content)
        else:
            out.append({"role": role, "content": content})
    return out


def _as_blocks(content: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    return content


def _blocks(m: Message, cfg: ProviderConfig) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    for part in m.content:
        if isinstance(part, TextInput):
            if part.text:  # the API refuses empty text blocks
                blocks.append({"type": "text", "text": part.text})
        elif isinstance(part, MediaInput):
            source = {"type": "base64", "media_type": PDF_MIME, "data": Blob(part.media.base64)}
            blocks.append({"type": "document", "source": source})
        else:
            blocks.append({"type": "image", "source": _source(part, cfg)})
    for call in m.tool_calls:
        blocks.append(
            {"type": "tool_use", "id": call.id, "name": call.name, "input": parse_arguments(call.arguments, call.name)}
        )
    return blocks


def _tool_result(m: Message, cfg: ProviderConfig) -> dict[str, Any]:
    result: dict[str, Any] = {"type": "tool_result", "tool_use_id": m.tool_call_id}
    result["content"] = _blocks(m, cfg) if m.images else m.text
    return result


def _source(image: ImageInput, cfg: ProviderConfig) -> dict[str, Any]:
    if image.handle is None and image.url and cfg.fetches_urls:
        return {"type": "url", "url": image.url}
    if image.handle is not None and image.handle.is_reference:
        raise reference_error(image, cfg.provider, "send the image's bytes, a data URL or an https URL instead")
    rendered = render(image, cfg.policy)
    return {"type": "base64", "media_type": rendered.mime_type, "data": Blob(rendered.base64)}


# --- responses -----------------------------------------------------------------------------------

_FINISH: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "pause_turn": "stop",
    "refusal": "content_filter",
    "model_context_window_exceeded": "length",
}


def _finish(value: Any) -> FinishReason | None:
    return None if value is None else _FINISH.get(str(value), "stop")


def _input_tokens(usage: Any) -> int:
    return sum(
        int(dig(usage, k) or 0) for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    )


def parse_response(data: Any, req: CompletionRequest, cfg: ProviderConfig) -> ChatCompletion:
    if not isinstance(data, dict) or data.get("type") == "error":
        raise provider_error(cfg.provider, None, data)
    blocks = [b for b in data.get("content") or [] if isinstance(b, dict)]
    text = "".join(b.get("text", "") for b in blocks if b.get("type") == "text")
    calls = [
        ToolCall(str(b.get("id") or ""), str(b.get("name") or ""), json.dumps(b.get("input") or {}))
        for b in blocks
        if b.get("type") == "tool_use"
    ]
    usage = data.get("usage")
    return completion_of(
        text,
        data.get("model") or req.model,
        finish_reason=_finish(data.get("stop_reason")),
        usage=Usage.of(_input_tokens(usage), dig(usage, "output_tokens")),
        id=data.get("id"),
        provider=cfg.provider,
        tool_calls=calls,
    )


class _Parser:
    def __init__(self, req: CompletionRequest, cfg: ProviderConfig) -> None:
        self.provider = cfg.provider
        self.chunks = ChunkMaker(req.model)
        self.input_tokens = 0
        self.output_tokens = 0
        self.stop: FinishReason | None = None
        self.calls: dict[int, int] = {}
        """Each tool_use block's index in the message, and its call's index among the calls."""

    def feed(self, event: Event) -> list[ChatCompletionChunk]:
        data = event.data if isinstance(event.data, dict) else {}
        kind = data.get("type") or event.name
        if kind == "message_start":
            message = data.get("message") or {}
            self.chunks.id = message.get("id") or self.chunks.id
            self.chunks.model = message.get("model") or self.chunks.model
            self.input_tokens = _input_tokens(message.get("usage"))
            self.output_tokens = int(dig(message, "usage", "output_tokens") or 0)
        elif kind == "content_block_start":
            block = data.get("content_block") or {}
            if block.get("type") == "tool_use":
                index = self.calls.setdefault(int(data.get("index") or 0), len(self.calls))
                return [self.chunks.tool_call(index, block.get("id"), block.get("name"), "")]
        elif kind == "content_block_delta":
            delta_type = dig(data, "delta", "type")
            text = dig(data, "delta", "text")
            if delta_type == "text_delta" and text:
                return [self.chunks.text(text)]
            piece = dig(data, "delta", "partial_json")
            if delta_type == "input_json_delta" and piece:
                call = self.calls.get(int(data.get("index") or 0))
                if call is not None:
                    return [self.chunks.tool_call(call, arguments=piece)]
        elif kind == "message_delta":
            self.stop = _finish(dig(data, "delta", "stop_reason"))
            self.output_tokens = int(dig(data, "usage", "output_tokens") or self.output_tokens)
            if dig(data, "usage", "input_tokens") is not None:
                self.input_tokens = _input_tokens(data.get("usage"))
        elif kind == "message_stop":
            return self._finish()
        elif kind == "error":
            raise provider_error(self.provider, None, data)
        return []

    def _finish(self) -> list[ChatCompletionChunk]:
        if self.chunks.finished:
            return []
        return [self.chunks.finish(self.stop or "stop", Usage.of(self.input_tokens, self.output_tokens))]

    def close(self) -> list[ChatCompletionChunk]:
        return []


def stream_parser(req: CompletionRequest, cfg: ProviderConfig) -> _Parser:
    return _Parser(req, cfg)
