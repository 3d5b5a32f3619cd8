"""A deployment that breaks off a stream it had started: the caller is told, and the deployment is ejected."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from tests.server.conftest import Upstream, start_server
from tests.server.replicas import metric, metric_samples
from vlmkit.server import Deployment, GatewayModel, ServerSettings


@pytest.fixture()
def breaking() -> Iterator[str]:
    """An OpenAI-compatible upstream that sends one chunk of its stream, then drops the connection."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m"}
            chunk["choices"] = [{"index": 0, "delta": {"content": "Half"}, "finish_reason": None}]
            data = b"data: " + json.dumps(chunk).encode() + b"\n\n"
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.write(b"400\r\nunfinished")  # a chunk announced and never sent: the connection breaks
            self.wfile.flush()
            self.close_connection = True

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_a_stream_broken_off_midway_reaches_the_caller_as_an_error_and_ejects_the_deployment(
    breaking: str, upstreams: Callable[[str], Upstream]
) -> None:
    healthy = upstreams("healthy")
    model = GatewayModel(
        "pair",
        (
            Deployment("openai/m", api_base=breaking, api_key="k", name="breaking"),
            Deployment("openai/m", api_base=healthy.base, api_key="k", name="healthy"),
        ),
        routing="round_robin",
    )
    server = start_server(ServerSettings(gateway={"pair": model}, shutdown_grace=1.0), record=False)
    body = {"model": "pair", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    try:
        with httpx.stream("POST", server.base + "/chat/completions", json=body, timeout=30) as r:
            assert r.status_code == 200  # it had started: too late to fail over
            events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
        assert events[0]["choices"][0]["delta"]["content"] == "Half"
        assert "error" in events[-1] and events[-1]["error"]["type"] == "upstream_error"
        view = {d["deployment"]: d for d in server.state.gateway.health()["pair"]}
        assert view["breaking"]["ejected"] and not view["healthy"]["ejected"]
        samples = metric_samples(httpx.get(server.url + "/metrics").text)
        assert metric(samples, "vlmkit_upstream_errors_total", model="pair", deployment="breaking") == 1
        assert metric(samples, "vlmkit_requests_total", model="pair", deployment="breaking", status="502") == 1
        for _ in range(2):  # while it cools down, every request goes to the healthy one
            r2 = httpx.post(server.base + "/chat/completions", json={**body, "stream": False}, timeout=30)
            assert r2.status_code == 200
        assert len(healthy.requests) == 2
    finally:
        server.stop()
