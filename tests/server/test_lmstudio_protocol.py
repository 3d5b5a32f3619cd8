"""LM Studio's protocol at the frame level, against a real server on 127.0.0.1 with an API key: the
greeting, authentication, and every kind of bad input answered with the protocol's error frame, the
connection kept, other clients unaffected and no traceback sent or logged."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from PIL import Image
from websockets.sync.client import ClientConnection, connect

from tests.server.conftest import API_KEY, Running, start_server
from vlmkit.prediction import StopReason
from vlmkit.server import ServerSettings
from vlmkit.server.config import ConfigError, parse_config
from vlmkit.server.keys import KeyPolicy
from vlmkit.server.lmstudio_ws import frame_limit


@pytest.fixture(scope="module")
def running(settings: ServerSettings) -> Iterator[Running]:
    server = start_server(settings, record=False)
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def no_tracebacks(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Bad input is the client's: nothing of it may show in the server's log as an error."""
    with caplog.at_level(logging.INFO, logger="vlmkit.server"):
        yield
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not errors, [r.getMessage() for r in errors]


def ws(running: Running, namespace: str = "llm", **kwargs: Any) -> ClientConnection:
    return connect(running.url.replace("http", "ws") + f"/{namespace}", max_size=None, **kwargs)


def ask(conn: ClientConnection, frame: dict[str, Any] | str | bytes) -> dict[str, Any]:
    conn.send(frame if isinstance(frame, (str, bytes)) else json.dumps(frame))
    answer: dict[str, Any] = json.loads(conn.recv(timeout=30))
    return answer


def auth(passkey: str = API_KEY, identifier: str = "test-client") -> dict[str, Any]:
    return {"authVersion": 1, "clientIdentifier": identifier, "clientPasskey": passkey}


@contextlib.contextmanager
def authed(running: Running, namespace: str = "llm") -> Iterator[ClientConnection]:
    with ws(running, namespace) as conn:
        assert ask(conn, auth()) == {"success": True}
        yield conn


def works(conn: ClientConnection, call_id: int = 99) -> None:
    """The connection still answers a call."""
    answer = ask(conn, {"type": "rpcCall", "endpoint": "listLoaded", "callId": call_id})
    assert answer["type"] == "rpcResult" and answer["callId"] == call_id and isinstance(answer["result"], list)


def jpeg(size: tuple[int, int] = (64, 48)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buf, format="JPEG")
    return buf.getvalue()


# --- greeting and authentication ------------------------------------------------------------------


def test_the_greeting_needs_no_key(running: Running) -> None:
    r = httpx.get(running.url + "/lmstudio-greeting")
    assert r.status_code == 200 and r.json() == {"lmstudio": True}
    assert httpx.get(running.base + "/models").status_code == 401  # the rest still needs the key


def test_a_wrong_key_is_refused_and_the_connection_may_try_again(running: Running) -> None:
    with ws(running) as conn:
        answer = ask(conn, auth("sk-wrong"))
        assert answer["success"] is False
        assert answer["error"]["title"] == "the API key is not valid for this server"
        assert "send one of the server's API keys as the client passkey" in answer["error"]["suggestion"]
        assert "sk-lm-ID:KEY" in answer["error"]["suggestion"]
        assert ask(conn, auth()) == {"success": True}
        works(conn)


def test_a_bearer_header_on_the_upgrade(running: Running) -> None:
    with ws(running, additional_headers={"Authorization": f"Bearer {API_KEY}"}) as conn:
        assert ask(conn, auth("anything")) == {"success": True}
        works(conn)


def test_an_lm_studio_api_token(settings: ServerSettings) -> None:
    """Newer LM Studio SDKs take ``api_token="sk-lm-ID:KEY"`` and send it as identifier ``ID``, passkey ``KEY``."""
    token = "sk-lm-AbCd1234:" + "k" * 20
    server = start_server(settings.with_overrides(api_keys=frozenset({token})), record=False)
    try:
        with ws(server) as conn:
            assert ask(conn, auth("k" * 20, identifier="AbCd1234")) == {"success": True}
        with ws(server) as conn:
            assert ask(conn, auth("x" * 20, identifier="AbCd1234"))["success"] is False
    finally:
        server.stop()


def test_frames_before_authentication_are_answered_not_served(running: Running) -> None:
    with ws(running) as conn:
        answer = ask(conn, {"type": "rpcCall", "endpoint": "listLoaded", "callId": 1})
        assert answer["type"] == "rpcError" and answer["callId"] == 1
        assert "not authenticated: its first message must be {'authVersion': 1" in answer["error"]["title"]
        answer = ask(conn, {"type": "channelCreate", "endpoint": "predict", "channelId": 4})
        assert answer["type"] == "channelError" and answer["channelId"] == 4
        assert ask(conn, auth()) == {"success": True}
        works(conn)


# --- bad frames ----------------------------------------------------------------------------------


def test_malformed_frames(running: Running) -> None:
    with authed(running) as conn:
        answer = ask(conn, "{not json")
        assert answer["type"] == "communicationWarning"
        assert answer["warning"].startswith("the frame is not valid JSON")
        assert ask(conn, "[1, 2]")["warning"] == "a frame must be a JSON object, not an array"
        answer = ask(conn, {"type": "rpcCall", "endpoint": "listLoaded", "callId": "seven"})
        assert answer["warning"] == "'callId' must be a non-negative integer, not 'seven'"
        answer = ask(conn, {"type": "rpcCall", "callId": 3})
        assert answer["type"] == "rpcError" and answer["callId"] == 3
        assert answer["error"]["title"].startswith("a rpcCall frame needs 'endpoint', a non-empty string")
        answer = ask(conn, {"type": "signalSubscribe", "channelId": 2})
        assert answer["type"] == "channelError" and answer["channelId"] == 2
        assert "unknown frame type 'signalSubscribe'; a client sends one of rpcCall" in answer["error"]["title"]
        works(conn)


def test_an_oversized_frame(running: Running, settings: ServerSettings) -> None:
    limit = frame_limit(settings)
    with authed(running) as conn:
        answer = ask(conn, json.dumps({"type": "rpcCall", "endpoint": "listLoaded", "callId": 1, "pad": "x" * limit}))
        assert answer["type"] == "communicationWarning"
        assert f"over this server's limit of {limit:,}" in answer["warning"]
        assert "uploadFileBase64" in answer["warning"]
        works(conn)


def test_unknown_endpoints_and_channels_are_named(running: Running) -> None:
    with authed(running) as conn:
        answer = ask(conn, {"type": "rpcCall", "endpoint": "frobnicate", "callId": 5})
        assert answer["type"] == "rpcError" and answer["callId"] == 5
        title = answer["error"]["title"]
        assert title.startswith("vlmkit does not implement the rpcCall endpoint llm.frobnicate; on /llm it implements:")
        assert "getModelInfo" in title
        answer = ask(conn, {"type": "channelSend", "channelId": 7, "message": {"type": "cancel"}})
        assert answer["type"] == "channelError" and answer["channelId"] == 7
        assert answer["error"]["title"].startswith("no channel 7 is open on this connection")
        works(conn)
    with authed(running, "embedding") as conn:
        answer = ask(conn, {"type": "channelCreate", "endpoint": "getOrLoad", "channelId": 1, "creationParameter": {}})
        assert answer == {
            "type": "channelError",
            "channelId": 1,
            "error": {
                "title": "vlmkit does not implement the channelCreate endpoint embedding.getOrLoad; "
                "it implements nothing on /embedding"
            },
        }


def test_an_upload_over_the_size_limit(running: Running, settings: ServerSettings) -> None:
    too_big = base64.b64encode(b"\xff" * (settings.max_body_bytes + 1024)).decode()
    assert len(too_big) < frame_limit(settings)  # the frame itself is within bounds: the upload is refused
    with authed(running, "files") as conn:
        param = {"name": "huge.jpg", "contentBase64": too_big}
        answer = ask(conn, {"type": "rpcCall", "endpoint": "uploadFileBase64", "callId": 1, "parameter": param})
        assert answer["type"] == "rpcError" and answer["callId"] == 1
        title = answer["error"]["title"]
        assert f"the upload 'huge.jpg' is about {settings.max_body_bytes + 1024:,} bytes" in title
        assert f"over this server's limit of {settings.max_body_bytes:,} per image" in title
        assert "downscale" in title


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (jpeg()[:200], "truncated"),
        (b"%PDF-1.4 not an image at all", "PDF"),
    ],
)
def test_a_corrupt_image_upload(running: Running, data: bytes, expected: str) -> None:
    with authed(running, "files") as conn:
        param = {"name": "bad.jpg", "contentBase64": base64.b64encode(data).decode()}
        answer = ask(conn, {"type": "rpcCall", "endpoint": "uploadFileBase64", "callId": 1, "parameter": param})
        assert answer["type"] == "rpcError"
        assert expected in answer["error"]["title"]
        assert "Traceback" not in answer["error"]["title"]
        param = {"name": "bad.jpg", "contentBase64": "not base64!!"}
        answer = ask(conn, {"type": "rpcCall", "endpoint": "uploadFileBase64", "callId": 2, "parameter": param})
        assert answer["error"]["title"].startswith("the upload 'bad.jpg' is not valid base64")


def test_a_bad_client_does_not_disturb_another(running: Running) -> None:
    with authed(running, "files") as bad, authed(running, "files") as good:
        bad.send("{broken")
        bad.send(json.dumps({"type": "rpcCall", "endpoint": "nope", "callId": 1}))
        param = {"name": "ok.jpg", "contentBase64": base64.b64encode(jpeg()).decode()}
        answer = ask(good, {"type": "rpcCall", "endpoint": "uploadFileBase64", "callId": 1, "parameter": param})
        assert answer["type"] == "rpcResult"
        assert answer["result"]["fileType"] == "image" and answer["result"]["identifier"].startswith("file-")
        again = ask(good, {"type": "rpcCall", "endpoint": "uploadFileBase64", "callId": 2, "parameter": param})
        assert again["result"]["identifier"] == answer["result"]["identifier"]  # the same image: the same upload
        assert json.loads(bad.recv(timeout=30))["type"] == "communicationWarning"
        assert json.loads(bad.recv(timeout=30))["type"] == "rpcError"


def test_a_prediction_naming_a_file_never_uploaded(running: Running) -> None:
    history = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "file", "name": "x.jpg", "identifier": "file-0", "sizeBytes": 1, "fileType": "image"},
                ],
            }
        ]
    }
    param = {
        "modelSpecifier": {"type": "query", "query": {"identifier": "tiny"}},
        "history": history,
        "predictionConfigStack": {"layers": []},
    }
    with authed(running) as conn:
        answer = ask(conn, {"type": "channelCreate", "endpoint": "predict", "channelId": 1, "creationParameter": param})
        assert answer["type"] == "channelError" and answer["channelId"] == 1
        title = answer["error"]["title"]
        assert title.startswith("history.messages[0].content[1]: no uploaded file has the handle 'file-0'")
        assert "prepare_image" in title
        works(conn)


def test_a_bad_tool_definition_names_the_part(running: Running) -> None:
    tool = {"type": "function", "function": {"name": "zoom", "parameters": {"type": "object", "required": 3}}}
    stack = {"layers": [{"layerName": "apiOverride", "config": {"fields": [
        {"key": "llm.prediction.tools", "value": {"type": "toolArray", "tools": [tool], "force": True}},
    ]}}]}  # fmt: skip
    history = {"messages": [{"role": "user", "content": [{"type": "text", "text": "Zoom in"}]}]}
    param = {"modelSpecifier": "tiny", "history": history, "predictionConfigStack": stack}
    with authed(running) as conn:
        answer = ask(conn, {"type": "channelCreate", "endpoint": "predict", "channelId": 1, "creationParameter": param})
        assert answer["type"] == "channelError" and answer["channelId"] == 1
        title = answer["error"]["title"]
        assert title.startswith(
            "llm.prediction.tools.tools[0].function.parameters: parameters is not valid JSON Schema"
        )
        assert "required" in title
        works(conn)


# --- gateway models ------------------------------------------------------------------------------


def test_a_gateway_model_over_the_protocol(server: Running, ups: Any) -> None:
    with authed(server, "files") as files:
        param = {"name": "red.jpg", "contentBase64": base64.b64encode(jpeg()).decode()}
        handle = ask(files, {"type": "rpcCall", "endpoint": "uploadFileBase64", "callId": 1, "parameter": param})
    image = {"type": "file", "name": "red.jpg", "fileType": "image", **handle["result"]}
    history = {"messages": [{"role": "user", "content": [{"type": "text", "text": "What colour?"}, image]}]}
    stack = {"layers": [{"layerName": "apiOverride", "config": {"fields": [
        {"key": "llm.prediction.maxPredictedTokens", "value": {"checked": True, "value": 20}},
        {"key": "llm.prediction.temperature", "value": 0.2},
    ]}}]}  # fmt: skip
    param = {"modelSpecifier": {"type": "query", "query": {"identifier": "gw"}}, "history": history,
             "predictionConfigStack": stack}  # fmt: skip
    with authed(server) as conn:
        loaded = ask(conn, {"type": "channelCreate", "endpoint": "getOrLoad", "channelId": 1,
                            "creationParameter": {"identifier": "gw", "loadConfigStack": {"layers": []}}})  # fmt: skip
        assert loaded["message"]["type"] == "alreadyLoaded" and loaded["message"]["info"]["vision"] is True
        assert json.loads(conn.recv(timeout=30)) == {"type": "channelClose", "channelId": 1}
        conn.send(
            json.dumps({"type": "channelCreate", "endpoint": "predict", "channelId": 2, "creationParameter": param})
        )
        messages = []
        while (frame := json.loads(conn.recv(timeout=30)))["type"] != "channelClose":
            assert frame["type"] == "channelSend" and frame["channelId"] == 2, frame
            messages.append(frame["message"])
    fragments = "".join(m["fragment"]["content"] for m in messages if m["type"] == "fragment")
    assert fragments == "afakeanswer"  # the fake upstream's words, as its chunks came
    success = messages[-1]
    assert success["type"] == "success" and success["stats"]["stopReason"] == "eosFound"
    assert success["modelInfo"]["modelKey"] == "gw"
    sent = ups["a"].requests[-1]
    assert (sent["max_completion_tokens"], sent["temperature"], sent["stream"]) == (20, 0.2, True)
    part = sent["messages"][0]["content"][1]
    assert part["type"] == "image_url" and part["image_url"]["url"].startswith("data:image/jpeg;base64,")


def test_a_gateway_models_tool_calls_over_the_protocol(server: Running, ups: Any) -> None:
    ups["a"].reply, ups["a"].finish = "", "tool_calls"
    ups["a"].calls = [
        {"id": "call_up", "type": "function", "function": {"name": "zoom", "arguments": '{"x": 3, "y": 4}'}}
    ]
    tool = {"type": "function", "function": {"name": "zoom", "description": "Zoom in.", "parameters": {
        "type": "object", "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}}}}}  # fmt: skip
    stack = {"layers": [{"layerName": "apiOverride", "config": {"fields": [
        {"key": "llm.prediction.tools", "value": {"type": "toolArray", "tools": [tool], "force": True}},
    ]}}]}  # fmt: skip
    earlier = {"type": "function", "id": "call_0", "name": "zoom", "arguments": {"x": 1, "y": 2}}
    history = {"messages": [
        {"role": "user", "content": [{"type": "text", "text": "Zoom in twice"}]},
        {"role": "assistant", "content": [{"type": "toolCallRequest", "toolCallRequest": earlier}]},
        {"role": "tool", "content": [{"type": "toolCallResult", "content": "zoomed", "toolCallId": "call_0"}]},
    ]}  # fmt: skip
    param = {"modelSpecifier": "gw", "history": history, "predictionConfigStack": stack}
    with authed(server) as conn:
        conn.send(
            json.dumps({"type": "channelCreate", "endpoint": "predict", "channelId": 1, "creationParameter": param})
        )
        messages = []
        while (frame := json.loads(conn.recv(timeout=30)))["type"] != "channelClose":
            assert frame["type"] == "channelSend", frame
            messages.append(frame["message"])
    kinds = [m["type"] for m in messages if m["type"].startswith("toolCall")]
    assert kinds == [
        "toolCallGenerationStart",
        "toolCallGenerationNameReceived",
        "toolCallGenerationArgumentFragmentGenerated",
        "toolCallGenerationEnd",
    ]
    end = next(m for m in messages if m["type"] == "toolCallGenerationEnd")
    assert end["toolCallRequest"] == {
        "type": "function",
        "id": "call_up",
        "name": "zoom",
        "arguments": {"x": 3, "y": 4},
    }
    assert messages[-1]["type"] == "success" and messages[-1]["stats"]["stopReason"] == "toolCalls"
    sent = ups["a"].requests[-1]  # the provider got the tools, the forced choice, the earlier call and its result
    assert sent["tools"] == [tool] and sent["tool_choice"] == "required"
    assistant, result = sent["messages"][1], sent["messages"][2]
    assert assistant["tool_calls"] == [
        {"id": "call_0", "type": "function", "function": {"name": "zoom", "arguments": '{"x": 1, "y": 2}'}}
    ]
    assert result["role"] == "tool" and result["tool_call_id"] == "call_0" and "zoomed" in json.dumps(result)


def test_a_client_that_leaves_mid_prediction_stops_it(settings: ServerSettings) -> None:
    server = start_server(settings, fragment_delay=0.05)
    try:
        stack = {"layers": [{"layerName": "apiOverride", "config": {"fields": [
            {"key": "llm.prediction.maxPredictedTokens", "value": {"checked": True, "value": 500}},
        ]}}]}  # fmt: skip
        history = {"messages": [{"role": "user", "content": [{"type": "text", "text": "Tell me a story"}]}]}
        param = {"modelSpecifier": "tiny-text", "history": history, "predictionConfigStack": stack}
        with authed(server) as conn:
            conn.send(json.dumps({"type": "channelCreate", "endpoint": "predict", "channelId": 1,
                                  "creationParameter": param}))  # fmt: skip
            while json.loads(conn.recv(timeout=60))["message"]["type"] != "fragment":
                pass
        deadline = time.monotonic() + 30
        while not server.results:
            assert time.monotonic() < deadline, "the prediction went on after its client left"
            time.sleep(0.05)
        assert server.results[-1].stats.stop_reason is StopReason.USER_STOPPED
        assert server.results[-1].stats.predicted_tokens < 500
        assert server.state.local.inflight == 0
        with authed(server) as conn:
            works(conn)
    finally:
        server.stop()


def test_discovery_as_a_config_key() -> None:
    assert parse_config({"lmstudio_discovery": True}).lmstudio_discovery is True
    assert parse_config({}).lmstudio_discovery is False
    with pytest.raises(ConfigError, match="config: lmstudio_discovery must be true or false"):
        parse_config({"lmstudio_discovery": "yes"})


def test_a_named_keys_models_hold_over_the_protocol(settings: ServerSettings) -> None:
    team = KeyPolicy("team", "sk-team-key", models=frozenset({"tiny"}))
    server = start_server(settings.with_overrides(keys=(team,)), record=False)
    history = {"messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]}
    param = {"modelSpecifier": "tiny-text", "history": history, "predictionConfigStack": {"layers": []}}
    try:
        with ws(server) as conn:
            assert ask(conn, auth("sk-team-key")) == {"success": True}
            frame = {"type": "channelCreate", "endpoint": "predict", "channelId": 1, "creationParameter": param}
            answer = ask(conn, frame)
            assert answer["type"] == "channelError" and answer["channelId"] == 1
            assert answer["error"]["title"].startswith(
                "the key 'team' may not use the model 'tiny-text'; it may use: tiny"
            )
            works(conn)
    finally:
        server.stop()
