"""Tool calling on the shared wire: tools, tool choice, assistant tool calls and tool results (which
may hold images) read from and written to OpenAI's form, and tool calls assembled from stream pieces."""

from __future__ import annotations

import json
from typing import Any, Literal

import pytest

from tests.conftest import photo_path
from vlmkit.chat import Chat, ImagePart, ImageRef, TextPart, tool_results
from vlmkit.errors import InvalidMessageError, InvalidToolError
from vlmkit.images import prepare_image
from vlmkit.prediction import PredictionConfig, PredictionResult, PredictionStats, StopReason
from vlmkit.tools import ToolCall, ToolChoice, ToolDefinition, tool_from_function
from vlmkit.wire.openai_chat import (
    ChunkWriter,
    ToolCallAssembler,
    completion_body,
    config_from_openai,
    config_to_openai,
    messages_from_chat,
    to_chat,
)

ZOOM = {
    "type": "function",
    "function": {
        "name": "zoom",
        "description": "Zoom into a region of the screenshot.",
        "parameters": {
            "type": "object",
            "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}},
            "required": ["x", "y"],
        },
    },
}
CALL = {"id": "call_1", "type": "function", "function": {"name": "zoom", "arguments": '{"x": 3, "y": 4}'}}
PNG_URL = "https://example.com/crop.png"

AGENT_TURNS: list[dict[str, Any]] = [
    {"role": "user", "content": "Where is the cat?"},
    {"role": "assistant", "content": None, "tool_calls": [CALL]},
    {
        "role": "tool",
        "tool_call_id": "call_1",
        "content": [{"type": "text", "text": "the crop"}, {"type": "image_url", "image_url": {"url": PNG_URL}}],
    },
]


def test_tools_and_choice_are_read_into_the_settings_and_written_back() -> None:
    config = config_from_openai(
        {
            "tools": [ZOOM],
            "tool_choice": {"type": "function", "function": {"name": "zoom"}},
            "parallel_tool_calls": False,
        }
    )
    (tool,) = config.tools
    assert tool == ToolDefinition("zoom", ZOOM["function"]["parameters"], "Zoom into a region of the screenshot.")  # type: ignore[index]
    assert config.tool_choice == ToolChoice("required", "zoom")
    assert config.parallel_tool_calls is False
    written = config_to_openai(config)
    assert written["tools"] == [ZOOM]
    assert written["tool_choice"] == {"type": "function", "function": {"name": "zoom"}}
    assert written["parallel_tool_calls"] is False
    assert config_to_openai(config_from_openai({"tools": [ZOOM], "tool_choice": "none"}))["tool_choice"] == "none"


def test_calls_and_image_bearing_results_are_read_and_written_back() -> None:
    chat = to_chat(AGENT_TURNS)
    assistant, tool = chat.messages[1], chat.messages[2]
    assert assistant.content == [] and assistant.tool_calls == [ToolCall("call_1", "zoom", '{"x": 3, "y": 4}')]
    assert assistant.tool_calls[0].parsed_arguments() == {"x": 3, "y": 4}
    assert tool.role == "tool" and tool.tool_call_id == "call_1"
    assert tool.content == [TextPart("the crop"), ImageRef(PNG_URL, location="messages[2].content[1]")]
    assert tool_results(chat.messages) == {2: assistant.tool_calls[0]}
    assert messages_from_chat(chat) == [
        {"role": "user", "content": "Where is the cat?"},
        {"role": "assistant", "content": None, "tool_calls": [CALL]},
        {
            "role": "tool",
            "tool_call_id": "call_1",
            "content": [{"type": "text", "text": "the crop"}, {"type": "image_url", "image_url": {"url": PNG_URL}}],
        },
    ]


def test_a_chat_built_in_code_keeps_calls_and_results_through_copies_and_json() -> None:
    image = prepare_image(photo_path("grace_hopper.jpg"))
    chat = Chat()
    chat.add_user_message("Where?")
    call = ToolCall("call_9", "zoom", '{"x": 1, "y": 2}')
    chat.add_tool_calls([call], "Let me look.")
    chat.add_tool_result(call, "here", images=[image])
    again = Chat.from_json(chat.copy().to_json())
    assert [m.role for m in again] == ["user", "assistant", "tool"]
    assert again.messages[1].tool_calls == [call] and again.messages[1].text == "Let me look."
    assert again.messages[2].tool_call_id == "call_9"
    assert isinstance(again.messages[2].content[1], ImagePart) and again.images[0].identifier == image.identifier
    written = messages_from_chat(again)
    assert written[1]["tool_calls"][0]["function"] == {"name": "zoom", "arguments": '{"x": 1, "y": 2}'}
    assert written[2]["content"][1]["image_url"]["url"].startswith("data:image/jpeg;base64,")


def test_a_result_that_calls_tools_is_added_as_its_calls() -> None:
    result = PredictionResult("", PredictionStats(StopReason.TOOL_CALLS), tool_calls=[ToolCall("c", "zoom")])
    chat = Chat()
    chat.add_user_message("hi")
    message = chat.add_assistant_response(result)
    assert message.tool_calls == [ToolCall("c", "zoom", "{}")] and message.content == []


def test_a_tool_result_in_code_needs_a_call_id() -> None:
    with pytest.raises(InvalidMessageError) as err:
        Chat().add_tool_result("", "x")
    assert err.value.message == "a tool result needs the id of the call it answers, not ''"


def test_answers_carry_tool_calls_in_openai_shape() -> None:
    result = PredictionResult(
        "", PredictionStats(StopReason.TOOL_CALLS), tool_calls=[ToolCall("call_1", "zoom", '{"x": 3, "y": 4}')]
    )
    body = completion_body(result, "m")
    (choice,) = body["choices"]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None and choice["message"]["tool_calls"] == [CALL]
    chunk = ChunkWriter("m").tool_calls(result.tool_calls)
    assert chunk["choices"][0]["delta"] == {"tool_calls": [{"index": 0, **CALL}]}


def test_tool_calls_are_assembled_from_pieces_of_arguments() -> None:
    assembler = ToolCallAssembler()
    assembler.feed([{"index": 0, "id": "call_a", "type": "function", "function": {"name": "zoom", "arguments": ""}}])
    assembler.feed([{"index": 0, "function": {"arguments": '{"x": '}}])
    assembler.feed([{"index": 1, "id": "call_b", "type": "function", "function": {"name": "crop", "arguments": "{}"}}])
    assembler.feed([{"index": 0, "function": {"arguments": '3, "y": 4}'}}])
    assert assembler.calls() == [ToolCall("call_a", "zoom", '{"x": 3, "y": 4}'), ToolCall("call_b", "crop", "{}")]
    assert json.loads(assembler.calls()[0].arguments) == {"x": 3, "y": 4}


def test_a_python_function_describes_itself_as_a_tool() -> None:
    def crop(
        x: int, y: int, size: float = 1.0, mode: Literal["fast", "fine"] = "fast", tags: list[str] | None = None
    ) -> str:
        """Crop the screenshot around a point.

        Longer notes that are not the description.
        """
        return ""

    tool = tool_from_function(crop)
    assert tool.name == "crop" and tool.description == "Crop the screenshot around a point."
    assert tool.parameters == {
        "type": "object",
        "properties": {
            "x": {"type": "integer"},
            "y": {"type": "integer"},
            "size": {"type": "number"},
            "mode": {"enum": ["fast", "fine"]},
            "tags": {"anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": "null"}]},
        },
        "required": ["x", "y"],
    }


def test_settings_in_code_take_definitions_only() -> None:
    with pytest.raises(InvalidToolError) as err:
        PredictionConfig(tools=[ZOOM])  # type: ignore[list-item]
    assert err.value.location == "tools[0]"
    assert "a tool must be a vlmkit.tools.ToolDefinition (or OpenAI's {'type': 'function', ...}" in err.value.message
    with pytest.raises(InvalidToolError) as err:
        ToolCall("c", "zoom", "nope").parsed_arguments()
    assert err.value.message.startswith("the arguments of the call to 'zoom' are not valid JSON")
