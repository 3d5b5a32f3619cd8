"""End to end: completion() against real OpenAI-compatible servers on 127.0.0.1.

1. A small OpenAI-compatible server written here (always runs): it reads the request the way a server
   must (JSON, data-URL images decoded and opened with Pillow) and answers in OpenAI's shapes.
2. llama-cpp-python's own server (``python -m llama_cpp.server``) serving the generated test model from
   ``vlmkit.engine.synthetic``: runs where the engine and the server extras are installed.
"""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread
from typing import Any

import anyio
import pytest
from PIL import Image

from tests.providers.conftest import Samples, data_url
from vlmkit import Chat, prepare_image
from vlmkit.providers import acompletion, completion


class _Compatible(BaseHTTPRequestHandler):
    """Answers /v1/chat/completions with a description of the images it received."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        seen = []
        for message in request["messages"]:
            if isinstance(message["content"], list):
                for part in message["content"]:
                    if part["type"] == "image_url":
                        _, _, payload = part["image_url"]["url"].partition(",")
                        with Image.open(io.BytesIO(base64.b64decode(payload))) as im:
                            seen.append(f"{im.format} {im.width}x{im.height}")
        text = "images: " + ", ".join(seen) if seen else "no images"
        if request.get("stream"):
            self._stream(request, text)
            return
        body = json.dumps(
            {
                "id": "chatcmpl-local",
                "object": "chat.completion",
                "created": 1,
                "model": request["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _stream(self, request: dict[str, Any], text: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        for word in text.split(" "):
            chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": request["model"],
                     "choices": [{"index": 0, "delta": {"content": word + " "}, "finish_reason": None}]}  # fmt: skip
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.wfile.flush()
        self.wfile.write(b"data: [DONE]\n\n")
        self.close_connection = True


@pytest.fixture
def compatible() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Compatible)
    server.daemon_threads = True
    Thread(target=server.serve_forever, args=(0.02,), daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_completion_against_an_openai_compatible_server(compatible: str, samples: Samples) -> None:
    messages = [
        {"role": "user", "content": [
            {"type": "text", "text": "Compare"},
            {"type": "image_url", "image_url": data_url(samples.heic, "image/heic")},
            {"type": "image_url", "image_url": {"url": data_url(samples.photo_12mp, "image/jpeg"), "detail": "low"}},
        ]},
    ]  # fmt: skip
    response = completion("hosted_vllm/Qwen/Qwen2-VL-2B-Instruct", messages, api_base=compatible)
    assert response.choices[0].message.content == "images: JPEG 320x240, JPEG 2048x1536"
    assert response.usage.total_tokens == 15 and response.model == "Qwen/Qwen2-VL-2B-Instruct"

    stream = completion("lm_studio/qwen2-vl", messages, api_base=compatible, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text.strip() == "images: JPEG 320x240, JPEG 2048x1536"


def test_a_chat_goes_through_the_same_layer(compatible: str, samples: Samples) -> None:
    chat = Chat("Be brief.")
    chat.add_user_message("What is this?", images=[prepare_image(samples.png_alpha)])

    async def main() -> Any:
        return await acompletion("llama_cpp/test", chat, api_base=compatible)

    assert anyio.run(main).content == "images: PNG 451x300"


# --- llama-cpp-python's own server -----------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    import llama_cpp.server.app  # noqa: F401 - the server extras must be installed (test dependency)

    from vlmkit.engine import synthetic

    model, mmproj = synthetic.write_test_model(tmp_path_factory.mktemp("model"))
    port = _free_port()
    log = Path(tmp_path_factory.mktemp("log")) / "server.log"
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--clip_model_path", str(mmproj),
               "--chat_format", "llava-1-5", "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048",
               "--n_threads", "1", "--verbose", "False"]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "NO_PROXY": "*"})
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"llama_cpp.server exited: {log.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                time.sleep(0.2)
        else:
            pytest.fail("llama_cpp.server did not start in 60 s")
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_llama_cpp_server_serves_the_generated_test_model(llama_server: str, samples: Samples) -> None:
    messages = [{"role": "user", "content": [
        {"type": "text", "text": "Describe the image."},
        {"type": "image_url", "image_url": {"url": data_url(samples.webp, "image/webp")}},
    ]}]  # fmt: skip
    response = completion("llama_cpp/vlmkit-test-vlm", messages, api_base=llama_server, max_tokens=8, temperature=0)
    assert response.object == "chat.completion"
    assert isinstance(response.choices[0].message.content, str)
    assert response.choices[0].finish_reason in ("stop", "length")
    assert response.usage.completion_tokens <= 8
    assert response.usage.prompt_tokens > 10  # the image's tokens were counted: it reached the model
    stream = completion("llama_cpp/vlmkit-test-vlm", messages, api_base=llama_server, max_tokens=4, stream=True)
    chunks = list(stream)
    assert chunks and all(c.object == "chat.completion.chunk" for c in chunks)


# --- local/KEY: the embedded engine ----------------------------------------------------------------


def test_local_models_go_to_the_embedded_engine(tmp_path: Path, samples: Samples) -> None:
    from vlmkit.engine import owner, synthetic

    model, mmproj = synthetic.write_test_model(tmp_path)
    engine = owner.engine()  # the process's engine, which completion("local/...") runs on
    engine.register("test-vlm", model, mmproj)
    try:
        messages = [{"role": "user", "content": [
            {"type": "text", "text": "Describe."},
            {"type": "image_url", "image_url": data_url(samples.jpeg, "image/jpeg")},
        ]}]  # fmt: skip
        response = completion("local/test-vlm", messages, max_tokens=4, temperature=0)
        assert response.provider == "local" and response.usage.completion_tokens <= 4
        assert response.choices[0].finish_reason in ("stop", "length")
        chunks = list(completion("local/test-vlm", messages, max_tokens=3, stream=True))
        assert chunks[-1].choices[0].finish_reason in ("stop", "length") and chunks[-1].usage is not None
    finally:
        engine.unload("test-vlm")


@pytest.mark.parametrize("asynchronous", [False, True])
async def test_local_models_call_tools_and_give_n_choices(tmp_path: Path, asynchronous: bool) -> None:
    from vlmkit.engine import owner, synthetic

    model, mmproj = synthetic.write_test_model(tmp_path)
    engine = owner.engine()
    engine.register("test-vlm-tools", model, mmproj)
    tools = [{"type": "function", "function": {"name": "zoom", "parameters": {
        "type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}}}]  # fmt: skip
    ask = [{"role": "user", "content": "Zoom."}]
    kwargs: dict[str, Any] = {"tools": tools, "tool_choice": "required", "max_tokens": 60, "temperature": 0}
    try:
        if asynchronous:
            response = await acompletion("local/test-vlm-tools", ask, **kwargs)
            stream = await acompletion("local/test-vlm-tools", ask, stream=True, **kwargs)
            chunks = [chunk async for chunk in stream]
            two = await acompletion("local/test-vlm-tools", ask, n=2, max_tokens=2)
        else:
            response = completion("local/test-vlm-tools", ask, **kwargs)
            chunks = list(completion("local/test-vlm-tools", ask, stream=True, **kwargs))
            two = completion("local/test-vlm-tools", ask, n=2, max_tokens=2)
        (choice,) = response.choices
        assert choice.finish_reason == "tool_calls"
        (call,) = choice.message.tool_calls or []
        assert call.function.name == "zoom" and isinstance(json.loads(call.function.arguments)["x"], int)
        pieces = [p for c in chunks for ch in c.choices for p in ch.delta.tool_calls or []]
        assert [(p.index, p.function.name) for p in pieces] == [(0, "zoom")]
        assert chunks[-1].choices[0].finish_reason == "tool_calls"
        assert [c.index for c in two.choices] == [0, 1]
    finally:
        engine.unload("test-vlm-tools")
