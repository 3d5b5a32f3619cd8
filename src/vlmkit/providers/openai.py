"""OpenAI Chat Completions, and every server that speaks it (see ``registry.OPENAI_COMPATIBLE``).

Wire format: ``POST {api_base}/chat/completions`` with ``messages`` whose user content is a list of
``{"type": "text"}`` and ``{"type": "image_url", "image_url": {"url", "detail"}}`` parts; images go as
data URLs rendered for the provider's policy, or as their http(s) URL where the provider fetches
URLs itself. Streams are server-sent events of ``chat.completion.chunk`` objects ending in
``data: [DONE]``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from vlmkit._types import Detail
from vlmkit.images.document import PDF_MIME
from vlmkit.images.policy import ImagePolicy
from vlmkit.providers.base import Event, ProviderConfig, WireRequest
from vlmkit.providers.jsonbody import Blob, dig
from vlmkit.providers.rendering import reference_error, render
from vlmkit.providers.request import CompletionRequest, ImageInput, MediaInput, Message
from vlmkit.providers.response import (
    ChatCompletion,
    ChatCompletionChunk,
    ChunkChoice,
    Delta,
    FinishReason,
    Usage,
    completion_of,
)
from vlmkit.providers.status import provider_error
from vlmkit.providers.streams import DONE

STREAM_FORMAT = "sse"

LOW_DETAIL_EDGE = 512
"""OpenAI sees a low-detail image as one 512 x 512 tile: larger pixels are never looked at."""


def build_request(req: CompletionRequest, cfg: ProviderConfig) -> WireRequest:
    opts = cfg.options
    body: dict[str, Any] = {"model": req.model, "messages": [_message(m, cfg) for m in req.messages]}
    p = req.params
    token_field = opts.get("max_tokens_field", "max_tokens")
    for name, value in (
        ("temperature", p.temperature),
        ("top_p", p.top_p),
        (token_field, p.max_tokens),
        ("stop", p.stop),
        ("seed", p.seed),
        ("presence_penalty", p.presence_penalty),
        ("frequency_penalty", p.frequency_penalty),
        ("response_format", p.response_format),
        ("user", p.user),
    ):
        if value is not None:
            body[name] = value
    if req.stream:
        body["stream"] = True
        if opts.get("stream_usage", True):
            body["stream_options"] = {"include_usage": True}
    body.update(req.extra_body)
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if cfg.api_key:
        if opts.get("auth") == "api-key":
            headers["api-key"] = cfg.api_key
        else:
            headers["Authorization"] = f"Bearer {cfg.api_key}"
    headers.update(cfg.headers)
    return WireRequest(_url(req, cfg), headers, body)


def _url(req: CompletionRequest, cfg: ProviderConfig) -> str:
    base = cfg.api_base.rstrip("/")
    if cfg.options.get("auth") == "api-key" and "/openai/deployments/" not in base:  # Azure OpenAI
        version = cfg.options.get("api_version")
        return f"{base}/openai/deployments/{quote(req.model, safe='')}/chat/completions?api-version={version}"
    if "api_version" in cfg.options:
        return f"{base}/chat/completions?api-version={cfg.options['api_version']}"
    return f"{base}/chat/completions"


def _message(m: Message, cfg: ProviderConfig) -> dict[str, Any]:
    if m.text_only:
        return {"role": m.role, "content": m.text}
    parts: list[dict[str, Any]] = []
    for part in m.content:
        if isinstance(part, ImageInput):
            parts.append({"type": "image_url", "image_url": _image(part, cfg)})
        elif isinstance(part, MediaInput):  # a file input: OpenAI reads the PDF's text and pages
            data = Blob(f"data:{PDF_MIME};base64,{part.media.base64}")
            parts.append({"type": "file", "file": {"filename": part.media.name, "file_data": data}})
        else:
            parts.append({"type": "text", "text": part.text})
    return {"role": m.role, "content": parts}


def image_policy(cfg: ProviderConfig, detail: Detail | None) -> ImagePolicy:
    """The policy an image is rendered with: the provider's, within 512 px where low detail is sent."""
    policy = cfg.policy
    if detail == "low" and cfg.options.get("detail", False):
        policy = policy.replace(max_long_edge=min(policy.max_long_edge or LOW_DETAIL_EDGE, LOW_DETAIL_EDGE))
    return policy


def _image(image: ImageInput, cfg: ProviderConfig) -> dict[str, Any]:
    detail = image.detail if cfg.options.get("detail", False) else None
    url: str | Blob
    if image.handle is None and image.url and cfg.fetches_urls:
        url = image.url
    elif image.handle is not None and image.handle.is_reference:
        raise reference_error(image, cfg.provider, "send the image's bytes, a data URL or an https URL instead")
    else:
        url = Blob(render(image, image_policy(cfg, image.detail)).data_url)
    return {"url": url, "detail": detail} if detail else {"url": url}


# --- responses -----------------------------------------------------------------------------------

_FINISH: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "content_filter": "content_filter",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "eos": "stop",
}


def finish_reason(value: Any) -> FinishReason | None:
    return None if value is None else _FINISH.get(str(value), "stop")


def _usage(data: Any) -> Usage:
    return Usage.of(dig(data, "prompt_tokens"), dig(data, "completion_tokens"))


def parse_response(data: Any, req: CompletionRequest, cfg: ProviderConfig) -> ChatCompletion:
    if not isinstance(data, dict) or not isinstance(data.get("choices"), list):
        raise provider_error(cfg.provider, None, {"error": {"message": f"unexpected response: {str(data)[:300]}"}})
    if "error" in data and not data["choices"]:
        raise provider_error(cfg.provider, None, data)
    return completion_of(
        dig(data, "choices", 0, "message", "content"),
        data.get("model") or req.model,
        finish_reason=finish_reason(dig(data, "choices", 0, "finish_reason")),
        usage=_usage(data.get("usage")),
        id=data.get("id"),
        created=data.get("created"),
        provider=cfg.provider,
    )


class _Parser:
    def __init__(self, req: CompletionRequest, cfg: ProviderConfig) -> None:
        self.model = req.model
        self.provider = cfg.provider

    def feed(self, event: Event) -> list[ChatCompletionChunk]:
        data = event.data
        if data is DONE or not isinstance(data, dict):
            return []
        if "error" in data:
            raise provider_error(self.provider, None, data)
        choices = []
        for raw in data.get("choices") or []:
            delta = raw.get("delta") or {}
            choices.append(
                ChunkChoice(
                    Delta(delta.get("content"), delta.get("role")),
                    finish_reason(raw.get("finish_reason")),
                    int(raw.get("index") or 0),
                )
            )
        usage = data.get("usage")
        return [
            ChatCompletionChunk(
                choices,
                data.get("model") or self.model,
                data.get("id") or "",
                int(data.get("created") or 0),
                usage=_usage(usage) if isinstance(usage, dict) else None,
            )
        ]

    def close(self) -> list[ChatCompletionChunk]:
        return []


def stream_parser(req: CompletionRequest, cfg: ProviderConfig) -> _Parser:
    return _Parser(req, cfg)
