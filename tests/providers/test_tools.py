"""Tools on every provider: the wire request with tools, a tool choice, parallel calls and a tool
result carrying an image, checked against each official SDK's request types; and answers and stream
events holding calls, in each provider's documented shapes, read back as OpenAI's ``tool_calls``."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from anthropic.types import message_create_params as anthropic_params
from openai.types.chat import completion_create_params as openai_params
from pydantic import ConfigDict

from tests.providers.conftest import Builder, Samples, data_url
from tests.providers.sdk_types import check
from tests.providers.test_bedrock import CREDS, MODEL, validate
from vlmkit.errors import BadRequestError
from vlmkit.providers.base import Event
from vlmkit.providers.call import _start
from vlmkit.wire.openai_chat import ToolCallAssembler

SCHEMA = {"type": "object", "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}}, "required": ["x", "y"]}
TOOLS = [
    {"type": "function", "function": {"name": "zoom", "description": "Zoom in at a point.", "parameters": SCHEMA}},
    {"type": "function", "function": {"name": "crop", "parameters": {"type": "object", "properties": {}}}},
]
CALLS = [
    {"id": "call_1", "type": "function", "function": {"name": "zoom", "arguments": '{"x": 3, "y": 4}'}},
    {"id": "call_2", "type": "function", "function": {"name": "crop", "arguments": "{}"}},
]


def agent_chat(image_url: str) -> list[dict[str, Any]]:
    """A user asks; the assistant calls two tools at once; the first result holds text and an image."""
    return [
        {"role": "system", "content": "Find things."},
        {"role": "user", "content": "Where is the cat?"},
        {"role": "assistant", "content": None, "tool_calls": CALLS},
        {
            "role": "tool",
            "tool_call_id": "call_1",
            "content": [{"type": "text", "text": "zoomed"}, {"type": "image_url", "image_url": {"url": image_url}}],
        },
        {"role": "tool", "tool_call_id": "call_2", "content": "cropped"},
    ]


def b64(samples: Samples) -> str:
    return base64.b64encode(samples.jpeg).decode()


def test_openai_moves_a_results_images_to_a_user_message_after_the_run(wire: Builder, samples: Samples) -> None:
    jpeg = data_url(samples.jpeg, "image/jpeg")
    _, _, body = wire(
        "openai/gpt-4o", agent_chat(jpeg), api_key="k", tools=TOOLS, tool_choice="required", parallel_tool_calls=True
    )
    assert body["tools"] == TOOLS and body["tool_choice"] == "required" and body["parallel_tool_calls"] is True
    assert body["messages"][2:] == [
        {"role": "assistant", "content": None, "tool_calls": CALLS},
        {"role": "tool", "tool_call_id": "call_1", "content": "zoomed"},
        {"role": "tool", "tool_call_id": "call_2", "content": "cropped"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "The images zoom returned (call_1):"},
                {"type": "image_url", "image_url": {"url": jpeg}},
            ],
        },
    ]
    check(body, openai_params.CompletionCreateParamsNonStreaming)
    _, _, named = wire("openai/gpt-4o", agent_chat(jpeg), api_key="k", tools=TOOLS, stream=True,
                       tool_choice={"type": "function", "function": {"name": "crop"}})  # fmt: skip
    assert named["tool_choice"] == {"type": "function", "function": {"name": "crop"}}
    check(named, openai_params.CompletionCreateParamsStreaming)


def test_anthropic_puts_a_results_image_inside_its_tool_result(wire: Builder, samples: Samples) -> None:
    _, _, body = wire(
        "anthropic/claude-sonnet-4-5", agent_chat(data_url(samples.jpeg, "image/jpeg")), api_key="k",
        tools=TOOLS, tool_choice="required", parallel_tool_calls=False,
    )  # fmt: skip
    assert body["tools"] == [
        {"name": "zoom", "input_schema": SCHEMA, "description": "Zoom in at a point."},
        {"name": "crop", "input_schema": {"type": "object", "properties": {}}},
    ]
    assert body["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    assert body["messages"][1:] == [
        {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": "call_1", "name": "zoom", "input": {"x": 3, "y": 4}},
                {"type": "tool_use", "id": "call_2", "name": "crop", "input": {}},
            ],
        },
        {
            "role": "user",  # both results in the one user turn that follows the calls
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "call_1",
                    "content": [
                        {"type": "text", "text": "zoomed"},
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/jpeg", "data": b64(samples)},
                        },
                    ],
                },
                {"type": "tool_result", "tool_use_id": "call_2", "content": "cropped"},
            ],
        },
    ]
    check(body, anthropic_params.MessageCreateParamsNonStreaming)
    for choice, written in [
        ("auto", {"type": "auto"}),
        ("none", {"type": "none"}),
        ({"type": "function", "function": {"name": "zoom"}}, {"type": "tool", "name": "zoom"}),
    ]:
        _, _, body = wire(
            "anthropic/claude-sonnet-4-5",
            agent_chat(data_url(samples.jpeg, "image/jpeg")),
            api_key="k",
            tools=TOOLS,
            tool_choice=choice,
        )
        assert body["tool_choice"] == written
        check(body, anthropic_params.MessageCreateParamsNonStreaming)


def genai_check(body: dict[str, Any]) -> None:
    from google.genai import types

    for content in body["contents"]:
        types.Content.model_validate_json(json.dumps(content))
    for tool in body.get("tools", []):
        types.Tool.model_validate_json(json.dumps(tool))
    if "toolConfig" in body:
        types.ToolConfig.model_validate_json(json.dumps(body["toolConfig"]))


@pytest.mark.parametrize("model", ["gemini/gemini-2.5-flash", "vertex_ai/gemini-2.5-flash"])
def test_gemini_answers_calls_with_function_responses_and_inline_images(
    wire: Builder, samples: Samples, model: str
) -> None:
    extra = {"vertex_project": "p", "vertex_location": "us-central1", "api_key": "t"} if "vertex" in model else {}
    _, _, body = wire(
        model, agent_chat(data_url(samples.jpeg, "image/jpeg")), tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "zoom"}}, **({"api_key": "k"} | extra),
    )  # fmt: skip
    assert body["tools"] == [
        {
            "functionDeclarations": [
                {"name": "zoom", "parametersJsonSchema": SCHEMA, "description": "Zoom in at a point."},
                {"name": "crop", "parametersJsonSchema": {"type": "object", "properties": {}}},
            ]
        }
    ]
    assert body["toolConfig"] == {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["zoom"]}}
    assert body["contents"][1:] == [
        {
            "role": "model",
            "parts": [
                {"functionCall": {"name": "zoom", "args": {"x": 3, "y": 4}}},
                {"functionCall": {"name": "crop", "args": {}}},
            ],
        },
        {
            "role": "user",
            "parts": [
                {"functionResponse": {"name": "zoom", "response": {"result": "zoomed"}}},
                {"inline_data": {"mime_type": "image/jpeg", "data": b64(samples)}},
                {"functionResponse": {"name": "crop", "response": {"result": "cropped"}}},
            ],
        },
    ]
    genai_check(body)


def test_bedrock_puts_a_results_image_inside_its_tool_result(wire: Builder, samples: Samples) -> None:
    _, _, body = wire(
        f"bedrock/{MODEL}", agent_chat(data_url(samples.jpeg, "image/jpeg")), tools=TOOLS, tool_choice="required",
        **CREDS,
    )  # fmt: skip
    assert body["toolConfig"] == {
        "tools": [
            {"toolSpec": {"name": "zoom", "inputSchema": {"json": SCHEMA}, "description": "Zoom in at a point."}},
            {"toolSpec": {"name": "crop", "inputSchema": {"json": {"type": "object", "properties": {}}}}},
        ],
        "toolChoice": {"any": {}},
    }
    assert body["messages"][1:] == [
        {
            "role": "assistant",
            "content": [
                {"toolUse": {"toolUseId": "call_1", "name": "zoom", "input": {"x": 3, "y": 4}}},
                {"toolUse": {"toolUseId": "call_2", "name": "crop", "input": {}}},
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "toolResult": {
                        "toolUseId": "call_1",
                        "content": [
                            {"text": "zoomed"},
                            {"image": {"format": "jpeg", "source": {"bytes": b64(samples)}}},
                        ],
                    }
                },
                {"toolResult": {"toolUseId": "call_2", "content": [{"text": "cropped"}]}},
            ],
        },
    ]
    validate(body)


def test_ollama_names_results_by_tool_and_sends_their_images(wire: Builder, samples: Samples) -> None:
    import ollama

    _, _, body = wire("ollama/qwen2.5vl", agent_chat(data_url(samples.jpeg, "image/jpeg")), tools=TOOLS)
    assert body["tools"] == TOOLS
    assert body["messages"][2:] == [
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"function": {"name": "zoom", "arguments": {"x": 3, "y": 4}}},
                {"function": {"name": "crop", "arguments": {}}},
            ],
        },
        {"role": "tool", "content": "zoomed", "images": [b64(samples)], "tool_name": "zoom"},
        {"role": "tool", "content": "cropped", "tool_name": "crop"},
    ]
    strict = type("StrictMessage", (ollama.Message,), {"model_config": ConfigDict(extra="forbid")})
    for message in body["messages"]:  # the SDK holds images as Image objects; on the wire they are base64
        strict.model_validate({**message, "images": [{"value": i} for i in message.get("images", [])]})
    for tool in body["tools"]:
        ollama.Tool.model_validate(tool)
    _, _, none = wire(
        "ollama/qwen2.5vl", agent_chat(data_url(samples.jpeg, "image/jpeg")), tools=TOOLS, tool_choice="none"
    )
    assert "tools" not in none
    with pytest.raises(BadRequestError) as err:
        wire("ollama/qwen2.5vl", agent_chat(data_url(samples.jpeg, "image/jpeg")), tools=TOOLS, tool_choice="required")
    assert err.value.location == "tool_choice"
    assert err.value.message == (
        "ollama cannot force a tool call (it has no tool_choice); send tool_choice 'auto' or leave it out"
    )


# --- answers and streams ---------------------------------------------------------------------------

ASK = [{"role": "user", "content": "Where is the cat?"}]
ZOOM_CALL = ("zoom", {"x": 3, "y": 4})

ANSWERS: dict[str, dict[str, Any]] = {
    "openai/gpt-4o": {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o",
        "choices": [
            {
                "index": 0,
                "finish_reason": "tool_calls",
                "message": {"role": "assistant", "content": None, "tool_calls": [CALLS[0]]},
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 7},
    },
    "anthropic/claude-sonnet-4-5": {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5",
        "stop_reason": "tool_use",
        "content": [
            {"type": "text", "text": "Looking."},
            {"type": "tool_use", "id": "toolu_1", "name": "zoom", "input": {"x": 3, "y": 4}},
        ],
        "usage": {"input_tokens": 5, "output_tokens": 7},
    },
    "gemini/gemini-2.5-flash": {
        "candidates": [
            {
                "content": {"role": "model", "parts": [{"functionCall": {"name": "zoom", "args": {"x": 3, "y": 4}}}]},
                "finishReason": "STOP",
            }
        ],
        "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 7},
    },
    f"bedrock/{MODEL}": {
        "output": {
            "message": {
                "role": "assistant",
                "content": [{"toolUse": {"toolUseId": "tooluse_1", "name": "zoom", "input": {"x": 3, "y": 4}}}],
            }
        },
        "stopReason": "tool_use",
        "usage": {"inputTokens": 5, "outputTokens": 7},
    },
    "ollama/qwen2.5vl": {
        "model": "qwen2.5vl",
        "done": True,
        "done_reason": "stop",
        "prompt_eval_count": 5,
        "eval_count": 7,
        "message": {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "zoom", "arguments": {"x": 3, "y": 4}}}],
        },
    },
}

KWARGS: dict[str, dict[str, Any]] = {f"bedrock/{MODEL}": CREDS}


def started(model: str, stream: bool) -> tuple[Any, Any, Any]:
    return _start(model, ASK, stream, None, "k", None, None, {"tools": TOOLS, **KWARGS.get(model, {})})


@pytest.mark.parametrize("model", list(ANSWERS))
def test_answers_with_calls_read_as_openai_tool_calls(model: str) -> None:
    cfg, req, mod = started(model, False)
    answer = mod.parse_response(ANSWERS[model], req, cfg)
    (choice,) = answer.choices
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert (call.function.name, json.loads(call.function.arguments)) == ZOOM_CALL
    assert call.type == "function" and call.id
    assert answer.to_dict()["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "zoom"


def sse(*events: dict[str, Any]) -> list[Event]:
    return [Event(e.get("type"), e) for e in events]


STREAMS: dict[str, list[Event]] = {
    "openai/gpt-4o": [
        Event(
            None,
            {"id": "c", "model": "gpt-4o", "created": 1, "choices": [{"index": 0, "delta": d, "finish_reason": f}]},
        )
        for d, f in [
            (
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {"index": 0, "id": "call_1", "type": "function", "function": {"name": "zoom", "arguments": ""}}
                    ],
                },
                None,
            ),
            ({"tool_calls": [{"index": 0, "function": {"arguments": '{"x": '}}]}, None),
            ({"tool_calls": [{"index": 0, "function": {"arguments": '3, "y": 4}'}}]}, None),
            ({}, "tool_calls"),
        ]
    ],
    "anthropic/claude-sonnet-4-5": sse(
        {
            "type": "message_start",
            "message": {"id": "msg_1", "model": "claude", "usage": {"input_tokens": 5, "output_tokens": 1}},
        },
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Looking."}},
        {"type": "content_block_stop", "index": 0},
        {
            "type": "content_block_start",
            "index": 1,
            "content_block": {"type": "tool_use", "id": "toolu_1", "name": "zoom", "input": {}},
        },
        {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": '{"x": 3'}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": ', "y": 4}'}},
        {"type": "content_block_stop", "index": 1},
        {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 7}},
        {"type": "message_stop"},
    ),
    "gemini/gemini-2.5-flash": [Event(None, ANSWERS["gemini/gemini-2.5-flash"])],
    f"bedrock/{MODEL}": [
        Event("messageStart", {"role": "assistant"}),
        Event(
            "contentBlockStart",
            {"start": {"toolUse": {"toolUseId": "tooluse_1", "name": "zoom"}}, "contentBlockIndex": 0},
        ),
        Event("contentBlockDelta", {"delta": {"toolUse": {"input": '{"x": 3,'}}, "contentBlockIndex": 0}),
        Event("contentBlockDelta", {"delta": {"toolUse": {"input": ' "y": 4}'}}, "contentBlockIndex": 0}),
        Event("contentBlockStop", {"contentBlockIndex": 0}),
        Event("messageStop", {"stopReason": "tool_use"}),
        Event("metadata", {"usage": {"inputTokens": 5, "outputTokens": 7}}),
    ],
    "ollama/qwen2.5vl": [Event(None, ANSWERS["ollama/qwen2.5vl"])],
}


@pytest.mark.parametrize("model", list(STREAMS))
def test_streamed_calls_assemble_into_whole_calls(model: str) -> None:
    cfg, req, mod = started(model, True)
    parser = mod.stream_parser(req, cfg)
    chunks = [c for event in STREAMS[model] for c in parser.feed(event)] + parser.close()
    assembler = ToolCallAssembler()
    for chunk in chunks:
        for choice in chunk.choices:
            assembler.feed([piece.to_dict() for piece in choice.delta.tool_calls or []])
    (call,) = assembler.calls()
    assert (call.name, json.loads(call.arguments)) == ZOOM_CALL and call.id
    finishes = [c.finish_reason for chunk in chunks for c in chunk.choices if c.finish_reason]
    assert finishes == ["tool_calls"]


def test_geminis_thought_signature_goes_back_with_its_call(wire: Builder) -> None:
    """Gemini 3 refuses a history whose calls lost their thought signatures: the signature read from an
    answer (a sibling of ``functionCall``) comes back as OpenAI-compatible ``extra_content`` and is
    sent back beside the call."""
    signature = base64.b64encode(b"opaque thought").decode()
    answer = {"candidates": [{"finishReason": "STOP", "content": {"role": "model", "parts": [
        {"functionCall": {"name": "zoom", "args": {"x": 3, "y": 4}}, "thoughtSignature": signature}]}}]}  # fmt: skip
    cfg, req, mod = started("gemini/gemini-3-pro-preview", False)
    (call,) = mod.parse_response(answer, req, cfg).choices[0].message.tool_calls
    assert call.extra_content == {"google": {"thought_signature": signature}}
    scfg, sreq, _ = started("gemini/gemini-3-pro-preview", True)
    parser = mod.stream_parser(sreq, scfg)
    (chunk,) = parser.feed(Event(None, answer))
    assembler = ToolCallAssembler()
    assembler.feed([p.to_dict() for p in chunk.choices[0].delta.tool_calls or []])
    assert assembler.calls()[0].signature == signature

    history = [ASK[0], {"role": "assistant", "content": None, "tool_calls": [call.to_dict()]},
               {"role": "tool", "tool_call_id": call.id, "content": "zoomed"}]  # fmt: skip
    _, _, body = wire("gemini/gemini-3-pro-preview", history, api_key="k", tools=TOOLS)
    assert body["contents"][1]["parts"] == [
        {"functionCall": {"name": "zoom", "args": {"x": 3, "y": 4}}, "thoughtSignature": signature}
    ]
    genai_check(body)
