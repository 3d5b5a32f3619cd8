"""Google Gemini API (AI Studio): ``generateContent`` and ``streamGenerateContent``.

Wire format: ``POST {api_base}/v1beta/models/{model}:generateContent`` with the key in
``x-goog-api-key``; ``contents`` of ``{"role": "user"|"model", "parts": [...]}`` where an image is
``{"inline_data": {"mime_type", "data"}}`` (rendered for Gemini, which reads HEIC/HEIF too) or
``{"file_data": {"mime_type", "file_uri"}}`` for a file the service holds; the system prompt is
``system_instruction``. ``detail`` maps to ``generationConfig.mediaResolution`` (low → LOW,
high → HIGH). Streaming uses ``:streamGenerateContent?alt=sse``: server-sent events, each a
``GenerateContentResponse`` carrying the next piece of text.

:mod:`vlmkit.providers.vertex` reuses this translation with Vertex AI's address and auth.
"""

from __future__ import annotations

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
    body: dict[str, Any] = {"contents": [_content(m, cfg, gcs) for m in req.messages if m.role != "system"]}
    if req.system_text:
        body["system_instruction"] = {"parts": [{"text": req.system_text}]}
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


def _content(m: Message, cfg: ProviderConfig, gcs: bool) -> dict[str, Any]:
    parts: list[dict[str, Any]] = []
    for part in m.content:
        if isinstance(part, TextInput):
            if part.text:
                parts.append({"text": part.text})
        elif isinstance(part, MediaInput):
            parts.append({"inline_data": {"mime_type": part.media.mime_type, "data": Blob(part.media.base64)}})
        else:
            parts.append(_image(part, cfg, gcs))
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
    )


class _Parser:
    def __init__(self, req: CompletionRequest, cfg: ProviderConfig) -> None:
        self.provider = cfg.provider
        self.chunks = ChunkMaker(req.model)
        self.usage = Usage()
        self.stop: FinishReason | None = None

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
