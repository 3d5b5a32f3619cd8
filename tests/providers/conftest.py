"""Fixtures for the providers tests: test images generated from the real photos, a scriptable HTTP
server on 127.0.0.1 standing in for a provider, and a guard that fails any test reaching elsewhere."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from PIL import Image

from tests.conftest import encode, guard_loopback, photo_path
from vlmkit.providers import RetryPolicy, Transport

# --- the guard: loopback only --------------------------------------------------------------------


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """No cloud here: fail any connection to anything but 127.0.0.1, and any DNS lookup."""
    guard_loopback(monkeypatch)


@pytest.fixture(autouse=True)
def no_provider_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keys and addresses from the developer's environment must not leak into the tests."""
    import os

    for name in list(os.environ):
        if name.endswith(("_API_KEY", "_API_BASE", "_BASE_URL")) or name.startswith(("AWS_", "VERTEX", "AZURE_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


# --- test images -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Samples:
    jpeg: bytes
    png_alpha: bytes
    webp: bytes
    heic: bytes
    photo_12mp: bytes


def _alpha_png() -> bytes:
    with Image.open(photo_path("chelsea.png")) as im:
        rgba = im.convert("RGBA")
    mask = Image.new("L", rgba.size, 0)
    mask.paste(255, (0, 0, rgba.width // 2, rgba.height))
    rgba.putalpha(mask)
    return encode(rgba, "PNG")


@pytest.fixture(scope="session")
def samples() -> Samples:
    jpeg = photo_path("grace_hopper.jpg").read_bytes()
    with Image.open(photo_path("rocket.jpg")) as im:
        rocket = im.convert("RGB")
    with Image.open(photo_path("coffee.png")) as im:
        coffee = im.convert("RGB")
    big = rocket.resize((4000, 3000), Image.Resampling.BILINEAR)  # 12 megapixels
    return Samples(
        jpeg=jpeg,
        png_alpha=_alpha_png(),
        webp=encode(coffee, "WEBP", quality=80),
        heic=encode(coffee.resize((320, 240)), "HEIF", quality=70),
        photo_12mp=encode(big, "JPEG", quality=90),
    )


def data_url(data: bytes, mime: str) -> str:
    import base64

    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def image_message(url: str, text: str = "What is in this image?", **extra: Any) -> list[dict[str, Any]]:
    image: dict[str, Any] = {"url": url, **extra}
    return [{"role": "user", "content": [{"type": "text", "text": text}, {"type": "image_url", "image_url": image}]}]


def size_of(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as im:
        return im.size


# --- a scriptable upstream on 127.0.0.1 ------------------------------------------------------------


@dataclass
class Reply:
    status: int = 200
    body: bytes | str | dict[str, Any] = b"{}"
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"

    def payload(self) -> bytes:
        if isinstance(self.body, dict):
            return json.dumps(self.body).encode()
        return self.body.encode() if isinstance(self.body, str) else self.body


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


class Upstream:
    """A real HTTP server on 127.0.0.1 answering from a script of replies (the last one repeats)."""

    def __init__(self) -> None:
        self.replies: list[Reply] = [Reply(body=OPENAI_REPLY)]
        self.seen: list[Seen] = []
        self.files: dict[str, tuple[bytes, str]] = {}
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                data, mime = upstream.files.get(self.path, (b"not found", "text/plain"))
                self.send_response(200 if self.path in upstream.files else 404)
                self.send_header("Content-Type", mime)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                upstream.seen.append(Seen("POST", self.path, dict(self.headers.items()), body))
                reply = upstream.replies.pop(0) if len(upstream.replies) > 1 else upstream.replies[0]
                payload = reply.payload()
                self.send_response(reply.status)
                self.send_header("Content-Type", reply.content_type)
                self.send_header("Content-Length", str(len(payload)))
                for k, v in reply.headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def script(self, *replies: Reply) -> None:
        self.replies = list(replies)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


OPENAI_REPLY: dict[str, Any] = {
    "id": "chatcmpl-abc",
    "object": "chat.completion",
    "created": 1700000000,
    "model": "gpt-4o-2024-08-06",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "A cat."}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
}


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    server = Upstream()
    yield server
    server.close()


@pytest.fixture
def fast() -> Transport:
    """A transport whose backoff is milliseconds, so retry tests run fast (waits are not asserted)."""
    return Transport(retry=RetryPolicy(max_retries=2, initial_backoff=0.001, max_backoff=0.005, max_retry_after=0.05))


Builder = Callable[..., tuple[str, dict[str, str], Any]]


@pytest.fixture
def wire() -> Builder:
    """``wire(model, messages, **kwargs) -> (url, headers, json body)``: what completion() would send."""
    from vlmkit.providers.call import _start, _wire

    def build(model: str, messages: Any, **kwargs: Any) -> tuple[str, dict[str, str], Any]:
        stream = kwargs.pop("stream", False)
        api_base, api_key = kwargs.pop("api_base", None), kwargs.pop("api_key", None)
        cfg, req, mod = _start(model, messages, stream, api_base, api_key, None, None, kwargs)
        assert all(image.handle is not None or cfg.fetches_urls for image in req.images), "no fetching in wire()"
        url, headers, body = _wire(mod, req, cfg)
        return url, headers, json.loads(body)

    return build
