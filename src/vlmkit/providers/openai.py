"""OpenAI Chat Completions, and every server that speaks it (see ``registry.OPENAI_COMPATIBLE``).

Wire format: ``POST {api_base}/chat/completions`` with ``messages`` whose user content is a list of
``{"type": "text"}`` and ``{"type": "image_url", "image_url": {"url", "detail"}}`` parts; images go as
data URLs rendered for the provider's policy, or as their http(s) URL where the provider fetches
URLs itself. Streams are server-sent events of ``chat.completion.chunk`` objects ending in
``data: [DONE]``.

Tools go as OpenAI's ``tools`` / ``tool_choice`` / ``parallel_tool_calls``, calls as an assistant's
``tool_calls``, results as ``tool`` messages. A ``tool`` message holds text only at OpenAI, so the
images of a run of tool results travel in one ``user`` message right after the run (a user message
between two results would break the run that answers one assistant turn), each introduced by the
call it came from.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from vlmkit._types import Detail
from vlmkit.images.document import PDF_MIME
from vlmkit.images.handle import content_identifier
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
    DeltaFunction,
    DeltaToolCall,
    FinishReason,
    Usage,
    completion_of,
    merged,
)
from vlmkit.providers.status import provider_error
from vlmkit.providers.streams import DONE
from vlmkit.tools import ToolCall
from vlmkit.wire.openai_chat import tool_calls_from_openai, tool_calls_to_openai, tool_choice_to_openai, tools_to_openai

STREAM_FORMAT = "sse"

LOW_DETAIL_EDGE = 512
"""OpenAI sees a low-detail image as one 512 x 512 tile: larger pixels are never looked at."""


def build_request(req: CompletionRequest, cfg: ProviderConfig) -> WireRequest:
    opts = cfg.options
    body: dict[str, Any] = {"model": req.model, "messages": _messages(req.messages, cfg)}
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
        ("tools", tools_to_openai(req.tools) or None),
        ("tool_choice", tool_choice_to_openai(req.tool_choice)),
        ("parallel_tool_calls", req.parallel_tool_calls),
        ("n", req.n if req.n > 1 else None),
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


def _messages(messages: list[Message], cfg: ProviderConfig) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    moved: list[dict[str, Any]] = []  # the images of the run of tool results being written
    for m in messages:
        if m.role != "tool" and moved:
            out.append({"role": "user", "content": moved})
            moved = []
        if m.role == "tool":
            out.append({"role": "tool", "tool_call_id": m.tool_call_id, "content": m.text})
            if m.images:
                moved.append(
                    {"type": "text", "text": f"The images {m.tool_name or 'the tool'} returned ({m.tool_call_id}):"}
                )
                moved += [_image_part(image, cfg) for image in m.images]
            continue
        out.append(_message(m, cfg))
    if moved:
        out.append({"role": "user", "content": moved})
    return out


def _message(m: Message, cfg: ProviderConfig) -> dict[str, Any]:
    written: dict[str, Any]
    if m.text_only:
        written = {"role": m.role, "content": m.text or (None if m.tool_calls else "")}
    else:
        parts: list[dict[str, Any]] = []
        for part in m.content:
            if isinstance(part, ImageInput):
                parts.append(_image_part(part, cfg))
            elif isinstance(part, MediaInput):  # a file input: OpenAI reads the PDF's text and pages
                data = Blob(f"data:{PDF_MIME};base64,{part.media.base64}")
                parts.append({"type": "file", "file": {"filename": part.media.name, "file_data": data}})
            else:
                parts.append({"type": "text", "text": part.text})
        written = {"role": m.role, "content": parts}
    if m.tool_calls:
        written["tool_calls"] = tool_calls_to_openai(m.tool_calls, signatures=False)  # Gemini's, meant for Gemini
    return written


def image_policy(cfg: ProviderConfig, detail: Detail | None) -> ImagePolicy:
    """The policy an image is rendered with: the provider's, within 512 px where low detail is sent."""
    policy = cfg.policy
    if detail == "low" and cfg.options.get("detail", False):
        policy = policy.replace(max_long_edge=min(policy.max_long_edge or LOW_DETAIL_EDGE, LOW_DETAIL_EDGE))
    return policy


def _image_part(image: ImageInput, cfg: ProviderConfig) -> dict[str, Any]:
    """``{"type": "image_url", "image_url": {...}}``, with the ``uuid`` of the bytes sent where asked
    (vLLM keys its caches on it instead of hashing the pixels; a URL it fetches has none to give)."""
    detail = image.detail if cfg.options.get("detail", False) else None
    url: str | Blob
    uuid: str | None = None
    if image.handle is None and image.url and cfg.fetches_urls:
        url = image.url
    elif image.handle is not None and image.handle.is_reference:
        raise reference_error(image, cfg.provider, "send the image's bytes, a data URL or an https URL instead")
    else:
        rendered = render(image, image_policy(cfg, image.detail))
        url = Blob(rendered.data_url)
        if cfg.options.get("image_uuid") and image.handle is not None:
            uuid = content_identifier(rendered.data) if rendered.changed else image.handle.identifier
    fields: dict[str, Any] = {"url": url, "detail": detail} if detail else {"url": url}
    part: dict[str, Any] = {"type": "image_url", "image_url": fields}
    if uuid is not None:
        part["uuid"] = uuid
    return part


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
    answers = [
        completion_of(
            dig(choice, "message", "content"),
            data.get("model") or req.model,
            tool_calls=_calls(dig(choice, "message", "tool_calls"), i),
            finish_reason=finish_reason(dig(choice, "finish_reason")),
            usage=_usage(data.get("usage")),
            id=data.get("id"),
            created=data.get("created"),
            provider=cfg.provider,
        )
        for i, choice in enumerate(data["choices"] or [{}])
    ]
    return merged(answers, _usage(data.get("usage"))) if len(answers) > 1 else answers[0]


def _calls(raw: Any, i: int) -> list[ToolCall]:
    return tool_calls_from_openai(raw, f"choices[{i}].message.tool_calls", check=False) if raw else []


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
                    Delta(delta.get("content"), delta.get("role"), _pieces(delta.get("tool_calls"))),
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


def _pieces(raw: Any) -> list[DeltaToolCall] | None:
    """A chunk's ``delta.tool_calls`` as they came (pieces of calls, joined by whoever reads the stream)."""
    if not isinstance(raw, list) or not raw:
        return None
    out = []
    for i, piece in enumerate(raw):
        fn = piece.get("function") if isinstance(piece, dict) else None
        fn = fn if isinstance(fn, dict) else {}
        index = piece.get("index") if isinstance(piece, dict) else None
        out.append(
            DeltaToolCall(
                index if isinstance(index, int) else i,
                piece.get("id") if isinstance(piece, dict) else None,
                DeltaFunction(fn.get("name"), fn.get("arguments")),
                "function" if isinstance(piece, dict) and piece.get("id") else None,
                piece.get("extra_content") if isinstance(piece, dict) else None,
            )
        )
    return out


def stream_parser(req: CompletionRequest, cfg: ProviderConfig) -> _Parser:
    return _Parser(req, cfg)
