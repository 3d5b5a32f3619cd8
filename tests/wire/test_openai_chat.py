"""OpenAI's chat protocol, read and written by ``vlmkit.wire.openai_chat``: pure translation.

Nothing here reads an image: every image part becomes a reference, so these tests need no files,
no network and no model. The same rules are pinned on every face (SDK, ``completion()``, server) by
``tests/server/test_one_wire.py``.
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from tests.conftest import guard_loopback, photo_path
from vlmkit.chat import Chat, ChatMessage, ImagePart, ImageRef, TextPart
from vlmkit.errors import BadRequestError, InvalidMessageError, InvalidSettingError, InvalidToolError
from vlmkit.images import prepare_image
from vlmkit.prediction import ModelInfo, PredictionConfig, PredictionResult, PredictionStats, StopReason
from vlmkit.wire.openai_chat import (
    FINISH_REASONS,
    ChunkWriter,
    chat_from_history,
    completion_body,
    config_from_openai,
    config_to_openai,
    finish_reason_of,
    messages_from_chat,
    read_extension,
    read_request,
    stats_from_openai,
    stop_reason_of,
    to_chat,
)


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    guard_loopback(
        monkeypatch
    )  # translation fetches nothing: even loopback would be a bug, and any other address fails


def image(url: str, **extra: Any) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url, **extra}}


# --- messages -> Chat ----------------------------------------------------------------------------


def test_every_image_becomes_a_reference_with_where_it_was() -> None:
    messages = [
        {"role": "developer", "content": "Be terse."},
        {
            "role": "user",
            "content": [{"type": "text", "text": "Compare"}, image("http://127.0.0.1:9/a.png", detail="low")],
        },
        {"role": "assistant", "content": None},
        {"role": "assistant", "content": [{"type": "refusal", "refusal": "I cannot."}]},
        {
            "role": "user",
            "content": [
                image("/no/such/photo.jpg", format="image/jpeg"),  # not read here, so not an error yet
                {"type": "image_url", "image_url": "data:image/png;base64,AAAA"},
                {"type": "input_image", "image_url": "gs://bucket/cat.png", "detail": "high"},
                {"type": "file", "file": {"file_id": "file-abc"}},
                {"type": "image_url", "image_url": {"file_id": "file-def", "detail": "auto"}},
                {"type": "input_image", "file_id": "file-ghi"},
            ],
        },
    ]
    chat = to_chat(messages)
    assert [m.role for m in chat.messages] == ["system", "user", "assistant", "assistant", "user"]
    assert chat.messages[0].content == [TextPart("Be terse.")]
    assert chat.messages[2].content == [] and chat.messages[3].content == [TextPart("I cannot.")]
    assert chat.images == []  # nothing was read
    assert chat.image_refs == [
        ImageRef("http://127.0.0.1:9/a.png", "low", None, "messages[1].content[1]"),
        ImageRef("/no/such/photo.jpg", None, "image/jpeg", "messages[4].content[0]"),
        ImageRef("data:image/png;base64,AAAA", None, None, "messages[4].content[1]"),
        ImageRef("gs://bucket/cat.png", "high", None, "messages[4].content[2]"),
        ImageRef("file-abc", None, None, "messages[4].content[3]", file_id=True),
        ImageRef("file-def", "auto", None, "messages[4].content[4]", file_id=True),
        ImageRef("file-ghi", None, None, "messages[4].content[5]", file_id=True),
    ]
    assert repr(chat) == "Chat(5 messages, 0 images, 7 not read)"


def test_references_are_written_back_as_they_were_read() -> None:
    messages = [
        {"role": "system", "content": "Be terse."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Compare"},
                image("https://example.com/a.png", detail="low", format="image/png"),
                {"type": "image_url", "image_url": {"file_id": "file-abc", "detail": "high"}},
            ],
        },
    ]
    assert messages_from_chat(to_chat(messages)) == messages


def test_read_images_are_written_as_data_urls_or_as_the_caller_names_them() -> None:
    handle = prepare_image(photo_path("grace_hopper.jpg"))
    chat = Chat("Be terse.")
    chat.add_user_message("What is this?", images=[handle], detail="low")
    written = messages_from_chat(chat)
    assert written[0] == {"role": "system", "content": "Be terse."}
    part = written[1]["content"][1]["image_url"]
    assert part["url"].startswith("data:image/jpeg;base64,") and (part["detail"], part["format"]) == (
        "low",
        "image/jpeg",
    )
    by_id = messages_from_chat(chat, image=lambda p: {"file_id": f"file-{p.image.identifier[:8]}"})
    assert by_id[1]["content"][1] == {
        "type": "image_url",
        "image_url": {"file_id": f"file-{handle.identifier[:8]}", "detail": "low"},
    }
    # and a read chat comes back with the same image, by identity
    again = to_chat(written)
    assert [ref.url for ref in again.image_refs] == [part["url"]]


def test_with_images_replaces_only_the_references_it_is_given() -> None:
    chat = to_chat([{"role": "user", "content": [image("https://a/1.png", detail="low"), image("https://a/2.png")]}])
    first, second = chat.image_refs
    handle = prepare_image(photo_path("grace_hopper.jpg"))
    done = chat.with_images({first: handle})
    assert done.messages[0].content == [ImagePart(handle, "low"), second]
    assert chat.image_refs == [first, second]  # the original is unchanged
    assert chat.with_images({}) is chat


def test_history_forms() -> None:
    assert chat_from_history("hi").messages == [ChatMessage("user", [TextPart("hi")])]
    original = Chat("sys")
    copy = chat_from_history(original)
    assert copy is not original and copy.messages == original.messages
    assert chat_from_history({"messages": [{"role": "user", "content": "x"}]}).messages[0].text == "x"
    with pytest.raises(InvalidMessageError, match="a history dict needs a 'messages' list"):
        chat_from_history({"history": []})
    with pytest.raises(InvalidMessageError, match="cannot make a chat from a int"):
        chat_from_history(42)


# --- what is refused, and where ------------------------------------------------------------------

REFUSED: list[tuple[Any, type[Exception], str | None, str]] = [
    ([], InvalidSettingError, "messages", "messages is empty: send at least one message"),
    ("hi", InvalidSettingError, "messages",
     "messages must be a list of {'role': ..., 'content': ...} objects, not a string"),
    (["hi"], InvalidMessageError, "messages[0]", "messages[0]: a message must be an object, not a string"),
    ([{"role": "wizard", "content": "x"}], InvalidMessageError, "messages[0].role",
     "messages[0].role: role must be 'system', 'developer', 'user', 'assistant' or 'tool', not 'wizard'"),
    ([{"role": "user", "content": "a"}, {"role": "tool", "tool_call_id": "c1", "content": "42"}],
     InvalidToolError, "messages[1].tool_call_id",
     "messages[1].tool_call_id: this tool result answers the call id 'c1', but no assistant message before it "
     "made that call (calls made: none); send the assistant message with its tool_calls first, and answer each "
     "call by its id"),
    ([{"role": "user", "content": "a"}, {"role": "tool", "content": "42"}],
     InvalidToolError, "messages[1].tool_call_id",
     "messages[1].tool_call_id: a tool message needs 'tool_call_id', the id of the call it answers, not null"),
    ([{"role": "function", "name": "f", "content": "42"}], InvalidMessageError, "messages[0].role",
     "messages[0].role: role 'function' is OpenAI's old form of a tool result: send {'role': 'tool', "
     "'tool_call_id': ..., 'content': ...} instead"),
    ([{"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function"}]}],
     InvalidToolError, "messages[0].tool_calls[0].function",
     "messages[0].tool_calls[0].function: a tool call needs a 'function' object, not null"),
    ([{"role": "assistant", "content": None,
       "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"x\": "}}]}],
     InvalidToolError, "messages[0].tool_calls[0].function.arguments",
     "messages[0].tool_calls[0].function.arguments: the arguments of the call to 'f' are not valid JSON "
     "(Expecting value: line 1 column 7 (char 6)): '{\"x\": '"),
    ([{"role": "assistant", "content": None,
       "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "[1]"}}]}],
     InvalidToolError, "messages[0].tool_calls[0].function.arguments",
     "messages[0].tool_calls[0].function.arguments: the arguments of the call to 'f' must be a JSON object, "
     "not an array"),
    ([{"role": "assistant", "content": "x", "function_call": {"name": "f", "arguments": "{}"}}],
     InvalidToolError, "messages[0].function_call",
     "messages[0].function_call: function_call is OpenAI's old form of a tool call: send tool_calls instead"),
    ([{"role": "user", "content": "a"}, {"role": "user"}], InvalidMessageError, "messages[1].content",
     "messages[1].content: the message has no 'content'"),
    ([{"role": "user", "content": 7}], InvalidMessageError, "messages[0].content",
     "messages[0].content: content must be a string or a list of parts, not a number"),
    ([{"role": "assistant", "content": [image("https://x/y.png")]}], InvalidMessageError, "messages[0].content[0]",
     "messages[0].content[0]: images can only be sent in user and tool messages, not in an assistant message"),
    ([{"role": "system", "content": [{"type": "file", "file": {"file_id": "file-1"}}]}], InvalidMessageError,
     "messages[0].content[0]",
     "messages[0].content[0]: images can only be sent in user and tool messages, not in a system message"),
    ([{"role": "user", "content": [{"type": "refusal", "refusal": "no"}]}], InvalidMessageError,
     "messages[0].content[0]",
     "messages[0].content[0]: a refusal part can only be in an assistant message, not in a user message"),
    ([{"role": "user", "content": [{"type": "input_audio"}]}], InvalidMessageError, "messages[0].content[0]",
     "messages[0].content[0]: unknown content part type 'input_audio'; "
     "vlmkit reads 'text', 'image_url' and 'file' parts"),
    ([{"role": "user", "content": [{"type": "text", "text": None}]}], InvalidMessageError, "messages[0].content[0]",
     "messages[0].content[0]: a text part needs a string 'text', not null"),
    ([{"role": "user", "content": [{"type": "image_url"}]}], InvalidMessageError, "messages[0].content[0]",
     "messages[0].content[0]: an image_url part needs 'image_url': a URL string or {'url': ...}"),
    ([{"role": "user", "content": [image("")]}], InvalidMessageError, "messages[0].content[0]",
     "messages[0].content[0]: an image_url part needs a non-empty string 'url'"),
    ([{"role": "user", "content": [image("https://x/y.png", detail="ultra")]}], InvalidMessageError,
     "messages[0].content[0]", "messages[0].content[0]: detail must be 'low', 'high' or 'auto', not 'ultra'"),
    ([{"role": "user", "content": [image("https://x/y.png", format=5)]}], InvalidMessageError,
     "messages[0].content[0]", "messages[0].content[0]: format must be a MIME type string such as 'image/png'"),
    ([{"role": "user", "content": [{"type": "file", "file": {"filename": "a.pdf"}}]}], InvalidMessageError,
     "messages[0].content[0]",
     "messages[0].content[0]: a file part needs {'file': {'file_id': 'file-...'}} naming an uploaded image, "
     "or {'file': {'file_data': 'data:application/pdf;base64,...'}}"),
]  # fmt: skip


@pytest.mark.parametrize(("messages", "error", "location", "message"), REFUSED)
def test_refused_messages_say_what_and_where(
    messages: Any, error: type[Exception], location: str, message: str
) -> None:
    with pytest.raises(error) as err:
        to_chat(messages)
    assert isinstance(err.value, BadRequestError) and err.value.status_code == 400
    assert err.value.message == message
    assert err.value.location == location


# --- settings ------------------------------------------------------------------------------------


def test_openai_settings_become_a_prediction_config() -> None:
    config = config_from_openai(
        {
            "temperature": 0.2,
            "top_p": 0.9,
            "max_tokens": 50,
            "stop": "END",
            "seed": 7,
            "presence_penalty": 0.5,
            "frequency_penalty": -0.5,
            "response_format": {"type": "json_object"},
            "top_k": 40,
            "min_p": 0.05,
            "repeat_penalty": 1.1,
            "detail": 256,
            "image_max_tokens": 300,
            "image_min_tokens": 16,
            "user": "ignored here",
            "logprobs": False,
        }
    )
    assert config == PredictionConfig(
        temperature=0.2,
        top_p=0.9,
        max_tokens=50,
        stop=("END",),
        seed=7,
        presence_penalty=0.5,
        frequency_penalty=-0.5,
        response_format={"type": "json_object"},
        top_k=40,
        min_p=0.05,
        repeat_penalty=1.1,
        detail=256,
        image_max_tokens=300,
        image_min_tokens=16,
    )
    assert config.max_image_tokens == 256  # an int detail is a cap too: the smaller applies
    assert config_from_openai({"top_k": 40}, extensions=False) == PredictionConfig()  # not read where not allowed
    assert config_from_openai({"max_tokens": 9, "max_completion_tokens": 5}).max_tokens == 5  # the newer name wins
    assert config_from_openai({"response_format": {"type": "text"}, "stop": [], "n": 1}) == PredictionConfig()


SETTINGS_REFUSED: list[tuple[dict[str, Any], type[Exception], str, str]] = [
    ({"max_tokens": 0}, InvalidSettingError, "max_tokens", "max_tokens must be at least 1, not 0"),
    ({"max_completion_tokens": 0}, InvalidSettingError, "max_completion_tokens",
     "max_completion_tokens must be at least 1, not 0"),
    ({"max_tokens": 1.5}, InvalidSettingError, "max_tokens", "max_tokens must be an integer, not a number"),
    ({"temperature": "hot"}, InvalidSettingError, "temperature", "temperature must be a number, not a string"),
    ({"temperature": -1}, InvalidSettingError, "temperature", "temperature must be at least 0, not -1"),
    ({"top_p": 0}, InvalidSettingError, "top_p", "top_p must be in (0, 1], not 0"),
    ({"presence_penalty": 3}, InvalidSettingError, "presence_penalty",
     "presence_penalty must be between -2 and 2, not 3"),
    ({"seed": True}, InvalidSettingError, "seed", "seed must be an integer, not a boolean"),
    ({"stop": 5}, InvalidSettingError, "stop", "stop must be a string or a list of strings, not a number"),
    ({"stop": ["a", 1]}, InvalidSettingError, "stop",
     "stop must be a string or a list of strings; stop[1] is a number"),
    ({"n": 0}, InvalidSettingError, "n", "n must be at least 1, not 0"),
    ({"response_format": "json"}, InvalidSettingError, "response_format",
     "response_format must be {'type': 'text' | 'json_object' | 'json_schema', ...}, not a string"),
    ({"response_format": {"type": "object"}}, InvalidSettingError, "response_format",
     "response_format must be {'type': 'text' | 'json_object' | 'json_schema', ...}, not type 'object'"),
    ({"response_format": {"type": "json_schema"}}, InvalidSettingError, "response_format",
     "a 'json_schema' response_format needs a 'json_schema' object holding the schema"),
    ({"detail": 0}, InvalidSettingError, "detail",
     "detail must be 'low', 'high', 'auto' or a positive image token count, not 0"),
    ({"top_k": -1}, InvalidSettingError, "top_k", "top_k must be at least 0, not -1"),
    ({"image_max_tokens": 0}, InvalidSettingError, "image_max_tokens", "image_max_tokens must be at least 1, not 0"),
    ({"image_max_tokens": 2.5}, InvalidSettingError, "image_max_tokens",
     "image_max_tokens must be an integer, not a number"),
    ({"image_min_tokens": -1}, InvalidSettingError, "image_min_tokens", "image_min_tokens must be at least 1, not -1"),
    ({"image_min_tokens": True}, InvalidSettingError, "image_min_tokens",
     "image_min_tokens must be an integer, not a boolean"),
    ({"image_min_tokens": 500, "image_max_tokens": 100}, InvalidSettingError, "image_min_tokens",
     "image_min_tokens=500 is more than the image token cap 100 (image_max_tokens); lower it or raise the cap"),
    ({"image_min_tokens": 500, "detail": 64}, InvalidSettingError, "image_min_tokens",
     "image_min_tokens=500 is more than the image token cap 64 (detail); lower it or raise the cap"),
    ({"tools": [{"type": "function"}]}, InvalidToolError, "tools[0].function",
     "tools[0].function: a tool's 'function' must be an object, not null"),
    ({"tools": {"type": "function"}}, InvalidToolError, "tools",
     "tools: tools must be an array of tools, not an object"),
    ({"tools": [{"type": "code_interpreter"}]}, InvalidToolError, "tools[0]",
     "tools[0]: a tool must be {'type': 'function', 'function': {...}}, not type 'code_interpreter'"),
    ({"tools": [{"type": "function", "function": {"name": "look at"}}]}, InvalidToolError, "tools[0].function.name",
     "tools[0].function.name: a tool's name must be 1 to 64 letters, digits, '_' or '-', not 'look at'"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object",
                                                                          "properties": {"x": {"type": "nope"}}}}}]},
     InvalidToolError, "tools[0].function.parameters",
     "tools[0].function.parameters: parameters is not valid JSON Schema: at .properties.x.type: 'nope' is not "
     "valid under any of the given schemas"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}]},
     InvalidToolError, "tools[0].function.parameters",
     "tools[0].function.parameters: parameters must describe an object (the arguments by name): 'type' is "
     "'string', not 'object'"),
    ({"tools": [{"type": "function", "function": {"name": "f"}}, {"type": "function", "function": {"name": "f"}}]},
     InvalidToolError, "tools[1].function.name",
     "tools[1].function.name: two tools are named 'f'; give each tool its own name"),
    ({"tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "always"}, InvalidToolError,
     "tool_choice",
     "tool_choice: tool_choice must be 'none', 'auto', 'required' or {'type': 'function', 'function': "
     "{'name': ...}}, not 'always'"),
    ({"tools": [{"type": "function", "function": {"name": "f"}}],
      "tool_choice": {"type": "function", "function": {"name": "g"}}}, InvalidToolError, "tool_choice",
     "tool_choice: tool_choice names the tool 'g', which is not among the tools ('f')"),
    ({"tool_choice": "required"}, InvalidToolError, "tool_choice",
     "tool_choice: tool_choice asks for a tool call, but no tools are given; send tools with it"),
    ({"parallel_tool_calls": "yes"}, InvalidSettingError, "parallel_tool_calls",
     "parallel_tool_calls must be true or false, not a string"),
    ({"functions": [{"name": "f"}]}, BadRequestError, "functions",
     "'functions' is OpenAI's old form of tool calling: send 'tools' (and 'tool_choice') instead"),
]  # fmt: skip


@pytest.mark.parametrize(("settings", "error", "location", "message"), SETTINGS_REFUSED)
def test_refused_settings_name_the_setting(
    settings: dict[str, Any], error: type[Exception], location: str, message: str
) -> None:
    with pytest.raises(error) as err:
        config_from_openai(settings)
    assert type(err.value) is error
    assert (err.value.message, err.value.location) == (message, location)  # type: ignore[attr-defined]


def test_the_one_validator_is_the_configs_own() -> None:
    with pytest.raises(InvalidSettingError) as direct:
        PredictionConfig(max_tokens=0)
    with pytest.raises(InvalidSettingError) as camel:
        PredictionConfig.from_dict({"maxTokens": 0})
    with pytest.raises(InvalidSettingError) as wire:
        config_from_openai({"max_tokens": 0})
    assert direct.value.message == camel.value.message == wire.value.message == "max_tokens must be at least 1, not 0"
    assert PredictionConfig(response_format=True).json_schema() == {}  # JSON Schema's true: any value
    with pytest.raises(InvalidSettingError) as false:
        PredictionConfig(response_format=False)
    assert false.value.location == "response_format"
    assert false.value.message == (
        "response_format is the JSON schema false, which no reply can meet; give a schema a reply can meet"
    )


class Answer(BaseModel):
    ok: bool


def test_settings_are_written_back_in_openais_names() -> None:
    config = PredictionConfig(
        temperature=0, max_tokens=9, stop=("a", "b"), top_k=40, detail=64, cpu_threads=2, image_min_tokens=8
    )
    assert config_to_openai(config) == {"temperature": 0, "max_tokens": 9, "stop": ["a", "b"]}
    assert config_to_openai(config, extensions=True) == {
        "temperature": 0,
        "max_tokens": 9,
        "stop": ["a", "b"],
        "top_k": 40,
        "image_min_tokens": 8,
        "detail": 64,  # a token cap; a detail level belongs on each image instead
    }
    assert "detail" not in config_to_openai(PredictionConfig(detail="low"), extensions=True)
    schema = config_to_openai(PredictionConfig(response_format=Answer))["response_format"]
    assert schema["type"] == "json_schema" and schema["json_schema"]["name"] == "Answer"
    assert schema["json_schema"]["strict"] is True and schema["json_schema"]["schema"]["required"] == ["ok"]
    own = {"type": "json_object"}
    assert config_to_openai(PredictionConfig(response_format=own))["response_format"] == own
    for settings in ({"temperature": 0.5, "max_tokens": 3}, {"stop": ["x"], "seed": 1, "top_p": 0.5}):
        assert config_to_openai(config_from_openai(settings)) == settings  # both ways


def test_a_request_body() -> None:
    body = {
        "model": "tiny",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_completion_tokens": 4,
        "user": "u1",
    }
    req = read_request(body)
    assert (req.model, req.stream, req.include_usage, req.user) == ("tiny", True, True, "u1")
    assert req.config.max_tokens == 4 and req.messages == body["messages"]
    for bad, location, message in [
        ({"messages": []}, "model", "model is required: the name of a model from GET /v1/models"),
        ({"model": "m", "messages": {}}, "messages",
         "messages must be a list of {'role': ..., 'content': ...} objects, not an object"),
        ({"model": "m", "messages": [1], "stream": "yes"}, "stream", "stream must be true or false, not a string"),
        ({"model": "m", "messages": [1], "stream_options": 1}, "stream_options",
         "stream_options must be an object, not a number"),
    ]:  # fmt: skip
        with pytest.raises(InvalidSettingError) as err:
            read_request(bad)
        assert (err.value.location, err.value.message) == (location, message)


# --- finish reasons ------------------------------------------------------------------------------


def test_finish_reasons_both_ways() -> None:
    assert {stop: finish_reason_of(stop) for stop in StopReason} == {
        StopReason.EOS_FOUND: "stop",
        StopReason.STOP_STRING_FOUND: "stop",
        StopReason.USER_STOPPED: "stop",
        StopReason.FAILED: "stop",
        StopReason.MAX_PREDICTED_TOKENS_REACHED: "length",
        StopReason.CONTEXT_LENGTH_REACHED: "length",
        StopReason.CONTENT_FILTERED: "content_filter",
        StopReason.TOOL_CALLS: "tool_calls",
    }
    assert set(FINISH_REASONS) == set(StopReason)  # every stop reason has a row
    reads = {finish: stop_reason_of(finish) for finish in ("stop", "length", "content_filter", "tool_calls")}
    assert reads == {
        "stop": StopReason.EOS_FOUND,
        "length": StopReason.MAX_PREDICTED_TOKENS_REACHED,
        "content_filter": StopReason.CONTENT_FILTERED,
        "tool_calls": StopReason.TOOL_CALLS,
    }
    for finish, stop in reads.items():
        assert finish_reason_of(stop) == finish  # a finish reason survives the round trip
    assert stop_reason_of("function_call") is StopReason.TOOL_CALLS
    assert stop_reason_of(None) is StopReason.FAILED and stop_reason_of("eos") is StopReason.FAILED


# --- answers -------------------------------------------------------------------------------------

INFO = ModelInfo("tiny", "/m/tiny.gguf", "/m/mmproj.gguf", "llama", 1024, True, 123, "mlp", 7)


def result(stop: StopReason = StopReason.MAX_PREDICTED_TOKENS_REACHED) -> PredictionResult:
    stats = PredictionStats(stop, 40, 6, 30, 1, 0, 0.12, 50.0, 0.3)
    return PredictionResult("A cat.", stats, INFO)


def test_a_completion_body_and_its_extension_read_back() -> None:
    body = completion_body(result(), "tiny", "chatcmpl-1")
    assert body["id"] == "chatcmpl-1" and body["object"] == "chat.completion" and body["model"] == "tiny"
    assert body["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "A cat.", "refusal": None},
            "logprobs": None,
            "finish_reason": "length",
        }
    ]
    assert body["usage"] == {
        "prompt_tokens": 40,
        "completion_tokens": 6,
        "total_tokens": 46,
        "prompt_tokens_details": {"cached_tokens": 30},
    }
    stats, info = read_extension(body)
    assert stats == result().stats and info == INFO
    assert read_extension({"choices": []}) == (None, None)  # an answer of OpenAI's own
    newer = {**body["stats"], "stop_reason": "somethingNew", "added_later": 1}
    later = read_extension({"stats": newer, "model_info": {**body["model_info"], "added_later": 1}})
    assert later[0] is not None and later[0].stop_reason is StopReason.FAILED and later[1] == INFO


def test_a_stream_of_chunks() -> None:
    chunks = ChunkWriter("tiny", "chatcmpl-2", 5)
    first, text, last, usage = chunks.start(), chunks.text("A"), chunks.finish(result()), chunks.usage(result().stats)
    assert all((c["id"], c["created"], c["model"], c["object"]) == ("chatcmpl-2", 5, "tiny", "chat.completion.chunk")
               for c in (first, text, last, usage))  # fmt: skip
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert text["choices"][0]["delta"] == {"content": "A"} and text["choices"][0]["finish_reason"] is None
    assert last["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "length"}
    assert read_extension(last) == (result().stats, INFO)
    assert usage["choices"] == [] and usage["usage"]["total_tokens"] == 46


def test_stats_of_an_answer_with_only_openais_fields() -> None:
    stats = stats_from_openai("content_filter", 11, 4, started=10.0, first_token=10.5, ended=12.5)
    assert stats == PredictionStats(
        StopReason.CONTENT_FILTERED,
        prompt_tokens=11,
        predicted_tokens=4,
        time_to_first_token_sec=0.5,
        tokens_per_second=2.0,
        total_time_sec=2.5,
    )
    empty = stats_from_openai(None, None, None, started=1.0, first_token=None, ended=1.0)
    assert empty.stop_reason is StopReason.FAILED and empty.tokens_per_second is None
