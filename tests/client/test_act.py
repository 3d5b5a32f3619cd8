"""``model.act()``: the agent loop on the generated model (a grammar forces the tool call), and
against loopback fakes speaking OpenAI and Anthropic, where the tool returns an image and the fake
checks where the image arrived; bad calls are told to the model, not raised."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from typing import Any

import pytest
from PIL import Image

import vlmkit as vk
from tests.client.conftest import KEY, LOAD
from tests.conftest import photo_path
from tests.providers.conftest import Reply, Upstream
from tests.providers.test_streams import sse
from vlmkit.chat import ChatMessage
from vlmkit.errors import BadRequestError
from vlmkit.prediction import StopReason

SEEN: list[dict[str, int]] = []


def zoom(x: int, y: int) -> Image.Image:
    """Zoom into the screenshot at a point; returns the zoomed view."""
    SEEN.append({"x": x, "y": y})
    return Image.new("RGB", (64, 48), (200, 30, 30))


@pytest.fixture(autouse=True)
def _fresh() -> None:
    SEEN.clear()


def asked() -> vk.Chat:
    chat = vk.Chat("You look at screenshots.")
    chat.add_user_message("Where is the cat?", images=[vk.prepare_image(photo_path("grace_hopper.jpg"))])
    return chat


def test_act_on_the_generated_model_calls_the_forced_tool_then_answers(model: vk.LLM) -> None:
    messages: list[ChatMessage] = []
    done = model.act(
        asked(),
        [zoom],
        config={"temperature": 0, "maxTokens": 120, "toolChoice": "required"},
        on_message=messages.append,
        max_prediction_rounds=2,
    )
    assert done.rounds == 2 and len(SEEN) == 1 and set(SEEN[0]) == {"x", "y"}
    assert [m.role for m in done.chat] == ["system", "user", "assistant", "tool", "assistant"]
    call = done.chat.messages[2].tool_calls[0]
    assert call.name == "zoom" and json.loads(call.arguments) == SEEN[0]
    tool = done.chat.messages[3]
    assert tool.tool_call_id == call.id and len(tool.images) == 1 and tool.images[0].width == 64
    assert messages == done.chat.messages[2:]  # on_message saw each turn as it was added
    assert done.results[0].stats.stop_reason is StopReason.TOOL_CALLS
    assert len(done.result.stats.image_sizes) == 2  # the last round saw the user's image and the tool's
    assert done.result.tool_calls == [] and done.content == done.result.content


async def test_async_act_on_the_generated_model(generated: Any) -> None:
    async with vk.AsyncClient(models_dir=generated.models_dir) as client:
        model = await client.llm.model(KEY, config=LOAD)

        async def label(ok: bool) -> str:
            """Label the screenshot."""
            return "labelled" if ok else "not labelled"

        done = await model.act(
            asked(),
            [label],
            config={"temperature": 0, "maxTokens": 60, "toolChoice": "required"},
            max_prediction_rounds=2,
        )
    assert done.rounds == 2 and done.chat.messages[3].text in ("labelled", "not labelled")


# --- against providers on 127.0.0.1 ----------------------------------------------------------------


def openai_call(*calls: tuple[str, str, str]) -> Reply:
    pieces = [{"index": i, "id": cid, "type": "function", "function": {"name": name, "arguments": args}}
              for i, (cid, name, args) in enumerate(calls)]  # fmt: skip
    events = [
        (
            None,
            {
                "id": "c1",
                "model": "gpt-4o",
                "created": 1,
                "choices": [{"index": 0, "delta": {"role": "assistant", "tool_calls": pieces}, "finish_reason": None}],
            },
        ),
        (
            None,
            {
                "id": "c1",
                "model": "gpt-4o",
                "created": 1,
                "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}],
            },
        ),
        (None, "[DONE]"),
    ]
    return Reply(body=sse(*events), content_type="text/event-stream")


def openai_text(text: str) -> Reply:
    events = [
        (
            None,
            {
                "id": "c2",
                "model": "gpt-4o",
                "created": 1,
                "choices": [{"index": 0, "delta": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            },
        ),
        (None, "[DONE]"),
    ]
    return Reply(body=sse(*events), content_type="text/event-stream")


@pytest.fixture()
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[Upstream]:
    """A scripted provider on 127.0.0.1, where OpenAI's and Anthropic's addresses point."""
    server = Upstream()
    for name, value in [("OPENAI_BASE_URL", server.base + "/v1"), ("OPENAI_API_KEY", "k"),
                        ("ANTHROPIC_API_BASE", server.base), ("ANTHROPIC_API_KEY", "k")]:  # fmt: skip
        monkeypatch.setenv(name, value)
    yield server
    server.close()


def decoded_size(url: str) -> tuple[int, int]:
    with Image.open(io.BytesIO(base64.b64decode(url.partition(",")[2]))) as im:
        return im.size


def test_act_over_openai_sends_the_tools_image_in_a_user_message(fake: Upstream) -> None:
    fake.script(openai_call(("call_1", "zoom", '{"x": 3, "y": 4}')), openai_text("The cat is top left."))
    with vk.Client() as client:
        model = client.llm.model("openai/gpt-4o")
        done = model.act(asked(), [zoom])
    assert done.content == "The cat is top left." and SEEN == [{"x": 3, "y": 4}]
    first, second = (s.json for s in fake.seen)
    assert first["tools"][0]["function"]["name"] == "zoom"
    assert first["tools"][0]["function"]["parameters"]["required"] == ["x", "y"]
    tool, images = second["messages"][-2:]
    assert tool == {"role": "tool", "tool_call_id": "call_1", "content": ""}
    assert images["role"] == "user" and images["content"][0]["text"] == "The images zoom returned (call_1):"
    assert decoded_size(images["content"][1]["image_url"]["url"]) == (64, 48)


def anthropic_stream(*events: dict[str, Any]) -> Reply:
    return Reply(body=sse(*[(e["type"], e) for e in events]), content_type="text/event-stream")


def test_act_over_anthropic_sends_the_tools_image_inside_the_tool_result(fake: Upstream) -> None:
    start = {"type": "message_start", "message": {"id": "m", "model": "claude", "usage": {"input_tokens": 9}}}
    fake.script(
        anthropic_stream(
            start,
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "tool_use", "id": "toolu_1", "name": "zoom", "input": {}},
            },
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "input_json_delta", "partial_json": '{"x": 5,'},
            },
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "input_json_delta", "partial_json": ' "y": 6}'},
            },
            {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 9}},
            {"type": "message_stop"},
        ),
        anthropic_stream(
            start,
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Top left."}},
            {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 2}},
            {"type": "message_stop"},
        ),
    )
    with vk.Client() as client:
        model = client.llm.model("anthropic/claude-sonnet-4-5")
        done = model.act(asked(), [zoom])
    assert done.content == "Top left." and SEEN == [{"x": 5, "y": 6}]
    second = fake.seen[1].json
    assert second["messages"][-2]["content"][0] == {
        "type": "tool_use",
        "id": "toolu_1",
        "name": "zoom",
        "input": {"x": 5, "y": 6},
    }
    (result,) = second["messages"][-1]["content"]
    assert result["type"] == "tool_result" and result["tool_use_id"] == "toolu_1"
    (image,) = result["content"]
    assert image["type"] == "image" and image["source"]["media_type"] == "image/png"
    assert decoded_size("," + image["source"]["data"]) == (64, 48)


def test_an_unknown_tool_and_bad_arguments_are_told_to_the_model(fake: Upstream) -> None:
    fake.script(
        openai_call(("call_1", "rm", "{}"), ("call_2", "zoom", '{"x": "left"}'), ("call_3", "zoom", "{x")),
        openai_text("Sorry."),
    )
    with vk.Client() as client:
        model = client.llm.model("openai/gpt-4o")
        done = model.act("Where?", [zoom], max_parallel_tool_calls=2)
    assert SEEN == [] and done.rounds == 2
    told = [m["content"] for m in fake.seen[1].json["messages"] if m["role"] == "tool"]
    assert told == [
        "Error: there is no tool named 'rm'; the tools are 'zoom'.",
        "Error: the arguments of the call to 'zoom' do not fit its parameters: at arguments (the top level): "
        "'y' is a required property. Call it again with arguments that fit.",
        "Error: the arguments of the call to 'zoom' are not valid JSON (Expecting property name enclosed in "
        "double quotes: line 1 column 2 (char 1)): '{x'. Call 'zoom' again with a JSON object of its arguments.",
    ]


def test_act_refuses_tools_it_cannot_run(model: vk.LLM) -> None:
    with pytest.raises(BadRequestError) as err:
        model.act("Hi", [vk.ToolDefinition("zoom")])
    assert err.value.location == "tools[0]"
    assert "is a definition without a function to run: pass vlmkit.FunctionTool(definition, implementation)" in (
        err.value.message
    )
    with pytest.raises(BadRequestError, match="act\\(\\) needs at least one tool"):
        model.act("Hi", [])
    with pytest.raises(BadRequestError, match="max_prediction_rounds must be a whole number of at least 1, not 0"):
        model.act("Hi", [zoom], max_prediction_rounds=0)
