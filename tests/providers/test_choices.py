"""``n`` choices through ``completion()``: sent as ``n`` where the provider takes it (OpenAI), asked
``n`` times where it does not (Anthropic here), streamed and not; the answers' choices numbered 0..n-1."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.providers.conftest import OPENAI_REPLY, Reply, Upstream
from tests.providers.test_streams import sse
from vlmkit.providers import acompletion, completion

ASK = [{"role": "user", "content": "Name a colour."}]


def anthropic_reply(text: str) -> dict[str, Any]:
    return {
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude", "stop_reason": "end_turn",
        "content": [{"type": "text", "text": text}], "usage": {"input_tokens": 4, "output_tokens": 1},
    }  # fmt: skip


def test_openai_takes_n_and_answers_with_n_choices(upstream: Upstream) -> None:
    two = {**OPENAI_REPLY, "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "red"}, "finish_reason": "stop"},
        {"index": 1, "message": {"role": "assistant", "content": "blue"}, "finish_reason": "stop"},
    ]}  # fmt: skip
    upstream.script(Reply(body=two))
    answer = completion("openai/gpt-4o", ASK, n=2, api_base=upstream.base, api_key="k")
    assert [(c.index, c.message.content) for c in answer.choices] == [(0, "red"), (1, "blue")]
    assert answer.usage.prompt_tokens == 12  # the one answer's usage, not counted twice
    (seen,) = upstream.seen
    assert seen.json["n"] == 2


def test_a_provider_without_n_is_asked_n_times(upstream: Upstream) -> None:
    upstream.script(Reply(body=anthropic_reply("red")), Reply(body=anthropic_reply("blue")))
    answer = completion("anthropic/claude-sonnet-4-5", ASK, n=2, api_base=upstream.base, api_key="k")
    assert [(c.index, c.message.content) for c in answer.choices] == [(0, "red"), (1, "blue")]
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (8, 2)
    assert len(upstream.seen) == 2 and all("n" not in s.json for s in upstream.seen)


def anthropic_stream(text: str) -> str:
    return sse(
        (
            "message_start",
            {"type": "message_start", "message": {"id": "m", "model": "claude", "usage": {"input_tokens": 4}}},
        ),
        (
            "content_block_delta",
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}},
        ),
        (
            "message_delta",
            {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 1}},
        ),
        ("message_stop", {"type": "message_stop"}),
    )


@pytest.mark.parametrize("asynchronous", [False, True])
async def test_streams_of_a_provider_without_n_are_read_one_after_the_other(
    upstream: Upstream, asynchronous: bool
) -> None:
    upstream.script(
        Reply(body=anthropic_stream("red"), content_type="text/event-stream"),
        Reply(body=anthropic_stream("blue"), content_type="text/event-stream"),
    )
    kwargs: dict[str, Any] = {"n": 2, "api_base": upstream.base, "api_key": "k", "stream": True}
    if asynchronous:
        stream = await acompletion("anthropic/claude-sonnet-4-5", ASK, **kwargs)
        chunks = [chunk async for chunk in stream]
    else:
        chunks = list(completion("anthropic/claude-sonnet-4-5", ASK, **kwargs))
    texts: dict[int, str] = {}
    finishes = []
    for chunk in chunks:
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
            if choice.finish_reason:
                finishes.append((choice.index, choice.finish_reason))
    assert texts == {0: "red", 1: "blue"} and finishes == [(0, "stop"), (1, "stop")]
    assert [json.loads(s.body).get("n") for s in upstream.seen] == [None, None]
