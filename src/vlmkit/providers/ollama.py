"""Ollama's native chat API.

Wire format: ``POST {api_base}/api/chat`` with ``{"model", "messages": [{"role", "content",
"images": [base64, ...]}], "stream", "options"}``: a message's images go in its ``images`` list as
bare base64 (rendered for Ollama: JPEG or PNG, upright, at most 2048 px). ``stream`` defaults to true
at Ollama, so it is always sent. Streams are NDJSON: one JSON object per line, the last with
``"done": true``, ``done_reason`` and the token counts.

Tools are OpenAI's ``tools`` list as it is; a call is an assistant message's ``tool_calls`` of
``{"function": {"name", "arguments": {...}}}`` (the arguments an object, not text); a result is a
``tool`` message with ``tool_name`` and its images in ``images``, as any message's. Ollama has no
``tool_choice``: ``none`` sends no tools, and a call it cannot force (``required``, a named tool) is
refused rather than silently not forced. Calls come whole; Ollama gives them no ids, so vlmkit makes them.
"""

from __future__ import annotations

import json
from typing import Any

from vlmkit.errors import BadRequestError
from vlmkit.providers.base import Event, ProviderConfig, WireRequest
from vlmkit.providers.jsonbody import Blob, dig
from vlmkit.providers.rendering import reference_error, render
from vlmkit.providers.request import CompletionRequest, Message
from vlmkit.providers.response import (
    ChatCompletion,
    ChatCompletionChunk,
    ChunkMaker,
    FinishReason,
    Usage,
    completion_of,
)
from vlmkit.providers.status import provider_error
from vlmkit.tools import ToolCall, call_id, parse_arguments
from vlmkit.wire.openai_chat import tools_to_openai

STREAM_FORMAT = "ndjson"


def build_request(req: CompletionRequest, cfg: ProviderConfig) -> WireRequest:
    body: dict[str, Any] = {
        "model": req.model,
        "messages": [_message(m, cfg) for m in req.messages],
        "stream": req.stream,
    }
    p = req.params
    options: dict[str, Any] = {}
    for name, value in (
        ("temperature", p.temperature),
        ("top_p", p.top_p),
        ("num_predict", p.max_tokens),
        ("stop", p.stop),
        ("seed", p.seed),
        ("presence_penalty", p.presence_penalty),
        ("frequency_penalty", p.frequency_penalty),
    ):
        if value is not None:
            options[name] = value
    if options:
        body["options"] = options
    fmt = p.response_format or {}
    schema = dig(fmt, "json_schema", "schema")
    if isinstance(schema, dict):
        body["format"] = schema
    elif fmt.get("type") in ("json_object", "json_schema"):
        body["format"] = "json"
    choice = req.tool_choice
    if choice is not None and choice.mode == "required":
        exc = BadRequestError(
            f"{cfg.provider} cannot force a tool call (it has no tool_choice); send tool_choice 'auto' or leave it out"
        )
        exc.location = "tool_choice"
        raise exc
    if req.tools and not (choice is not None and choice.mode == "none"):
        body["tools"] = tools_to_openai(req.tools)
    body.update(req.extra_body)
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if cfg.api_key:
        headers["Authorization"] = f"Bearer {cfg.api_key}"
    headers.update(cfg.headers)
    return WireRequest(cfg.api_base.rstrip("/") + "/api/chat", headers, body)


def _message(m: Message, cfg: ProviderConfig) -> dict[str, Any]:
    out: dict[str, Any] = {"role": m.role, "content": m.text}
    images = []
    for image in m.images:
        if image.handle is not None and image.handle.is_reference:
            raise reference_error(image, cfg.provider, "send the image's bytes, a data URL or an http URL instead")
        images.append(Blob(render(image, cfg.policy).base64))
    if images:
        out["images"] = images
    if m.tool_calls:
        out["tool_calls"] = [
            {"function": {"name": c.name, "arguments": parse_arguments(c.arguments, c.name)}} for c in m.tool_calls
        ]
    if m.role == "tool" and m.tool_name:
        out["tool_name"] = m.tool_name
    return out


def _calls(message: Any) -> list[ToolCall]:
    raw = message.get("tool_calls") if isinstance(message, dict) else None
    out = []
    for call in raw if isinstance(raw, list) else []:
        fn = call.get("function") if isinstance(call, dict) else None
        if isinstance(fn, dict):
            arguments = fn.get("arguments")
            text = arguments if isinstance(arguments, str) else json.dumps(arguments or {})
            out.append(ToolCall(str(call.get("id") or call_id()), str(fn.get("name") or ""), text))
    return out


def _finish(data: Any) -> FinishReason:
    return "length" if data.get("done_reason") == "length" else "stop"


def _usage(data: Any) -> Usage:
    return Usage.of(data.get("prompt_eval_count"), data.get("eval_count"))


def parse_response(data: Any, req: CompletionRequest, cfg: ProviderConfig) -> ChatCompletion:
    if not isinstance(data, dict) or "error" in data or not isinstance(data.get("message"), dict):
        raise provider_error(cfg.provider, None, data if isinstance(data, dict) else {"error": str(data)[:300]})
    return completion_of(
        data["message"].get("content") or "",
        data.get("model") or req.model,
        finish_reason=_finish(data),
        usage=_usage(data),
        provider=cfg.provider,
        tool_calls=_calls(data["message"]),
    )


class _Parser:
    def __init__(self, req: CompletionRequest, cfg: ProviderConfig) -> None:
        self.provider = cfg.provider
        self.chunks = ChunkMaker(req.model)
        self.n_calls = 0

    def feed(self, event: Event) -> list[ChatCompletionChunk]:
        data = event.data
        if not isinstance(data, dict):
            return []
        if "error" in data:
            raise provider_error(self.provider, None, data)
        out = []
        text = dig(data, "message", "content")
        if text:
            out.append(self.chunks.text(text))
        for call in _calls(data.get("message")):
            out.append(self.chunks.tool_call(self.n_calls, call.id, call.name, call.arguments))
            self.n_calls += 1
        if data.get("done"):
            out.append(self.chunks.finish(_finish(data), _usage(data)))
        return out

    def close(self) -> list[ChatCompletionChunk]:
        return []


def stream_parser(req: CompletionRequest, cfg: ProviderConfig) -> _Parser:
    return _Parser(req, cfg)
