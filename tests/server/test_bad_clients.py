"""The server under bad clients: images whose pixels do not decode."""

from __future__ import annotations

import io
import random
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
