"""Fixtures for the server tests: a real uvicorn on a free port of 127.0.0.1 serving the generated test
VLM, and a fake OpenAI-compatible upstream (also on 127.0.0.1) behind the gateway."""

from __future__ import annotations

import base64
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # LiteLLM must not fetch its price list

import json

import uvicorn

from tests.conftest import photo_path
from vlmkit.engine.synthetic import write_test_model, write_test_text_model
from vlmkit.prediction import PredictionResult
from vlmkit.server import Deployment, GatewayModel, LocalModel, ServerSettings, uvicorn_config
from vlmkit.server.state import ServerState

API_KEY = "sk-vlmkit-test"


# --- the fake upstream ---------------------------------------------------------------------------


@dataclass
class Upstream:
    """An OpenAI-compatible server on 127.0.0.1 that records what it was sent and answers as scripted.

    ``status``: the HTTP status to answer with (500 makes it a failing deployment); ``reply``: the
    assistant's text; ``finish``: its finish reason; ``calls``: tool calls to answer with instead (in a
    stream, each call's arguments come in two pieces). A request's ``n`` gets that many choices.
    Streams are sent in OpenAI's chunk shape.
    """

    name: str
    status: int = 200
    reply: str = "a fake answer"
    finish: str = "stop"
    error_message: str = "the upstream failed"
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    port: int = 0
    calls: list[dict[str, Any]] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


def _start_upstream(up: Upstream) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            if self.path.startswith("/images/"):
                data = photo_path(self.path.split("?")[0].rsplit("/", 1)[1]).read_bytes()
                self._send(200, data, "image/jpeg")
            else:
                self._send(404, b"{}", "application/json")

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            up.requests.append(body)
            up.headers.append({k.lower(): v for k, v in self.headers.items()})
            if up.status != 200:
                err = {"error": {"message": up.error_message, "type": "server_error", "code": None}}
                self._send(up.status, json.dumps(err).encode(), "application/json")
                return
            usage = {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14}
            n = int(body.get("n") or 1)
            finish = "tool_calls" if up.calls else up.finish
            if body.get("stream"):
                chunks = []
                for i in range(n):
                    chunks.append(
                        {
                            "choices": [
                                {"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
                            ]
                        }
                    )
                    for word in [] if up.calls else up.reply.split(" "):
                        chunks.append({"choices": [{"index": i, "delta": {"content": word}, "finish_reason": None}]})
                    for k, call in enumerate(up.calls or []):
                        args = call["function"]["arguments"]
                        half = len(args) // 2
                        start = {**call, "index": k, "function": {**call["function"], "arguments": args[:half]}}
                        rest = {"index": k, "function": {"arguments": args[half:]}}
                        for piece in (start, rest):
                            chunks.append(
                                {"choices": [{"index": i, "delta": {"tool_calls": [piece]}, "finish_reason": None}]}
                            )
                    chunks.append({"choices": [{"index": i, "delta": {}, "finish_reason": finish}]})
                out = b""
                for c in chunks:
                    full = {"id": "chatcmpl-up", "object": "chat.completion.chunk", "created": 1, "model": "up", **c}
                    out += b"data: " + json.dumps(full).encode() + b"\n\n"
                out += b"data: [DONE]\n\n"
                self._send(200, out, "text/event-stream")
                return
            answer = {
                "id": "chatcmpl-up",
                "object": "chat.completion",
                "created": 1,
                "model": body.get("model"),
                "choices": [
                    {
                        "index": i,
                        "message": {"role": "assistant", "content": None, "tool_calls": up.calls}
                        if up.calls
                        else {"role": "assistant", "content": up.reply},
                        "finish_reason": finish,
                    }
                    for i in range(n)
                ],
                "usage": usage,
            }
            self._send(200, json.dumps(answer).encode(), "application/json")

        def _send(self, status: int, data: bytes, ctype: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    up.port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture()
def upstreams() -> Iterator[Callable[[str], Upstream]]:
    """``upstreams(name)`` starts a fake upstream; all stop after the test."""
    servers: list[ThreadingHTTPServer] = []

    def make(name: str) -> Upstream:
        up = Upstream(name)
        servers.append(_start_upstream(up))
        return up

    yield make
    for s in servers:
        s.shutdown()
        s.server_close()


# --- the server under test -----------------------------------------------------------------------


@dataclass
class Running:
    url: str
    state: ServerState
    server: uvicorn.Server
    thread: threading.Thread
    results: list[PredictionResult] = field(default_factory=list)

    @property
    def base(self) -> str:
        return self.url + "/v1"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        assert not self.thread.is_alive(), "the server did not stop"


def start_server(settings: ServerSettings, *, record: bool = True, fragment_delay: float = 0.0) -> Running:
    """Serve ``settings`` with uvicorn on a free port of 127.0.0.1, in a thread.

    ``record`` keeps every engine result in ``Running.results``; ``fragment_delay`` slows every
    generated fragment down (so a test can act while a generation is still running).
    """
    config = uvicorn_config(settings, log_level="warning")
    app = config.app
    state: ServerState = app.state
    engine = state.local.lease
    running_results: list[PredictionResult] = []
    if record or fragment_delay:
        real = engine.respond

        def respond(*args: Any, **kwargs: Any) -> PredictionResult:
            emit = kwargs.get("on_fragment")
            if fragment_delay and emit is not None:

                def slow(fragment: Any) -> None:
                    time.sleep(fragment_delay)
                    emit(fragment)

                kwargs["on_fragment"] = slow
            result = real(*args, **kwargs)
            running_results.append(result)
            return result

        engine.respond = respond  # type: ignore[method-assign]
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive(), "the server failed to start"
        assert time.monotonic() < deadline, "the server did not start in time"
        time.sleep(0.01)
    return Running(f"http://127.0.0.1:{port}", state, server, thread, running_results)


@pytest.fixture(scope="session")
def tiny_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    model, mmproj = write_test_model(tmp_path_factory.mktemp("tiny-vlm"))
    text = write_test_text_model(tmp_path_factory.mktemp("tiny-text"))
    return model, mmproj, text


@pytest.fixture(scope="session")
def settings(tiny_files: tuple[Path, Path, Path], tmp_path_factory: pytest.TempPathFactory) -> ServerSettings:
    model, mmproj, text = tiny_files
    return ServerSettings(
        api_keys=frozenset({API_KEY}),
        models_dir=str(tmp_path_factory.mktemp("models")),
        local={"tiny": LocalModel("tiny", str(model), str(mmproj)), "tiny-text": LocalModel("tiny-text", str(text))},
        max_body_bytes=3 * 1024 * 1024,
        model_ttl=None,
        shutdown_grace=1.0,
    )


@pytest.fixture()
def gateway_settings(settings: ServerSettings, upstreams: Callable[[str], Upstream]) -> tuple[ServerSettings, Any]:
    """Settings with gateway names over fresh fake upstreams: ``gw`` (one), ``pair`` (two deployments)."""
    a, b, c = upstreams("a"), upstreams("b"), upstreams("c")
    gateway = {
        "gw": GatewayModel("gw", (Deployment("openai/up-model", api_base=a.base, api_key="sk-up-a"),), vision=True),
        "pair": GatewayModel(
            "pair",
            (
                Deployment("openai/up-model", api_base=b.base, api_key="sk-up-b"),
                Deployment("openai/up-model", api_base=c.base, api_key="sk-up-c"),
            ),
        ),
    }
    return settings.with_overrides(gateway=gateway), {"a": a, "b": b, "c": c}


@pytest.fixture()
def server(gateway_settings: tuple[ServerSettings, Any]) -> Iterator[Running]:
    running = start_server(gateway_settings[0])
    yield running
    running.stop()


@pytest.fixture()
def ups(gateway_settings: tuple[ServerSettings, Any]) -> Any:
    return gateway_settings[1]


@pytest.fixture(scope="session")
def hopper_jpeg() -> bytes:
    return photo_path("grace_hopper.jpg").read_bytes()


def error_of(r: Any) -> dict[str, Any]:
    """The ``error`` of an HTTP answer, checked to be in OpenAI's error shape."""
    body = r.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    error: dict[str, Any] = body["error"]
    return error


def data_url(data: bytes, mime: str = "image/jpeg") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def image_message(url_or_part: str | dict[str, Any], text: str = "Describe this image.") -> list[dict[str, Any]]:
    part = url_or_part if isinstance(url_or_part, dict) else {"type": "image_url", "image_url": {"url": url_or_part}}
    return [{"role": "user", "content": [{"type": "text", "text": text}, part]}]
