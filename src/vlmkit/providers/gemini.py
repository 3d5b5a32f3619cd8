"""Google Gemini API (AI Studio): ``generateContent`` and ``streamGenerateContent``.

Wire format: ``POST {api_base}/v1beta/models/{model}:generateContent`` with the key in
``x-goog-api-key``; ``contents`` of ``{"role": "user"|"model", "parts": [...]}`` where an image is
``{"inline_data": {"mime_type", "data"}}`` (rendered for Gemini, which reads HEIC/HEIF too) or
``{"file_data": {"mime_type", "file_uri"}}`` for a file the service holds; the system prompt is
``system_instruction``. ``detail`` maps to ``generationConfig.mediaResolution`` (low → LOW,
high → HIGH). Streaming uses ``:streamGenerateContent?alt=sse``: server-sent events, each a
``GenerateContentResponse`` carrying the next piece of text.

Tools are one ``tools`` entry of ``functionDeclarations`` (``name``, ``description``, and the JSON
Schema as ``parametersJsonSchema``); ``toolConfig.functionCallingConfig`` carries the choice
(``AUTO``, ``ANY`` with ``allowedFunctionNames`` for a named tool, ``NONE``). A call is a
``functionCall`` part of a model turn; a result is a ``functionResponse`` part of a user turn, named by
its tool, with its text as ``response.result`` and its images as ``inline_data`` parts right after it in
the same turn. Gemini sends each call whole (never in pieces); where it gives no call id, vlmkit makes one.

:mod:`vlmkit.providers.vertex` reuses this translation with Vertex AI's address and auth.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

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
from vlmkit.tools import ToolCall, ToolChoice, call_id, parse_arguments

STREAM_FORMAT = "sse"

MEDIA_RESOLUTION = {"low": "MEDIA_RESOLUTION_LOW", "high": "MEDIA_RESOLUTION_HIGH"}


def build_request(req: CompletionRequest, cfg: ProviderConfig) -> WireRequest:
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if cfg.api_key:
        headers["x-goog-api-key"] = cfg.api_key
    headers.update(cfg.headers)
    base = cfg.api_base.rstrip("/")
    version = cfg.options.get("api_version", "v1beta")
    return WireRequest(f"{base}/{version}/models/{model_path(req.model)}:{method(req)}", headers, build_body(req, cfg))


def model_path(model: str) -> str:
    return quote(model.removeprefix("models/"), safe="")


def method(req: CompletionRequest) -> str:
    return "streamGenerateContent?alt=sse" if req.stream else "generateContent"


def build_body(req: CompletionRequest, cfg: ProviderConfig, *, gcs: bool = False) -> dict[str, Any]:
    """The ``GenerateContentRequest`` body, shared with Vertex AI (``gcs``: gs:// URIs are readable)."""
    body: dict[str, Any] = {"contents": _contents(req.messages, cfg, gcs)}
    if req.system_text:
        body["system_instruction"] = {"parts": [{"text": req.system_text}]}
    if req.tools:
        body["tools"] = [{"functionDeclarations": [_declaration(t) for t in req.tools]}]
        if req.tool_choice is not None:
            body["toolConfig"] = {"functionCallingConfig": _calling(req.tool_choice)}
    config = _generation_config(req)
    if config:
        body["generationConfig"] = config
    body.update(req.extra_body)
    return body


def _generation_config(req: CompletionRequest) -> dict[str, Any]:
    p = req.params
    config: dict[str, Any] = {}
    for name, value in (
        ("temperature", p.temperature),
        ("topP", p.top_p),
        ("maxOutputTokens", p.max_tokens),
        ("stopSequences", p.stop),
        ("seed", p.seed),
        ("presencePenalty", p.presence_penalty),
        ("frequencyPenalty", p.frequency_penalty),
    ):
        if value is not None:
            config[name] = value
    fmt = p.response_format or {}
    if fmt.get("type") in ("json_object", "json_schema"):
        config["responseMimeType"] = "application/json"
        schema = dig(fmt, "json_schema", "schema")
        if isinstance(schema, dict):
            config["responseJsonSchema"] = schema
    details = {img.detail for img in req.images}
    if "high" in details:
        config["mediaResolution"] = MEDIA_RESOLUTION["high"]
    elif "low" in details:
        config["mediaResolution"] = MEDIA_RESOLUTION["low"]
    return config


def _declaration(tool: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"name": tool.name, "parametersJsonSchema": dict(tool.parameters)}
    if tool.description:
        out["description"] = tool.description
    return out


def _calling(choice: ToolChoice) -> dict[str, Any]:
    if choice.mode == "none":
        return {"mode": "NONE"}
    if choice.name is not None:
        return {"mode": "ANY", "allowedFunctionNames": [choice.name]}
    return {"mode": "ANY" if choice.mode == "required" else "AUTO"}


def _contents(messages: list[Message], cfg: ProviderConfig, gcs: bool) -> list[dict[str, Any]]:
    """Gemini's turns: a tool result is a user turn, and the results answering one model turn are one
    user turn (Gemini pairs a turn's calls with the next turn's responses)."""
    out: list[dict[str, Any]] = []
    previous = None
    for m in messages:
        if m.role == "system":
            continue
        content = _content(m, cfg, gcs)
        if m.role == "tool" and previous == "tool":
            out[-1]["parts"] += content["parts"]
        else:
            out.append(content)
        previous = m.role
    return out


def _content(m: Message, cfg: ProviderConfig, gcs: bool) -> dict[str, Any]:
    parts: list[dict[str, Any]] = []
    if m.role == "tool":
        response = {"name": m.tool_name or "", "response": {"result": m.text}}
        parts.append({"functionResponse": response})
    for part in m.content:
        if m.role == "tool" and isinstance(part, TextInput):
            continue  # the text is the response's result

        if isinstance(part, TextInput):
            if part.text:
                parts.append({"text": part.text})
        elif isinstance(part, MediaInput):
            parts.append({"inline_data": {"mime_type": part.media.mime_type, "data": Blob(part.media.base64)}})
        else:
            parts.append(_image(part, cfg, gcs))
    for call in m.tool_calls:
        written: dict[str, Any] = {
            "functionCall": {"name": call.name, "args": parse_arguments(call.arguments, call.name)}
        }
        if call.signature:  # Gemini 3 refuses a call sent back without its thought signature
            written["thoughtSignature"] = call.signature
        parts.append(written)
    if not parts:
        parts.append({"text": ""})
    return {"role": "model" if m.role == "assistant" else "user", "parts": parts}


def _image(image: ImageInput, cfg: ProviderConfig, gcs: bool) -> dict[str, Any]:
    handle = image.handle
    if handle is not None and handle.is_reference:
        source = handle.source or ""
        if not (gcs and source.startswith("gs://")):
            hint = (
                "Vertex AI reads gs:// URIs (use vertex_ai/<model>)"
                if source.startswith("gs://")
                else ("send the image's bytes, a data URL or an https URL instead")
            )
            raise reference_error(image, cfg.provider, hint)
        if not handle.mime_type:
            raise reference_error(
                image, cfg.provider, "a gs:// image needs its MIME type: add 'format': 'image/jpeg' (or png, webp...)"
            )
        return {"file_data": {"mime_type": handle.mime_type, "file_uri": source}}
    rendered = render(image, cfg.policy)
    return {"inline_data": {"mime_type": rendered.mime_type, "data": Blob(rendered.base64)}}


# --- responses -----------------------------------------------------------------------------------

_FINISH: dict[str, FinishReason] = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
}


def _finish(value: Any) -> FinishReason | None:
    return None if value is None else _FINISH.get(str(value), "stop")


def _text(data: Any) -> str:
    parts = dig(data, "candidates", 0, "content", "parts") or []
    return "".join(p.get("text", "") for p in parts if isinstance(p, dict) and not p.get("thought"))


def _calls(data: Any) -> list[ToolCall]:
    """The calls of an answer, each with the thought signature beside it (a sibling of ``functionCall``)."""
    parts = dig(data, "candidates", 0, "content", "parts") or []
    out = []
    for part in parts:
        call = part.get("functionCall") if isinstance(part, dict) else None
        if isinstance(call, dict):
            signature = part.get("thoughtSignature") or call.get("thoughtSignature")
            out.append(
                ToolCall(
                    str(call.get("id") or call_id()),
                    str(call.get("name") or ""),
                    json.dumps(call.get("args") or {}),
                    signature if isinstance(signature, str) else None,
                )
            )
    return out


def _usage(data: Any) -> Usage:
    meta = dig(data, "usageMetadata")
    completion = int(dig(meta, "candidatesTokenCount") or 0) + int(dig(meta, "thoughtsTokenCount") or 0)
    return Usage.of(dig(meta, "promptTokenCount"), completion)


def parse_response(data: Any, req: CompletionRequest, cfg: ProviderConfig) -> ChatCompletion:
    if not isinstance(data, dict):
        raise provider_error(cfg.provider, None, {"error": {"message": f"unexpected response: {str(data)[:300]}"}})
    if "error" in data:
        raise provider_error(cfg.provider, None, data)
    reason = dig(data, "candidates", 0, "finishReason")
    if not data.get("candidates") and dig(data, "promptFeedback", "blockReason"):
        reason = "SAFETY"
    return completion_of(
        _text(data),
        data.get("modelVersion") or req.model,
        finish_reason=_finish(reason) or "stop",
        usage=_usage(data),
        id=data.get("responseId"),
        provider=cfg.provider,
        tool_calls=_calls(data),
    )


class _Parser:
    def __init__(self, req: CompletionRequest, cfg: ProviderConfig) -> None:
        self.provider = cfg.provider
        self.chunks = ChunkMaker(req.model)
        self.usage = Usage()
        self.stop: FinishReason | None = None
        self.n_calls = 0

    def feed(self, event: Event) -> list[ChatCompletionChunk]:
        data = event.data
        if not isinstance(data, dict):
            return []
        if "error" in data:
            raise provider_error(self.provider, None, data)
        if data.get("responseId"):
            self.chunks.id = data["responseId"]
        if data.get("usageMetadata"):
            self.usage = _usage(data)
        out = []
        text = _text(data)
        if text:
            out.append(self.chunks.text(text))
        for call in _calls(data):
            out.append(self.chunks.tool_call(self.n_calls, call.id, call.name, call.arguments, call.signature))
            self.n_calls += 1
        reason = dig(data, "candidates", 0, "finishReason")
        if reason is None and not data.get("candidates") and dig(data, "promptFeedback", "blockReason"):
            reason = "SAFETY"
        if reason is not None:
            self.stop = _finish(reason)
        return out

    def close(self) -> list[ChatCompletionChunk]:
        # Gemini's last event carries the finish reason and the usage together: send them as one chunk.
        if self.chunks.finished:
            return []
        return [self.chunks.finish(self.stop or "stop", self.usage)]


def stream_parser(req: CompletionRequest, cfg: ProviderConfig) -> _Parser:
    return _Parser(req, cfg)
