"""The server under bad clients, over real sockets on 127.0.0.1: images whose pixels do not decode,
senders that trickle or stall their bodies, and clients that leave halfway through sending."""

from __future__ import annotations

import io
import json
import logging
import random
import re
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.conftest import photo_path
from tests.server.conftest import API_KEY, Running, data_url, start_server
from tests.server.conftest import error_of as _error
from vlmkit.images.probe import check_structure
from vlmkit.images.sniff import ImageFormat
from vlmkit.server import ServerSettings
from vlmkit.server.config import parse_config

AUTH = {"Authorization": f"Bearer {API_KEY}"}
CHAT = "/v1/chat/completions"


# --- images llama.cpp cannot decode: 400 naming the part ---------------------------------------


def scrambled_jpeg() -> bytes:
    """A real JPEG whose scan data is random while every marker stays intact (no 0xFF in the noise)."""
    data = photo_path("grace_hopper.jpg").read_bytes()
    sos = data.find(b"\xff\xda")
    start = sos + 2 + int.from_bytes(data[sos + 2 : sos + 4], "big")
    end = data.rfind(b"\xff\xd9")
    rnd = random.Random(7)
    noise = bytes(rnd.randrange(255) for _ in range(end - start))
    scrambled = data[:start] + noise + data[end:]
    check_structure(scrambled, ImageFormat.JPEG)  # the image layer's structure check passes it
    Image.open(io.BytesIO(scrambled)).load()  # and Pillow decodes it without a word
    return scrambled


def corrupt_huge_png() -> bytes:
    """An 81-megapixel PNG (under the default pixel limit) whose compressed pixel data is broken."""
    buf = io.BytesIO()
    Image.new("L", (9000, 9000), 128).save(buf, "PNG", compress_level=1)
    data = bytearray(buf.getvalue())
    idat = data.find(b"IDAT")
    middle = idat + 4 + int.from_bytes(data[idat - 4 : idat], "big") // 2
    data[middle : middle + 64] = b"\xa5" * 64
    return bytes(data)


def _chat_with_image_at_1_2(url: str, stream: bool = False) -> dict[str, Any]:
    good = data_url(photo_path("grace_hopper.jpg").read_bytes())
    return {
        "model": "tiny",
        "max_tokens": 2,
        "stream": stream,
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "First"}, {"type": "image_url", "image_url": good}]},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "and"},
                    {"type": "text", "text": "this one?"},
                    {"type": "image_url", "image_url": {"url": url}},
                ],
            },
        ],
    }


@pytest.fixture(scope="module")
def local_server(settings: ServerSettings) -> Iterator[Running]:
    running = start_server(settings, record=False)
    yield running
    running.stop()


@pytest.mark.parametrize("stream", [False, True])
def test_a_jpeg_whose_scan_is_scrambled_is_a_400_naming_the_part(local_server: Running, stream: bool) -> None:
    body = _chat_with_image_at_1_2(data_url(scrambled_jpeg()), stream=stream)
    r = httpx.post(local_server.url + CHAT, json=body, headers=AUTH, timeout=60)
    assert r.status_code == 400, r.text
    error = _error(r)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == "messages[1].content[2]"
    assert error["message"].startswith("messages[1].content[2]: llama.cpp's image decoder cannot read this image's")
    assert "image data is corrupt" in error["message"]
    assert "send another image" in error["message"]


def test_a_corrupt_81_megapixel_png_is_a_400_naming_the_part(local_server: Running) -> None:
    body = _chat_with_image_at_1_2(data_url(corrupt_huge_png(), "image/png"))
    r = httpx.post(local_server.url + CHAT, json=body, headers=AUTH, timeout=120)
    assert r.status_code == 400, r.text
    error = _error(r)
    assert error["param"] == "messages[1].content[2]"
    assert error["message"].startswith("messages[1].content[2]: the image ")
    assert "cannot be decoded" in error["message"] and "truncated or corrupt" in error["message"]


# --- slow senders --------------------------------------------------------------------------------


def _open(running: Running, length: int, path: str = CHAT) -> socket.socket:
    """A raw connection that has sent a request's headers declaring a body of ``length`` bytes."""
    port = int(running.url.rsplit(":", 1)[1])
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {API_KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    )
    sock.sendall(head.encode())
    return sock


def _answer(sock: socket.socket) -> tuple[int, dict[str, str], dict[str, Any]]:
    """The status, headers and JSON body the server answered on ``sock`` (read until it closes)."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, json.loads(body)


def _nothing_answered(sock: socket.socket) -> bool:
    """Whether the connection is still open with no answer on it."""
    sock.setblocking(False)
    try:
        sock.recv(1, socket.MSG_PEEK)  # an answer, or the end of the connection
    except BlockingIOError:
        return True
    finally:
        sock.setblocking(True)
    return False


class Tricklers:
    """Raw connections that each declare a 400 KB body and send it a few bytes at a time."""

    def __init__(self, running: Running, n: int) -> None:
        self.socks = [_open(running, 400 * 1024) for _ in range(n)]
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._trickle, daemon=True)
        self._thread.start()

    def _trickle(self) -> None:
        while not self._stop.wait(0.05):
            for sock in self.socks:
                sock.sendall(b" " * 16)
            self.sent += 16

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        for sock in self.socks:
            sock.close()


def test_slow_senders_do_not_hold_the_slots_that_bound_image_work(settings: ServerSettings) -> None:
    # five slow bodies against four large-body slots: before, they took every slot while trickling,
    # and a 320 KB image request waited behind them until its client gave up
    running = start_server(
        settings.with_overrides(max_large_requests=4, body_timeout=60.0, min_body_rate=0.0), record=False
    )
    slow = Tricklers(running, 5)
    try:
        while slow.sent < 64:  # every slow request is in, with part of its body
            time.sleep(0.01)
        image = photo_path("chelsea.png").read_bytes()
        body = {
            "model": "tiny",
            "max_tokens": 2,
            "messages": [
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_url(image, "image/png")}}]}
            ],
        }
        assert len(json.dumps(body)) > 256 * 1024  # a large body: it needs a slot
        r = httpx.post(running.url + CHAT, json=body, headers=AUTH, timeout=60)
        assert r.status_code == 200, r.text
        assert r.json()["usage"]["completion_tokens"] == 2
        assert all(_nothing_answered(sock) for sock in slow.socks)  # the slow ones are all still held
    finally:
        slow.close()
        running.stop()


def test_large_bodies_in_memory_are_bounded_by_the_budget_and_small_ones_pass(settings: ServerSettings) -> None:
    # a 600 KB budget: a client declaring 500 KB takes it before sending its body, so a 320 KB image
    # request waits unread in its socket until that client is gone; a text request needs no budget
    running = start_server(
        settings.with_overrides(max_body_memory_bytes=600 * 1024, body_timeout=60.0, min_body_rate=0.0), record=False
    )
    budget = running.state.body_budget
    holder = _open(running, 500 * 1024)
    waiting: socket.socket | None = None
    try:
        holder.sendall(b" " * 1024)
        for _ in range(3000):  # until the server has read the holder's headers
            if budget.free == 100 * 1024:
                break
            time.sleep(0.01)
        assert budget.free == 100 * 1024
        image = photo_path("chelsea.png").read_bytes()
        body = json.dumps(
            {
                "model": "tiny",
                "max_tokens": 2,
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": data_url(image, "image/png")}}],
                    }
                ],
            }
        ).encode()
        waiting = _open(running, len(body))
        waiting.sendall(body)
        text = {"model": "tiny", "max_tokens": 2, "messages": [{"role": "user", "content": "Hi"}]}
        r = httpx.post(running.url + CHAT, json=text, headers=AUTH, timeout=60)
        assert r.status_code == 200, r.text
        assert _nothing_answered(waiting)  # still waiting for the budget
        holder.close()  # the holder goes away: its 500 KB go back, and the image request is served
        status, _, answer = _answer(waiting)
        assert status == 200, answer
        assert answer["usage"]["completion_tokens"] == 2
        for _ in range(3000):
            if budget.free == budget.total:
                break
            time.sleep(0.01)
        assert budget.free == budget.total  # every byte given back
    finally:
        holder.close()
        if waiting is not None:
            waiting.close()
        running.stop()


@pytest.fixture(scope="module")
def strict_server(settings: ServerSettings) -> Iterator[Running]:
    """Small body limits, so that slow senders are refused quickly: 1.5 s for a body, and at least
    1 KB/s once 0.3 s have passed."""
    running = start_server(
        settings.with_overrides(body_timeout=1.5, min_body_rate=1024.0, body_rate_grace=0.3), record=False
    )
    yield running
    running.stop()


def test_a_body_that_stalls_past_the_deadline_is_a_408(strict_server: Running) -> None:
    sock = _open(strict_server, 100_000)
    sock.sendall(b" " * 4096)  # enough to earn the whole deadline at 1 KB/s, then nothing more
    status, headers, body = _answer(sock)
    sock.close()
    assert status == 408
    assert headers["connection"] == "close"
    error = body["error"]
    assert (error["type"], error["code"], error["param"]) == ("timeout_error", "request_timeout", None)
    assert error["message"].startswith(
        "the request body did not arrive within this server's limit of 1.5 s (4,096 of 100,000 bytes received)"
    )


def test_a_body_that_arrives_too_slowly_is_a_408(strict_server: Running) -> None:
    sock = _open(strict_server, 100_000)
    sock.sendall(b" " * 10)
    status, headers, body = _answer(sock)
    sock.close()
    assert status == 408
    assert headers["connection"] == "close"
    message = body["error"]["message"]
    assert message.startswith("the request body arrived too slowly: 10 of 100,000 bytes in ")
    assert message.endswith("under this server's minimum of 1 KB/s; send it without pauses")


def test_a_body_that_keeps_up_passes_the_strict_limits(strict_server: Running) -> None:
    r = httpx.post(strict_server.url + CHAT, content=b"{}", headers=AUTH, timeout=30)
    assert r.status_code == 422  # the body arrived: what it says is judged
    assert _error(r)["param"] == "model"


# --- a client that leaves halfway through its body -----------------------------------------------


def test_a_client_that_leaves_while_sending_its_body_is_one_quiet_line(
    local_server: Running, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="vlmkit.server")
    sock = _open(local_server, 2000)
    sock.sendall(b'{"model": "tiny", "messages": ' + b" " * 970)  # half the body
    time.sleep(0.2)
    sock.close()
    deadline = time.monotonic() + 30
    while not [r for r in caplog.records if "went away" in r.getMessage()]:
        assert time.monotonic() < deadline, "the server logged nothing about the client that left"
        time.sleep(0.02)
    ours = [r for r in caplog.records if r.name.startswith("vlmkit")]
    assert len(ours) == 1
    record = ours[0]
    assert record.levelno == logging.INFO
    assert record.exc_info is None
    assert re.fullmatch(
        r"POST /v1/chat/completions: the client went away while sending its body \(\d[\d,]* of 2,000 bytes read\)",
        record.getMessage(),
    )


# --- the limits in the YAML config ---------------------------------------------------------------


def test_body_limits_in_the_config() -> None:
    s = parse_config({"limits": {"body_timeout": 30, "min_body_rate_kb": 4, "body_rate_grace": 2.5}})
    assert (s.body_timeout, s.min_body_rate, s.body_rate_grace) == (30.0, 4096.0, 2.5)
    d = ServerSettings()
    assert (d.body_timeout, d.min_body_rate, d.body_rate_grace) == (120.0, 8192.0, 10.0)
    assert parse_config({"limits": {"max_body_memory_mb": 8}}).max_body_memory_bytes == 8 * 1024 * 1024
    assert d.max_body_memory_bytes == 16 * 1024 * 1024
