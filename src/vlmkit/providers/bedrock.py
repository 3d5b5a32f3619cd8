"""AWS Bedrock Converse and ConverseStream.

Wire format: ``POST https://bedrock-runtime.{region}.amazonaws.com/model/{modelId}/converse`` (or
``/converse-stream``), signed with SigV4 by botocore's own signer (or a Bedrock API key as a bearer
token). Messages hold content blocks: ``{"text"}`` and ``{"image": {"format": "jpeg"|"png"|"gif"|
"webp", "source": {"bytes": base64}}}`` (rendered for Bedrock: at most 3.75 MB and 8000 px), or
``{"source": {"s3Location": {"uri"}}}`` for an ``s3://`` image. The system prompt is ``system``;
settings are ``inferenceConfig``. Streams are AWS event-stream frames whose events are
``messageStart``, ``contentBlockDelta``, ``messageStop`` and ``metadata`` (usage).

Tools are ``toolConfig.tools`` of ``toolSpec`` (``name``, ``description``, ``inputSchema.json``) and
``toolConfig.toolChoice`` (``auto``, ``any`` for OpenAI's ``required``, ``tool`` for a named one;
Converse has no "none": then the tools are still sent, as a chat holding calls needs them, and the
model may call one). A call is a ``toolUse`` block of an assistant turn; a result is a ``toolResult``
block of a user turn whose ``content`` holds its text and its images (``image`` blocks, where
Converse takes them). Streamed calls start in ``contentBlockStart`` and their input comes in
``contentBlockDelta`` pieces.
"""

from __future__ import annotations

import json
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
from vlmkit.tools import ToolCall, ToolChoice, parse_arguments

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
    if req.tools:
        specs = [{"toolSpec": _spec(t)} for t in req.tools]
        body["toolConfig"] = {"tools": specs}
        choice = _choice(req.tool_choice)
        if choice:
            body["toolConfig"]["toolChoice"] = choice
    body.update(req.extra_body)
    action = "converse-stream" if req.stream else "converse"
    url = f"{cfg.api_base.rstrip('/')}/model/{quote(req.model, safe='')}/{action}"
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if req.stream:
        headers["Accept"] = "application/vnd.amazon.eventstream"
    headers.update(cfg.headers)
    return WireRequest(url, headers, body)


def _spec(tool: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"name": tool.name, "inputSchema": {"json": dict(tool.parameters)}}
    if tool.description:
        spec["description"] = tool.description
    return spec


def _choice(choice: ToolChoice | None) -> dict[str, Any] | None:
    if choice is None or choice.mode in ("auto", "none"):
        return None
    if choice.name is not None:
        return {"tool": {"name": choice.name}}
    return {"any": {}}


def _messages(req: CompletionRequest, cfg: ProviderConfig) -> list[dict[str, Any]]:
    """Converse messages; consecutive turns of one role are merged, as Converse requires alternation
    (a tool result is a user turn)."""
    out: list[dict[str, Any]] = []
    for m in req.messages:
        if m.role == "system":
            continue
        role = "assistant" if m.role == "assistant" else "user"
        blocks = (
            [{"toolResult": {"toolUseId": m.tool_call_id, "content": _blocks(m, cfg) or [{"text": ""}]}}]
            if m.role == "tool"
            else _blocks(m, cfg)
        )
        if not blocks:
            continue
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})
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
    for call in m.tool_calls:
        use = {"toolUseId": call.id, "name": call.name, "input": parse_arguments(call.arguments, call.name)}
        blocks.append({"toolUse": use})
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
    uses = [b["toolUse"] for b in content if isinstance(b, dict) and isinstance(b.get("toolUse"), dict)]
    return completion_of(
        text,
        req.model,
        finish_reason=_finish(data.get("stopReason")) or "stop",
        usage=_usage(data.get("usage")),
        provider=cfg.provider,
        tool_calls=[
            ToolCall(str(u.get("toolUseId")), str(u.get("name")), json.dumps(u.get("input") or {})) for u in uses
        ],
    )


class _Parser:
    def __init__(self, req: CompletionRequest, cfg: ProviderConfig) -> None:
        self.chunks = ChunkMaker(req.model)
        self.stop: FinishReason | None = None
        self.calls: dict[int, int] = {}
        """Each toolUse block's index, and its call's index among the calls."""

    def feed(self, event: Event) -> list[ChatCompletionChunk]:
        data = event.data if isinstance(event.data, dict) else {}
        block = int(data.get("contentBlockIndex") or 0)
        if event.name == "contentBlockStart":
            use = dig(data, "start", "toolUse")
            if isinstance(use, dict):
                index = self.calls.setdefault(block, len(self.calls))
                return [self.chunks.tool_call(index, use.get("toolUseId"), use.get("name"), "")]
            return []
        if event.name == "contentBlockDelta":
            piece = dig(data, "delta", "toolUse", "input")
            if piece and block in self.calls:
                return [self.chunks.tool_call(self.calls[block], arguments=piece)]
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
