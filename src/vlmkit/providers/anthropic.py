"""Anthropic Messages API.

Wire format: ``POST {api_base}/v1/messages`` with ``x-api-key`` and ``anthropic-version`` headers; the
system prompt is a top-level ``system`` string; images are ``{"type": "image", "source": ...}``
blocks whose source is ``{"type": "base64", "media_type", "data"}`` (rendered for Anthropic: at most
1568 px on the long edge, 5 MB of base64) or ``{"type": "url", "url"}`` (Anthropic fetches it).
Streams are server-sent events: ``message_start``, ``content_block_delta`` (``text_delta``),
``message_delta`` (stop reason, output tokens), ``message_stop``, ``error``.
"""

from __future__ import annotations

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

STREAM_FORMAT = "sse"
API_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096
"""``max_tokens`` is required by the Messages API; this is sent when the caller gives none."""


def build_request(req: CompletionRequest, cfg: ProviderConfig) -> WireRequest:
    p = req.params
    body: dict[str, Any] = {
        "model": req.model,
        "max_tokens": p.max_tokens or int(cfg.options.get("default_max_tokens", DEFAULT_MAX_TOKENS)),
        "messages": [_message(m, cfg) for m in req.messages if m.role != "system"],
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


def _message(m: Message, cfg: ProviderConfig) -> dict[str, Any]:
    if m.text_only:
        return {"role": m.role, "content": m.text}
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
    return {"role": m.role, "content": blocks}


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
    text = "".join(
        b.get("text", "") for b in data.get("content") or [] if isinstance(b, dict) and b.get("type") == "text"
    )
    usage = data.get("usage")
    return completion_of(
        text,
        data.get("model") or req.model,
        finish_reason=_finish(data.get("stop_reason")),
        usage=Usage.of(_input_tokens(usage), dig(usage, "output_tokens")),
        id=data.get("id"),
        provider=cfg.provider,
    )


class _Parser:
    def __init__(self, req: CompletionRequest, cfg: ProviderConfig) -> None:
        self.provider = cfg.provider
        self.chunks = ChunkMaker(req.model)
        self.input_tokens = 0
        self.output_tokens = 0
        self.stop: FinishReason | None = None

    def feed(self, event: Event) -> list[ChatCompletionChunk]:
        data = event.data if isinstance(event.data, dict) else {}
        kind = data.get("type") or event.name
        if kind == "message_start":
            message = data.get("message") or {}
            self.chunks.id = message.get("id") or self.chunks.id
            self.chunks.model = message.get("model") or self.chunks.model
            self.input_tokens = _input_tokens(message.get("usage"))
            self.output_tokens = int(dig(message, "usage", "output_tokens") or 0)
        elif kind == "content_block_delta":
            text = dig(data, "delta", "text")
            if dig(data, "delta", "type") == "text_delta" and text:
                return [self.chunks.text(text)]
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
