"""Stream parsing on recorded event streams in each provider's documented shape, served by a real
HTTP server on 127.0.0.1 and read through completion(stream=True): SSE (OpenAI, Anthropic, Gemini),
NDJSON (Ollama) and AWS event-stream binary frames (Bedrock, built here by the format's spec and
decoded by botocore's parser)."""

from __future__ import annotations

import binascii
import json
import struct
from typing import Any

import anyio
import pytest

from tests.providers.conftest import Reply, Upstream
from vlmkit.errors import APIConnectionError, RateLimitError, ServerError
from vlmkit.providers import ChatCompletionChunk, acompletion, completion

HELLO = [{"role": "user", "content": "Hello"}]


def sse(*events: tuple[str | None, Any]) -> str:
    out = []
    for name, data in events:
        text = data if isinstance(data, str) else json.dumps(data)
        out.append((f"event: {name}\n" if name else "") + f"data: {text}\n\n")
    return "".join(out)


def frame(event_type: str, payload: dict[str, Any], message_type: str = "event") -> bytes:
    """One AWS event-stream message: prelude (lengths + CRC32), string headers, payload, CRC32."""
    kind = ":exception-type" if message_type == "exception" else ":event-type"
    headers = {":message-type": message_type, kind: event_type, ":content-type": "application/json"}
    head = b"".join(
        bytes([len(k)]) + k.encode() + b"\x07" + struct.pack(">H", len(v)) + v.encode() for k, v in headers.items()
    )
    body = json.dumps(payload).encode()
    prelude = struct.pack(">II", 12 + len(head) + len(body) + 4, len(head))
    message = prelude + struct.pack(">I", binascii.crc32(prelude)) + head + body
    return message + struct.pack(">I", binascii.crc32(message))


def collect(chunks: Any) -> tuple[str, list[ChatCompletionChunk]]:
    got = list(chunks)
    return "".join(c.choices[0].delta.content or "" for c in got if c.choices), got


OPENAI_STREAM = sse(
    (None, {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o", "choices": [
        {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}),
    (None, {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o", "choices": [
        {"index": 0, "delta": {"content": "A "}, "finish_reason": None}]}),
    (None, {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o", "choices": [
        {"index": 0, "delta": {"content": "cat."}, "finish_reason": None}]}),
    (None, {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o", "choices": [
        {"index": 0, "delta": {}, "finish_reason": "stop"}]}),
    (None, {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o", "choices": [],
            "usage": {"prompt_tokens": 8, "completion_tokens": 2, "total_tokens": 10}}),
    (None, "[DONE]"),
)  # fmt: skip

ANTHROPIC_STREAM = sse(
    ("message_start", {"type": "message_start", "message": {
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-3-7-sonnet-20250219", "content": [],
        "stop_reason": None, "usage": {"input_tokens": 25, "output_tokens": 1}}}),
    ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
    ("ping", {"type": "ping"}),
    ("content_block_delta", {"type": "content_block_delta", "index": 0,
                             "delta": {"type": "text_delta", "text": "A "}}),
    ("content_block_delta", {"type": "content_block_delta", "index": 0,
                             "delta": {"type": "text_delta", "text": "cat."}}),
    ("content_block_stop", {"type": "content_block_stop", "index": 0}),
    ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                       "usage": {"output_tokens": 3}}),
    ("message_stop", {"type": "message_stop"}),
)  # fmt: skip

GEMINI_STREAM = sse(
    (None, {"candidates": [{"content": {"role": "model", "parts": [{"text": "A "}]}}], "responseId": "r1",
            "usageMetadata": {"promptTokenCount": 260, "totalTokenCount": 260}}),
    (None, {"candidates": [{"content": {"role": "model", "parts": [{"text": "cat."}]}, "finishReason": "STOP"}],
            "usageMetadata": {"promptTokenCount": 260, "candidatesTokenCount": 3, "totalTokenCount": 263}}),
)  # fmt: skip

OLLAMA_STREAM = "".join(
    json.dumps(line) + "\n"
    for line in (
        {"model": "llava", "message": {"role": "assistant", "content": "A "}, "done": False},
        {"model": "llava", "message": {"role": "assistant", "content": "cat."}, "done": False},
        {"model": "llava", "message": {"role": "assistant", "content": ""}, "done": True, "done_reason": "stop",
         "prompt_eval_count": 600, "eval_count": 3},
    )
)  # fmt: skip

BEDROCK_STREAM = b"".join(
    (
        frame("messageStart", {"role": "assistant"}),
        frame("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "A "}}),
        frame("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "cat."}}),
        frame("contentBlockStop", {"contentBlockIndex": 0}),
        frame("messageStop", {"stopReason": "end_turn"}),
        frame(
            "metadata",
            {"usage": {"inputTokens": 30, "outputTokens": 3, "totalTokens": 33}, "metrics": {"latencyMs": 9}},
        ),
    )
)

CASES: dict[str, tuple[str, bytes | str, str, dict[str, Any], tuple[int, int]]] = {
    "openai": ("openai/gpt-4o", OPENAI_STREAM, "text/event-stream", {"api_key": "k"}, (8, 2)),
    "anthropic": (
        "anthropic/claude-3-7-sonnet-latest",
        ANTHROPIC_STREAM,
        "text/event-stream",
        {"api_key": "k"},
        (25, 3),
    ),
    "gemini": ("gemini/gemini-2.0-flash", GEMINI_STREAM, "text/event-stream", {"api_key": "k"}, (260, 3)),
    "ollama": ("ollama/llava", OLLAMA_STREAM, "application/x-ndjson", {}, (600, 3)),
    "bedrock": (
        "bedrock/anthropic.claude-3-haiku-20240307-v1:0",
        BEDROCK_STREAM,
        "application/vnd.amazon.eventstream",
        {"aws_access_key_id": "AK", "aws_secret_access_key": "s"},
        (30, 3),
    ),
}


@pytest.mark.parametrize("provider", list(CASES))
def test_stream_is_parsed_into_openai_chunks(upstream: Upstream, provider: str) -> None:
    model, body, content_type, kwargs, (prompt, completion_tokens) = CASES[provider]
    upstream.script(Reply(body=body, content_type=content_type))
    stream = completion(model, HELLO, stream=True, api_base=upstream.base, **kwargs)
    text, chunks = collect(stream)
    assert text == "A cat."
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    usage = [c.usage for c in chunks if c.usage is not None]
    assert [(u.prompt_tokens, u.completion_tokens, u.total_tokens) for u in usage] == [
        (prompt, completion_tokens, prompt + completion_tokens)
    ]
    assert len({c.id for c in chunks}) == 1


@pytest.mark.parametrize("provider", ["openai", "bedrock", "ollama"])
def test_async_stream(upstream: Upstream, provider: str) -> None:
    model, body, content_type, kwargs, _ = CASES[provider]
    upstream.script(Reply(body=body, content_type=content_type))

    async def main() -> str:
        stream = await acompletion(model, HELLO, stream=True, api_base=upstream.base, **kwargs)
        parts = []
        async for chunk in stream:
            if chunk.choices:
                parts.append(chunk.choices[0].delta.content or "")
        return "".join(parts)

    assert anyio.run(main) == "A cat."


def test_errors_inside_streams_are_typed(upstream: Upstream) -> None:
    overloaded = sse(
        (
            "message_start",
            {"type": "message_start", "message": {"id": "m", "model": "c", "usage": {"input_tokens": 1}}},
        ),
        ("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
    )
    upstream.script(Reply(body=overloaded, content_type="text/event-stream"))
    with pytest.raises(ServerError) as err:
        collect(
            completion("anthropic/claude-3-7-sonnet-latest", HELLO, stream=True, api_base=upstream.base, api_key="k")
        )
    assert err.value.message == "anthropic error 529: Overloaded"
    assert err.value.provider == "anthropic"

    throttled = frame("messageStart", {"role": "assistant"}) + frame(
        "throttlingException", {"message": "Too many requests, please wait."}, "exception"
    )
    upstream.script(Reply(body=throttled, content_type="application/vnd.amazon.eventstream"))
    kwargs = CASES["bedrock"][3]
    with pytest.raises(RateLimitError) as rate:
        collect(completion(CASES["bedrock"][0], HELLO, stream=True, api_base=upstream.base, **kwargs))
    assert rate.value.message == "bedrock error 429: Too many requests, please wait."

    broken = frame("messageStart", {"role": "assistant"})[:-1] + b"\x00"
    upstream.script(Reply(body=broken, content_type="application/vnd.amazon.eventstream"))
    with pytest.raises(APIConnectionError, match="bedrock sent a broken event-stream frame"):
        collect(completion(CASES["bedrock"][0], HELLO, stream=True, api_base=upstream.base, **kwargs))
