"""Tools and ``n`` through ``vlmkit serve``, driven by the official ``openai`` package: a local model
calls tools (a required call is grammar-constrained), a gateway model passes them through (the
upstream's calls come back, in pieces when streamed), and ``n=2`` gives two choices, streamed and not."""

from __future__ import annotations

import base64
import json
from typing import Any

import jsonschema
import openai
import pytest

from tests.server.conftest import API_KEY, Running, error_of
from vlmkit.wire.openai_chat import ToolCallAssembler

SCHEMA = {"type": "object", "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}}, "required": ["x", "y"]}
TOOLS: list[Any] = [{"type": "function", "function": {"name": "zoom", "description": "Zoom in.", "parameters": SCHEMA}}]
ASK: list[Any] = [{"role": "user", "content": "Where is the cat?"}]


def client(server: Running) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base, api_key=API_KEY, max_retries=0, timeout=120)


def assembled(stream: Any) -> dict[int, tuple[list[Any], list[str]]]:
    """Each choice's calls (joined from their pieces) and finish reasons, by index."""
    pieces: dict[int, ToolCallAssembler] = {}
    finishes: dict[int, list[str]] = {}
    for chunk in stream:
        for choice in chunk.choices:
            calls = [c.model_dump() for c in choice.delta.tool_calls or []]
            pieces.setdefault(choice.index, ToolCallAssembler()).feed(calls)
            if choice.finish_reason:
                finishes.setdefault(choice.index, []).append(choice.finish_reason)
    return {i: (pieces[i].calls(), finishes.get(i, [])) for i in pieces}


def test_a_local_model_calls_a_required_tool(server: Running) -> None:
    answer = client(server).chat.completions.create(
        model="tiny", messages=ASK, tools=TOOLS, tool_choice="required", temperature=0, max_tokens=120
    )
    (choice,) = answer.choices
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls or []
    assert call.type == "function" and call.function.name == "zoom" and call.id.startswith("call_")
    jsonschema.validate(json.loads(call.function.arguments), SCHEMA)


def test_a_local_model_streams_its_call(server: Running) -> None:
    stream = client(server).chat.completions.create(
        model="tiny", messages=ASK, tools=TOOLS, tool_choice={"type": "function", "function": {"name": "zoom"}},
        temperature=0, max_tokens=120, stream=True,
    )  # fmt: skip
    ((calls, finishes),) = assembled(stream).values()
    (call,) = calls
    assert call.name == "zoom" and finishes == ["tool_calls"]
    jsonschema.validate(json.loads(call.arguments), SCHEMA)


def test_a_local_model_reads_a_tool_result_with_an_image(server: Running, hopper_jpeg: bytes) -> None:
    url = "data:image/jpeg;base64," + base64.b64encode(hopper_jpeg).decode()
    call = {"id": "call_1", "type": "function", "function": {"name": "zoom", "arguments": '{"x": 1, "y": 2}'}}
    messages: list[Any] = [
        *ASK,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1",
         "content": [{"type": "text", "text": "zoomed"}, {"type": "image_url", "image_url": {"url": url}}]},
    ]  # fmt: skip
    answer = client(server).chat.completions.create(model="tiny", messages=messages, tools=TOOLS, max_tokens=3)
    assert answer.choices[0].message.content is not None
    assert server.results[-1].stats.images_encoded + server.results[-1].stats.images_reused == 1


@pytest.mark.parametrize("stream", [False, True])
def test_n_choices_from_a_local_model(server: Running, stream: bool) -> None:
    kwargs: dict[str, Any] = {"model": "tiny", "messages": ASK, "n": 2, "max_tokens": 3, "seed": 1}
    if not stream:
        answer = client(server).chat.completions.create(**kwargs)
        assert [c.index for c in answer.choices] == [0, 1]
        assert answer.usage is not None and answer.usage.completion_tokens == 6
        return
    texts: dict[int, str] = {}
    finishes: dict[int, str] = {}
    for chunk in client(server).chat.completions.create(**kwargs, stream=True):
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
            if choice.finish_reason:
                finishes[choice.index] = choice.finish_reason
    assert sorted(texts) == [0, 1] and finishes == {0: "length", 1: "length"}
    assert len(server.results) == 2


ZOOM_CALL = {"id": "call_up", "type": "function", "function": {"name": "zoom", "arguments": '{"x": 3, "y": 4}'}}


def test_a_gateway_model_passes_tools_through_and_returns_calls(server: Running, ups: Any, hopper_jpeg: bytes) -> None:
    ups["a"].calls = [ZOOM_CALL]
    url = "data:image/jpeg;base64," + base64.b64encode(hopper_jpeg).decode()
    earlier = {"id": "call_0", "type": "function", "function": {"name": "zoom", "arguments": '{"x": 0, "y": 0}'}}
    messages: list[Any] = [
        *ASK,
        {"role": "assistant", "content": None, "tool_calls": [earlier]},
        {"role": "tool", "tool_call_id": "call_0",
         "content": [{"type": "text", "text": "zoomed"}, {"type": "image_url", "image_url": {"url": url}}]},
    ]  # fmt: skip
    answer = client(server).chat.completions.create(
        model="gw", messages=messages, tools=TOOLS, tool_choice="auto", parallel_tool_calls=False
    )
    (choice,) = answer.choices
    assert choice.finish_reason == "tool_calls"
    assert [c.model_dump() for c in choice.message.tool_calls or []] == [ZOOM_CALL]
    sent = ups["a"].requests[-1]
    assert sent["tools"] == TOOLS and sent["tool_choice"] == "auto" and sent["parallel_tool_calls"] is False
    assert sent["messages"][2] == {"role": "tool", "tool_call_id": "call_0", "content": "zoomed"}
    assert sent["messages"][3]["role"] == "user"  # the result's image, where OpenAI takes images
    assert sent["messages"][3]["content"][1]["image_url"]["url"].startswith("data:image/jpeg;base64,")

    ((calls, finishes),) = assembled(
        client(server).chat.completions.create(model="gw", messages=ASK, tools=TOOLS, stream=True)
    ).values()
    assert [(c.id, c.name, c.arguments) for c in calls] == [("call_up", "zoom", '{"x": 3, "y": 4}')]
    assert finishes == ["tool_calls"]


@pytest.mark.parametrize("stream", [False, True])
def test_n_choices_from_a_gateway_model(server: Running, ups: Any, stream: bool) -> None:
    if stream:
        chunks = list(client(server).chat.completions.create(model="gw", messages=ASK, n=2, stream=True))
        assert {c.index for chunk in chunks for c in chunk.choices} == {0, 1}
    else:
        answer = client(server).chat.completions.create(model="gw", messages=ASK, n=2)
        assert [(c.index, c.message.content) for c in answer.choices] == [(0, "a fake answer"), (1, "a fake answer")]
    assert ups["a"].requests[-1]["n"] == 2  # OpenAI takes n: sent once


def test_bad_tools_are_400s_naming_the_part(server: Running) -> None:
    import httpx

    bad = [{"type": "function", "function": {"name": "zoom", "parameters": {"type": "object", "required": "x"}}}]
    r = httpx.post(
        server.base + "/chat/completions",
        json={"model": "tiny", "messages": ASK, "tools": bad},
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=60,
    )
    assert r.status_code == 400
    error = error_of(r)
    assert error["param"] == "tools[0].function.parameters"
    assert error["message"] == (
        "tools[0].function.parameters: parameters is not valid JSON Schema: at .required: 'x' is not of type 'array'"
    )


def test_the_sdks_act_through_the_server(server: Running) -> None:
    """The SDK's client of a vlmkit server runs act(): the tools go to the server, the local model's
    forced call comes back, the tool's image is uploaded and sent in the tool result."""
    from PIL import Image

    import vlmkit as vk

    seen: list[dict[str, int]] = []

    def zoom(x: int, y: int) -> Image.Image:
        """Zoom in."""
        seen.append({"x": x, "y": y})
        return Image.new("RGB", (40, 30), (0, 90, 200))

    with vk.Client(server.url, api_key=API_KEY) as sdk:
        model = sdk.llm.model("tiny")
        done = model.act(
            "Where is the cat?", [zoom], config={"temperature": 0, "maxTokens": 120, "toolChoice": "required"},
            max_prediction_rounds=2,
        )  # fmt: skip
        with pytest.raises(vk.InvalidSettingError) as err:
            model.respond("Hi", config={"n": 2})
    assert len(seen) == 1 and done.rounds == 2
    assert [m.role for m in done.chat] == ["user", "assistant", "tool", "assistant"]
    assert server.results[-1].stats.image_sizes != []  # the last round's prompt held the tool's image
    assert err.value.location == "n"
    assert err.value.message == "respond() gives one answer, not n=2; call it once for each answer you want"
