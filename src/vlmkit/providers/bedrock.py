"""AWS Bedrock Converse and ConverseStream.

Wire format: ``POST https://bedrock-runtime.{region}.amazonaws.com/model/{modelId}/converse`` (or
``/converse-stream``), signed with SigV4 by botocore's own signer (or a Bedrock API key as a bearer
token). Messages hold content blocks: ``{"text"}`` and ``{"image": {"format": "jpeg"|"png"|"gif"|
"webp", "source": {"bytes": base64}}}`` (rendered for Bedrock: at most 3.75 MB and 8000 px), or
``{"source": {"s3Location": {"uri"}}}`` for an ``s3://`` image. The system prompt is ``system``;
settings are ``inferenceConfig``. Streams are AWS event-stream frames whose events are
``messageStart``, ``contentBlockDelta``, ``messageStop`` and ``metadata`` (usage).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

from vlmkit.errors import AuthenticationError
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

STREAM_FORMAT = "eventstream"
SIGNING_NAME = "bedrock"

_FORMATS = {"image/jpeg": "jpeg", "image/png": "png", "image/gif": "gif", "image/webp": "webp"}


def default_api_base(region: str) -> str:
    return f"https://bedrock-runtime.{region}.amazonaws.com"


def build_request(req: CompletionRequest, cfg: ProviderConfig) -> WireRequest:
    body: dict[str, Any] = {"messages": _messages(req, cfg)}
    if req.system_text:
        body["system"] = [{"text": req.system_text}]
    p = req.params
    config: dict[str, Any] = {}
    for name, value in (
        ("maxTokens", p.max_tokens),
        ("temperature", p.temperature),
        ("topP", p.top_p),
        ("stopSequences", p.stop),
    ):
        if value is not None:
            config[name] = value
    if config:
        body["inferenceConfig"] = config
    body.update(req.extra_body)
    action = "converse-stream" if req.stream else "converse"
    url = f"{cfg.api_base.rstrip('/')}/model/{quote(req.model, safe='')}/{action}"
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if req.stream:
        headers["Accept"] = "application/vnd.amazon.eventstream"
    headers.update(cfg.headers)
    return WireRequest(url, headers, body)


def _messages(req: CompletionRequest, cfg: ProviderConfig) -> list[dict[str, Any]]:
    """Converse messages; consecutive turns of one role are merged, as Converse requires alternation."""
    out: list[dict[str, Any]] = []
    for m in req.messages:
        if m.role == "system":
            continue
        blocks = _blocks(m, cfg)
        if not blocks:
            continue
        if out and out[-1]["role"] == m.role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": m.role, "content": blocks})
    return out


def _blocks(m: Message, cfg: ProviderConfig) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    for part in m.content:
        if isinstance(part, TextInput):
            if part.text:  # Converse refuses blank text blocks
                blocks.append({"text": part.text})
        elif isinstance(part, MediaInput):
            source = {"bytes": Blob(part.media.base64)}
            blocks.append({"document": {"format": "pdf", "name": _document_name(part.media.name), "source": source}})
        else:
            blocks.append({"image": _image(part, cfg)})
    return blocks


def _document_name(name: str) -> str:
    """A name Converse takes: letters, digits, single spaces, hyphens, parentheses and square brackets."""
    cleaned = re.sub(r"[^A-Za-z0-9\s\-()\[\]]", " ", name.removesuffix(".pdf"))
    return re.sub(r"\s+", " ", cleaned).strip() or "document"


def _image(image: ImageInput, cfg: ProviderConfig) -> dict[str, Any]:
    handle = image.handle
    if handle is not None and handle.is_reference:
        source = handle.source or ""
        if not source.startswith("s3://"):
            raise reference_error(image, cfg.provider, "Bedrock reads s3:// URIs; send bytes or a data URL instead")
        fmt = _FORMATS.get(handle.mime_type or "")
        if fmt is None:
            raise reference_error(
                image, cfg.provider, "an s3:// image needs its type: add 'format': 'image/jpeg', png, gif or webp"
            )
        location: dict[str, Any] = {"uri": source}
        owner = cfg.options.get("bucket_owner")
        if owner:
            location["bucketOwner"] = owner
        return {"format": fmt, "source": {"s3Location": location}}
    rendered = render(image, cfg.policy)
    return {"format": _FORMATS[rendered.mime_type], "source": {"bytes": Blob(rendered.base64)}}


def sign(wire: WireRequest, body: bytes, cfg: ProviderConfig) -> dict[str, str]:
    """Headers with authentication: a Bedrock API key as a bearer token, else SigV4 by botocore."""
    if cfg.api_key:
        return {**wire.headers, "Authorization": f"Bearer {cfg.api_key}"}
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    credentials = cfg.options.get("credentials")
    if credentials is None:
        raise AuthenticationError(
            "no AWS credentials for Bedrock: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or a profile), "
            "pass aws_access_key_id=/aws_secret_access_key=, or set AWS_BEARER_TOKEN_BEDROCK",
            provider=cfg.provider,
        )
    request = AWSRequest(method="POST", url=wire.url, data=body, headers=wire.headers)
    SigV4Auth(credentials, SIGNING_NAME, str(cfg.options["region"])).add_auth(request)
    return dict(request.headers.items())


# --- responses -----------------------------------------------------------------------------------

_FINISH: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "content_filtered": "content_filter",
    "guardrail_intervened": "content_filter",
    "model_context_window_exceeded": "length",
}


def _finish(value: Any) -> FinishReason | None:
    return None if value is None else _FINISH.get(str(value), "stop")


def _usage(usage: Any) -> Usage:
    return Usage.of(dig(usage, "inputTokens"), dig(usage, "outputTokens"))


def parse_response(data: Any, req: CompletionRequest, cfg: ProviderConfig) -> ChatCompletion:
    content = dig(data, "output", "message", "content")
    if not isinstance(content, list):
        raise provider_error(cfg.provider, None, data if isinstance(data, dict) else {"message": str(data)[:300]})
    text = "".join(b.get("text", "") for b in content if isinstance(b, dict))
    return completion_of(
        text,
        req.model,
        finish_reason=_finish(data.get("stopReason")) or "stop",
        usage=_usage(data.get("usage")),
        provider=cfg.provider,
    )


class _Parser:
    def __init__(self, req: CompletionRequest, cfg: ProviderConfig) -> None:
        self.chunks = ChunkMaker(req.model)
        self.stop: FinishReason | None = None

    def feed(self, event: Event) -> list[ChatCompletionChunk]:
        data = event.data if isinstance(event.data, dict) else {}
        if event.name == "contentBlockDelta":
            text = dig(data, "delta", "text")
            return [self.chunks.text(text)] if text else []
        if event.name == "messageStop":
            self.stop = _finish(data.get("stopReason")) or "stop"
        elif event.name == "metadata":
            return [self.chunks.finish(self.stop or "stop", _usage(data.get("usage")))]
        return []

    def close(self) -> list[ChatCompletionChunk]:
        # metadata (with usage) normally follows messageStop; finish anyway if it never came
        if self.chunks.finished or self.stop is None:
            return []
        return [self.chunks.finish(self.stop)]


def stream_parser(req: CompletionRequest, cfg: ProviderConfig) -> _Parser:
    return _Parser(req, cfg)
