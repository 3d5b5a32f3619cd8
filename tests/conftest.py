"""Shared fixtures: the real photographs in examples/images, and edge cases generated from them."""

from __future__ import annotations

import asyncio
import contextlib
import io
import ipaddress
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
import pytest
from PIL import Image

PHOTOS = Path(__file__).resolve().parents[1] / "examples" / "images"


def photo_path(name: str) -> Path:
    path = PHOTOS / name
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: the tests read the photos kept in examples/images")
    return path


@pytest.fixture(autouse=True)
def encoder_cache_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test's own on-disk encoder cache (VLMKIT_CACHE_DIR): no test finds another's embeddings."""
    path = tmp_path_factory.mktemp("vlmkit-cache")
    monkeypatch.setenv("VLMKIT_CACHE_DIR", str(path))
    return path


@pytest.fixture(scope="session")
def images_dir() -> Path:
    return photo_path("grace_hopper.jpg").parent


@pytest.fixture(scope="session")
def hopper_bytes() -> bytes:
    return photo_path("grace_hopper.jpg").read_bytes()


@pytest.fixture(scope="session")
def chelsea() -> Image.Image:
    with Image.open(photo_path("chelsea.png")) as im:
        return im.convert("RGB")


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    """``image`` saved in Pillow format ``fmt`` (HEIF via pillow-heif)."""
    if fmt == "HEIF":
        from pillow_heif import register_heif_opener

        register_heif_opener()
    buf = io.BytesIO()
    image.save(buf, format=fmt, **params)
    return buf.getvalue()


# --- the guard: tests reach loopback only ---------------------------------------------------------


def is_numeric_host(host: object) -> bool:
    try:
        ipaddress.ip_address(str(host).split("%")[0])
    except ValueError:
        return False
    return True


def guard_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any attempt to connect anywhere but 127.0.0.1, or to ask DNS about a name."""
    real_connect, real_aconnect, real_gai = socket.create_connection, anyio.connect_tcp, socket.getaddrinfo

    def connect(address: tuple[str, int], *args: Any, **kwargs: Any) -> socket.socket:
        assert address[0] == "127.0.0.1", f"the test tried to connect to {address}"
        return real_connect(address, *args, **kwargs)

    async def aconnect(remote_host: Any, remote_port: int, **kwargs: Any) -> Any:
        assert str(remote_host) == "127.0.0.1", f"the test tried to connect to {remote_host}"
        return await real_aconnect(remote_host, remote_port, **kwargs)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        assert host is None or is_numeric_host(host), f"the test tried to resolve {host!r}"
        return real_gai(host, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", connect)
    monkeypatch.setattr(anyio, "connect_tcp", aconnect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


# --- an image server on 127.0.0.1, and a watch on the event loop ----------------------------------


@dataclass
class ImageServer:
    """Serves the real photos of examples/images at ``/NAME`` from 127.0.0.1; each answer waits
    ``delay`` seconds first (a slow network), and every path asked for is kept in ``served``."""

    delay: float = 0.0
    served: list[str] = field(default_factory=list)
    port: int = 0

    def url(self, name: str = "grace_hopper.jpg") -> str:
        return f"http://127.0.0.1:{self.port}/{name}"


@pytest.fixture()
def image_server() -> Iterator[ImageServer]:
    state = ImageServer()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            state.served.append(self.path)
            time.sleep(state.delay)
            data = photo_path(self.path.lstrip("/")).read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    state.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()


class _SlowCallbacks(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("Executing"):  # asyncio's "Executing <Handle ...> took 1.234 seconds"
            self.seen.append(message)


@contextlib.asynccontextmanager
async def loop_must_not_block(limit: float) -> AsyncIterator[list[str]]:
    """Inside a running event loop: every callback or task step that holds the loop longer than
    ``limit`` seconds is recorded in the yielded list (asyncio's debug mode measures each one)."""
    loop = asyncio.get_running_loop()
    logger = logging.getLogger("asyncio")
    handler = _SlowCallbacks()
    saved = loop.get_debug(), loop.slow_callback_duration, logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    loop.set_debug(True)
    loop.slow_callback_duration = limit
    await asyncio.sleep(0)  # debug mode measures from the next step on: this one began before it was on
    try:
        yield handler.seen
    finally:
        loop.set_debug(saved[0])
        loop.slow_callback_duration = saved[1]
        logger.setLevel(saved[2])
        logger.removeHandler(handler)
