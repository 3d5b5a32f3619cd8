"""LM Studio's protocol, read and written by ``vlmkit.wire.lmstudio``: pure translation.

What is read is what the real ``lmstudio`` package writes (its own endpoint classes build the
frames); what is written is read back by the package's own parsers, so both directions are pinned
to the SDK users run, with no server and no model.
"""

from __future__ import annotations

import lmstudio as lms
import pytest
from lmstudio._kv_config import parse_prediction_config
from lmstudio._sdk_models import FileHandle, LlmInfo, LlmInstanceInfo, LlmPredictionStats, ToolCallRequest
from lmstudio.history import ToolCallResultData
from lmstudio.json_api import ChatResponseEndpoint, CompletionEndpoint

from vlmkit.chat import ImageRef, TextPart
from vlmkit.errors import InvalidMessageError, InvalidSettingError, InvalidToolError
from vlmkit.prediction import PredictionConfig, PredictionStats, StopReason
from vlmkit.tools import ToolCall, ToolChoice
from vlmkit.wire import lmstudio as wire

IMAGE = FileHandle(name="photo.jpg", identifier="file-abc", size_bytes=10, file_type="image")


def predict_parameter(chat: lms.Chat, config: dict[str, object] | None = None, schema: object = None) -> dict:
    return dict(ChatResponseEndpoint("qwen2-vl-2b-instruct", chat, schema, config).creation_params)


def test_the_sdks_prediction_request_reads_as_a_chat_and_a_config() -> None:
    chat = lms.Chat("You are terse.")
    chat.add_user_message("Describe this image please", images=[IMAGE])
    chat.add_assistant_response("A photo.")
    chat.add_user_message("More?")
    config = {"maxTokens": 8, "temperature": 0.5, "stopStrings": ["\n\n"], "topKSampling": 3, "topPSampling": 0.9}
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    param = predict_parameter(chat, config, schema)

    assert wire.model_key(param["modelSpecifier"]) == "qwen2-vl-2b-instruct"
    got = wire.chat_from_history(param["history"])
    assert [m.role for m in got.messages] == ["system", "user", "assistant", "user"]
    assert got.messages[1].content == [
        TextPart("Describe this image please"),
        ImageRef("file-abc", location="history.messages[1].content[1]", file_id=True),
    ]
    read = wire.config_from_stack(param["predictionConfigStack"])
    assert read == PredictionConfig(
        max_tokens=8, temperature=0.5, stop=("\n\n",), top_k=3, top_p=0.9, response_format=schema
    )
    back = parse_prediction_config(wire.config_to_kv(read))  # the SDK reads back what was used
    assert (back.max_tokens, back.temperature, back.top_k_sampling, back.top_p_sampling) == (8, 0.5, 3, 0.9)
    assert back.stop_strings == ["\n\n"] and back.structured.json_schema == schema


def test_results_read_with_the_sdks_own_types() -> None:
    stats = PredictionStats(
        stop_reason=StopReason.MAX_PREDICTED_TOKENS_REACHED,
        prompt_tokens=40,
        predicted_tokens=8,
        images_encoded=1,
        tokens_per_second=50.0,
        time_to_first_token_sec=0.2,
    )
    parsed = LlmPredictionStats._from_any_api_dict(wire.stats_body(stats))
    assert parsed.stop_reason == "maxPredictedTokensReached" and parsed.total_tokens_count == 48
    assert parsed.tokens_per_second == 50.0 and parsed.time_to_first_token_sec == 0.2
    info = wire.model_info(
        "k", path="/m.gguf", size_bytes=5, vision=True, architecture="qwen2vl", context_length=256, loaded=True
    )
    instance = LlmInstanceInfo._from_any_api_dict(info)
    assert (instance.identifier, instance.vision, instance.context_length) == ("k", True, 256)
    listed = wire.model_info(
        "k", path="/m.gguf", size_bytes=5, vision=False, architecture="llama", context_length=None, loaded=False
    )
    assert "identifier" not in listed and LlmInfo._from_any_api_dict(listed).max_context_length == 0


@pytest.mark.parametrize(
    ("message", "where", "says"),
    [
        (
            {"role": "tool", "content": [{"type": "text", "text": "x"}]},
            "history.messages[0].content[0]",
            "a tool message holds toolCallResult parts only (got 'text')",
        ),
        (
            {"role": "robot", "content": []},
            "history.messages[0]",
            "'role' must be one of system, user, assistant, tool",
        ),
        (
            {"role": "user", "content": [{"type": "file", "identifier": "f", "fileType": "text/plain"}]},
            "history.messages[0].content[0]",
            "only image files can be sent to a model",
        ),
        (
            {"role": "assistant", "content": [{"type": "file", "identifier": "f", "fileType": "image"}]},
            "history.messages[0].content[0]",
            "images can only be in user messages",
        ),
        (
            {"role": "user", "content": [{"type": "toolCallRequest"}]},
            "history.messages[0].content[0]",
            "toolCallRequest parts belong in assistant messages, not in a user message",
        ),
        ({"role": "user", "content": 5}, "history.messages[0]", "'content' must be a list of parts, not a number"),
    ],
)
def test_bad_history(message: dict, where: str, says: str) -> None:
    with pytest.raises(InvalidMessageError) as caught:
        wire.chat_from_history({"messages": [message]})
    assert caught.value.location == where
    assert says in caught.value.message


def test_bad_settings_name_lm_studios_key() -> None:
    stack = {"layers": [{"layerName": "apiOverride", "config": {"fields": []}}]}
    bad = [{"key": "llm.prediction.temperature", "value": -1}]
    stack["layers"][0]["config"]["fields"] = bad
    with pytest.raises(InvalidSettingError) as caught:
        wire.config_from_stack(stack)
    assert caught.value.location == "llm.prediction.temperature"
    assert "temperature must be at least 0, not -1" in caught.value.message
    gbnf = [{"key": "llm.prediction.structured", "value": {"type": "gbnf", "gbnfGrammar": "root ::= x"}}]
    stack["layers"][0]["config"]["fields"] = gbnf
    with pytest.raises(InvalidSettingError, match="structured output of type 'gbnf' is not supported; give a JSON"):
        wire.config_from_stack(stack)
    no_tools = [{"key": "llm.prediction.tools", "value": {"type": "toolArray", "tools": []}}]
    stack["layers"][0]["config"]["fields"] = no_tools
    assert wire.config_from_stack(stack) == PredictionConfig()
    completion = CompletionEndpoint("k", "Once upon a time").creation_params["predictionConfigStack"]
    with pytest.raises(InvalidSettingError, match=r"text completion, .complete\(\)\) is not supported by vlmkit yet"):
        wire.config_from_stack(completion)
    ignored = [{"key": "llm.prediction.contextOverflowPolicy", "value": "stopAtLimit"}]
    stack["layers"][0]["config"]["fields"] = ignored
    assert wire.config_from_stack(stack) == PredictionConfig()


def test_frames_are_checked_when_built() -> None:
    frame = wire.read_frame('{"type": "rpcCall", "endpoint": "listLoaded", "callId": 3}', max_bytes=100)
    assert frame == wire.RpcCall("listLoaded", 3)
    with pytest.raises(wire.ProtocolError, match="'callId' must be a non-negative integer, not -1"):
        wire.RpcCall("x", -1)
    with pytest.raises(wire.ProtocolError) as caught:
        wire.read_frame('{"type": "channelSend", "channelId": 4, "message": 1}', max_bytes=100)
    assert caught.value.channel_id == 4 and "needs 'message', an object" in caught.value.message
    with pytest.raises(wire.ProtocolError, match="authVersion 2 is not supported; this server speaks 1"):
        wire.read_frame('{"authVersion": 2, "clientIdentifier": "a", "clientPasskey": "b"}', max_bytes=100)


# --- tools (.act()) ------------------------------------------------------------------------------


def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


def act_parameter(chat: lms.Chat, *, force: bool | None = None) -> dict:
    """What ``.act()`` sends in a round that offers tools (its own endpoint class builds it)."""
    tools, client_tools = ChatResponseEndpoint.parse_tools([add])
    tools.force = force
    endpoint = ChatResponseEndpoint("k", chat, None, {"maxTokens": 50}, llm_tools=tools, client_tool_map=client_tools)
    return dict(endpoint.creation_params)


def test_acts_tools_read_as_tool_definitions_and_force_as_a_required_call() -> None:
    chat = lms.Chat()
    chat.add_user_message("What is 1 + 2?")
    config = wire.config_from_stack(act_parameter(chat)["predictionConfigStack"])
    (tool,) = config.tools
    assert (tool.name, tool.description) == ("add", "Add two numbers.")
    assert tool.parameters["properties"] == {"a": {"type": "integer"}, "b": {"type": "integer"}}
    assert config.tool_choice is None and config.max_tokens == 50  # the model chooses
    forced = wire.config_from_stack(act_parameter(chat, force=True)["predictionConfigStack"])
    assert forced.tool_choice == ToolChoice("required")


def test_calls_and_results_in_the_history_read_as_vlmkits_tool_values() -> None:
    chat = lms.Chat("You add.")
    chat.add_user_message("What is 1 + 2?", images=[IMAGE])
    request = ToolCallRequest(type="function", id="7", name="add", arguments={"a": 1, "b": 2})
    chat.add_assistant_response("Let me add.", [request])
    chat.add_tool_results([ToolCallResultData(content="3", tool_call_id="7")])
    got = wire.chat_from_history(act_parameter(chat)["history"])
    assert [m.role for m in got.messages] == ["system", "user", "assistant", "tool"]
    assistant, result = got.messages[2], got.messages[3]
    assert assistant.text == "Let me add."
    assert assistant.tool_calls == [ToolCall("7", "add", '{"a": 1, "b": 2}')]
    assert (result.tool_call_id, result.content) == ("7", [TextPart("3")])


def test_a_models_call_reaches_the_sdk_as_its_tool_call_request() -> None:
    messages = wire.tool_call_messages(ToolCall("call_1", "add", '{"a": 1, "b": 2}'))
    assert [m["type"] for m in messages] == [
        "toolCallGenerationStart",
        "toolCallGenerationNameReceived",
        "toolCallGenerationArgumentFragmentGenerated",
        "toolCallGenerationEnd",
    ]
    request = ToolCallRequest._from_api_dict(messages[-1]["toolCallRequest"])
    assert (request.id, request.name, dict(request.arguments or {})) == ("call_1", "add", {"a": 1, "b": 2})
    failed = wire.tool_call_messages(ToolCall("call_2", "add", "{not json"))[-1]
    assert failed["type"] == "toolCallGenerationFailed" and failed["rawContent"] == "{not json"
    assert "the arguments of the call to 'add' are not valid JSON" in failed["error"]["title"]


def _tools_stack(value: object) -> dict:
    return {
        "layers": [
            {"layerName": "apiOverride", "config": {"fields": [{"key": "llm.prediction.tools", "value": value}]}}
        ]
    }


@pytest.mark.parametrize(
    ("value", "where", "says"),
    [
        (
            {"type": "toolArray", "tools": [{"type": "function", "function": {"name": "a b"}}]},
            "llm.prediction.tools.tools[0].function.name",
            "a tool's name must be 1 to 64 letters, digits, '_' or '-', not 'a b'",
        ),
        (
            {
                "type": "toolArray",
                "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "array"}}}],
            },
            "llm.prediction.tools.tools[0].function.parameters",
            "parameters must describe an object",
        ),
        (
            {"type": "toolArray", "tools": [{"type": "function", "function": {"name": "f"}}] * 2},
            "llm.prediction.tools.tools[1].function.name",
            "two tools are named 'f'",
        ),
        (
            {"type": "toolArray", "tools": [], "force": "yes"},
            "llm.prediction.tools.force",
            "'force' must be true or false",
        ),
        ({"type": "pluginTools"}, "llm.prediction.tools", "tool use must be {'type': 'none'} or {'type': 'toolArray'"),
    ],
)
def test_bad_tools_name_the_part(value: object, where: str, says: str) -> None:
    with pytest.raises(InvalidToolError) as caught:
        wire.config_from_stack(_tools_stack(value))
    assert caught.value.location == where
    assert says in caught.value.message


@pytest.mark.parametrize(
    ("message", "where", "says"),
    [
        (
            {"role": "assistant", "content": [{"type": "toolCallRequest", "toolCallRequest": {"name": "add"}}]},
            "history.messages[0].content[0].toolCallRequest.id",
            "a tool call request needs 'id', the id its result answers",
        ),
        (
            {
                "role": "assistant",
                "content": [
                    {"type": "toolCallRequest", "toolCallRequest": {"id": "1", "name": "add", "arguments": [1]}}
                ],
            },
            "history.messages[0].content[0].toolCallRequest.arguments",
            "'arguments' must be an object, not an array",
        ),
        (
            {"role": "tool", "content": [{"type": "toolCallResult", "content": "3"}]},
            "history.messages[0].content[0].toolCallId",
            "a tool call result needs 'toolCallId', the id of the call it answers",
        ),
        (
            {"role": "tool", "content": [{"type": "toolCallResult", "content": "3", "toolCallId": "9"}]},
            "history.messages[0].content[0].toolCallId",
            "this tool result answers the call id '9', but no assistant message before it made that call",
        ),
    ],
)
def test_bad_tool_history_names_the_part(message: dict, where: str, says: str) -> None:
    with pytest.raises(InvalidToolError) as caught:
        wire.chat_from_history({"messages": [message]})
    assert caught.value.location == where
    assert says in caught.value.message
