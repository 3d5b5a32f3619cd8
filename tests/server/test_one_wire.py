"""One reading of OpenAI's chat format on every face: the SDK, ``completion()``, the server, and the
SDK's clients of the server and of a provider.

Each case here was once read differently by different faces (an image in an assistant message, a
``tool`` message answering no call, ``max_tokens=0``, ``content_filter``, vlmkit's ``stats`` extension). Now they all
go through ``vlmkit.wire.openai_chat``, and these tests pin the one behaviour on each face.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

import vlmkit as vk
from tests.server.conftest import API_KEY, Running, data_url, image_message
from vlmkit.errors import BadRequestError, InvalidSettingError
from vlmkit.wire.openai_chat import read_extension

AUTH = {"Authorization": f"Bearer {API_KEY}"}
NOWHERE = "http://127.0.0.1:9/v1"  # nothing listens there: a call that got as far as sending would fail otherwise


def post(server: Running, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(server.base + "/chat/completions", json=body, headers=AUTH, timeout=60)


MESSAGE_CASES = [
    pytest.param(
        [{"role": "user", "content": "What is in it?"},
         {"role": "assistant", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}],
        "messages[1].content[0]",
        "images can only be sent in user and tool messages, not in an assistant message",
        id="image-in-an-assistant-message",
    ),
    pytest.param(
        [{"role": "user", "content": "What is 6 x 7?"},
         {"role": "assistant", "content": None,
          "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "mul", "arguments": "{6, 7}"}}]}],
        "messages[1].tool_calls[0].function.arguments",
        "the arguments of the call to 'mul' are not valid JSON (Expecting property name enclosed in double quotes: "
        "line 1 column 2 (char 1)): '{6, 7}'",
        id="assistant-tool-call-arguments",
    ),
    pytest.param(
        [{"role": "user", "content": "What is 6 x 7?"}, {"role": "tool", "tool_call_id": "c1", "content": "42"}],
        "messages[1].tool_call_id",
        "this tool result answers the call id 'c1', but no assistant message before it made that call "
        "(calls made: none); send the assistant message with its tool_calls first, and answer each call by its id",
        id="tool-message-answering-no-call",
    ),
]  # fmt: skip


@pytest.fixture()
def sdk_model(monkeypatch: pytest.MonkeyPatch) -> Iterator[vk.LLM]:
    """An SDK model handle over a provider that is never reached: the SDK refuses bad input before sending."""
    monkeypatch.setenv("OPENAI_BASE_URL", NOWHERE)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-none")
    with vk.Client() as client:
        yield client.llm.model("openai/gpt-4o")


@pytest.mark.parametrize(("messages", "where", "what"), MESSAGE_CASES)
def test_messages_are_refused_alike_on_every_face(
    server: Running, sdk_model: vk.LLM, messages: list[dict[str, Any]], where: str, what: str
) -> None:
    message = f"{where}: {what}"
    with pytest.raises(BadRequestError) as sdk:
        sdk_model.respond(messages)
    with pytest.raises(BadRequestError) as call:
        vk.completion("openai/gpt-4o", messages, api_base=NOWHERE, api_key="k")
    for err in (sdk.value, call.value):
        assert (err.message, err.location, err.status_code) == (message, where, 400)
    r = post(server, {"model": "tiny", "messages": messages})
    assert r.status_code == 400
    assert r.json()["error"]["message"] == message and r.json()["error"]["param"] == where


@pytest.mark.parametrize("name", ["max_tokens", "max_completion_tokens"])
def test_max_tokens_must_be_at_least_one_on_every_face(server: Running, sdk_model: vk.LLM, name: str) -> None:
    message = f"{name} must be at least 1, not 0"
    with pytest.raises(InvalidSettingError, match=r"^max_tokens must be at least 1, not 0$"):
        vk.PredictionConfig(max_tokens=0)
    with pytest.raises(InvalidSettingError, match=r"^max_tokens must be at least 1, not 0$"):
        sdk_model.respond("hi", config={"maxTokens": 0})  # LM Studio's names, as the SDK's config dicts have them
    with pytest.raises(BadRequestError) as call:
        vk.completion("openai/gpt-4o", [{"role": "user", "content": "hi"}], api_base=NOWHERE, api_key="k", **{name: 0})
    assert (call.value.message, call.value.location, call.value.status_code) == (message, name, 400)
    r = post(server, {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], name: 0})
    assert r.status_code == 422  # a bad field of the request, as the server answers every one
    assert r.json()["error"]["message"] == message and r.json()["error"]["param"] == name
    assert server.results == []  # nothing reached the engine


@pytest.mark.parametrize("stream", [False, True])
def test_content_filter_reads_the_same_through_every_client(
    server: Running, ups: Any, monkeypatch: pytest.MonkeyPatch, stream: bool
) -> None:
    ups["a"].finish = "content_filter"  # the gateway's upstream withheld its answer
    body = {"model": "gw", "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    r = post(server, body)
    assert r.status_code == 200
    if stream:
        chunks = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: {")]
        finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
        assert [f for f in finishes if f] == ["content_filter"]
    else:
        assert r.json()["choices"][0]["finish_reason"] == "content_filter"

    monkeypatch.setenv("VLMKIT_API_KEY", API_KEY)
    with vk.Client(server.url) as remote:  # the SDK's client of a vlmkit server
        result = remote.llm.model("gw").respond("hi")
    assert result.stats.stop_reason is vk.StopReason.CONTENT_FILTERED
    assert result.content == "afakeanswer"  # the fake upstream streams its words without the spaces

    monkeypatch.setenv("OPENAI_BASE_URL", ups["a"].base)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-up")
    with vk.Client() as direct:  # the SDK's client of a provider, here the same upstream
        result = direct.llm.model("openai/up-model").respond("hi")
    assert result.stats.stop_reason is vk.StopReason.CONTENT_FILTERED


def test_the_servers_stats_extension_reads_back_as_the_engines_result(server: Running, hopper_jpeg: bytes) -> None:
    body = {"model": "tiny", "messages": image_message(data_url(hopper_jpeg)), "max_tokens": 3}
    r = post(server, body)
    assert r.status_code == 200, r.text
    stats, info = read_extension(r.json())
    engine = server.results[-1]
    assert stats == engine.stats and info == engine.model_info
    assert r.json()["choices"][0]["finish_reason"] == "length"
