"""The SDK over a cloud provider: ``vk.llm("openai/gpt-4o").respond(chat)`` through ``vlmkit.providers``.

A small OpenAI-compatible server on 127.0.0.1 stands in for OpenAI (``OPENAI_BASE_URL``). It streams
a fixed reply, so here (unlike with the random local model) the words are known.
"""

from __future__ import annotations

import base64
import io
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from pydantic import BaseModel

import vlmkit as vk

REPLY = ["A woman ", "in uniform", "."]


class _OpenAI(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    requests: list[dict[str, Any]]

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.requests.append(request)
        structured = request.get("response_format", {}).get("type") == "json_schema"
        pieces = ['{"name": "Grace", ', '"count": 1}'] if structured else REPLY
        cut = request.get("max_completion_tokens", request.get("max_tokens")) == 2
        if cut:  # OpenAI's answer to a token limit the reply does not fit in
            pieces = pieces[:1]
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": request["model"]}
        events = [{**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": p}}]} for p in pieces]
        events.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "length" if cut else "stop"}]})
        events.append(
            {**base, "choices": [], "usage": {"prompt_tokens": 85, "completion_tokens": 3, "total_tokens": 88}}
        )
        for event in [*events, "[DONE]"]:
            data = f"data: {event if isinstance(event, str) else json.dumps(event)}\n\n".encode()
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.write(b"0\r\n\r\n")


@pytest.fixture()
def openai_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict[str, Any]]]:
    requests: list[dict[str, Any]] = []
    handler = type("Handler", (_OpenAI,), {"requests": requests})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{server.server_address[1]}/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    yield requests
    server.shutdown()
    server.server_close()


def sent_image(request: dict[str, Any]) -> Image.Image:
    [part] = [p for p in request["messages"][-1]["content"] if p["type"] == "image_url"]
    header, _, payload = part["image_url"]["url"].partition(",")
    assert header == "data:image/jpeg;base64"
    return Image.open(io.BytesIO(base64.b64decode(payload)))


def test_convenience_api_over_a_provider(openai_server: list[dict[str, Any]], photo: Path) -> None:
    image_handle = vk.prepare_image(str(photo))
    model = vk.llm("openai/gpt-4o")
    chat = vk.Chat()
    chat.add_user_message("Describe this image please", images=[image_handle])
    fragments: list[str] = []
    prediction = model.respond(chat, on_prediction_fragment=lambda f: fragments.append(f.content))

    assert prediction.content == "".join(REPLY) and fragments == REPLY
    assert prediction.stats.stop_reason is vk.StopReason.EOS_FOUND
    assert (prediction.stats.prompt_tokens, prediction.stats.predicted_tokens) == (85, 3)
    assert prediction.model_info is not None and prediction.model_info.vision
    [request] = openai_server
    assert request["model"] == "gpt-4o" and request["stream"] is True
    assert sent_image(request).size == (512, 600)
    assert [m.identifier for m in vk.list_loaded_models()] == ["openai/gpt-4o"]


def test_config_detail_reaches_the_provider(openai_server: list[dict[str, Any]], photo: Path) -> None:
    model = vk.llm("openai/gpt-4o")
    chat = vk.Chat()
    chat.add_user_message("Describe this image please", images=[vk.prepare_image(str(photo))])
    model.respond(chat, config={"detail": "low"})
    part = next(p for p in openai_server[-1]["messages"][-1]["content"] if p["type"] == "image_url")
    assert part["image_url"]["detail"] == "low"
    assert max(sent_image(openai_server[-1]).size) == 512  # rendered for OpenAI's low detail
    chat.add_user_message("And this one?", images=[vk.prepare_image(str(photo))], detail="high")
    model.respond(chat, config={"detail": "low"})  # a detail set on the image wins over the config's
    assert sent_image(openai_server[-1]).size == (512, 600)
    with pytest.raises(vk.InvalidSettingError, match="token cap, which only the embedded engine applies"):
        model.respond(chat, config={"detail": 300})
    with pytest.raises(vk.InvalidSettingError) as bound:
        model.respond(chat, config={"imageMaxTokens": 300})
    assert bound.value.location == "image_max_tokens"
    assert bound.value.message == (
        "image_max_tokens is an image token bound, which only the embedded engine applies; "
        "provider models take detail 'low', 'high' or 'auto'"
    )
    assert len(openai_server) == 2  # nothing was sent for the refused settings


async def test_async_api_over_a_provider(openai_server: list[dict[str, Any]], photo: Path) -> None:
    async with vk.AsyncClient() as client:
        chat = vk.Chat("Be brief.")
        chat.add_user_message("Describe this image please", images=[await client.files.prepare_image(photo)])
        model = await client.llm.model("openai/gpt-4o")
        stream = await model.respond_stream(chat, config={"maxTokens": 20, "temperature": 0.2})
        assert [f.content async for f in stream] == REPLY
        assert stream.result().content == "".join(REPLY)
    [request] = openai_server
    assert request["messages"][0] == {"role": "system", "content": "Be brief."}
    assert request["temperature"] == 0.2
    assert request.get("max_completion_tokens", request.get("max_tokens")) == 20


class Answer(BaseModel):
    name: str
    count: int


def test_structured_output_over_a_provider(openai_server: list[dict[str, Any]]) -> None:
    with vk.Client() as client:
        result = client.llm.model("openai/gpt-4o").respond("Who?", response_format=Answer)
    assert result.parsed == Answer(name="Grace", count=1)
    [request] = openai_server
    assert request["response_format"]["type"] == "json_schema"
    assert request["response_format"]["json_schema"]["schema"] == Answer.model_json_schema()


def test_structured_output_cut_by_a_providers_token_limit(openai_server: list[dict[str, Any]]) -> None:
    with vk.Client() as client, pytest.raises(vk.StructuredOutputError) as err:
        client.llm.model("openai/gpt-4o").respond("Who?", response_format=Answer, config={"maxTokens": 2})
    assert "the structured reply of openai/gpt-4o was cut at 3 tokens by the token limit" in str(err.value)
    assert "raise max_tokens" in str(err.value)
    assert err.value.content == '{"name": "Grace", ' and err.value.stop_reason == "maxPredictedTokensReached"


def test_provider_without_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with vk.Client() as client, pytest.raises(vk.ProviderError, match=r"no API key for openai.*OPENAI_API_KEY"):
        client.llm.model("openai/gpt-4o")


def test_text_only_provider_model_says_so(openai_server: list[dict[str, Any]]) -> None:
    with vk.Client() as client:
        assert client.llm.model("openai/gpt-3.5-turbo").get_info().vision is False
        assert client.llm.model("openai/gpt-4o").get_info().vision is True
