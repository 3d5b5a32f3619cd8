"""Ollama /api/chat: the exact wire request in its documented shape; response parsing."""

from __future__ import annotations

import base64

import pytest

from tests.providers.conftest import Builder, Samples, data_url, image_message, size_of

HELLO = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}]


def test_text_message_wire_request(wire: Builder) -> None:
    url, headers, body = wire("ollama/llava", HELLO, temperature=0, max_tokens=20, stop=["\n"], seed=1)
    assert url == "http://localhost:11434/api/chat"
    assert headers == {"Content-Type": "application/json", "Accept": "application/json"}
    assert body == {
        "model": "llava",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}],
        "stream": False,
        "options": {"temperature": 0, "num_predict": 20, "stop": ["\n"], "seed": 1},
    }
    url, _, body = wire("ollama_chat/llava:13b", HELLO, stream=True, api_base="http://127.0.0.1:9999")
    assert url == "http://127.0.0.1:9999/api/chat" and body["stream"] is True and body["model"] == "llava:13b"


@pytest.mark.parametrize(
    ("kind", "mime", "magic", "size"),
    [
        ("jpeg", "image/jpeg", b"\xff\xd8\xff", None),
        ("png_alpha", "image/png", b"\x89PNG", None),
        ("webp", "image/webp", b"\xff\xd8\xff", None),  # Go's decoders: JPEG and PNG only
        ("heic", "image/heic", b"\xff\xd8\xff", (320, 240)),
        ("photo_12mp", "image/jpeg", b"\xff\xd8\xff", (2048, 1536)),
    ],
)
def test_images_go_in_the_images_list(
    wire: Builder, samples: Samples, kind: str, mime: str, magic: bytes, size: tuple[int, int] | None
) -> None:
    data = getattr(samples, kind)
    _, _, body = wire("ollama/llava", image_message(data_url(data, mime)))
    (message,) = body["messages"]
    assert message["role"] == "user" and message["content"] == "What is in this image?"
    (image,) = message["images"]
    sent = base64.b64decode(image, validate=True)
    assert sent.startswith(magic)
    if kind in ("jpeg", "png_alpha"):
        assert sent == data
    if size is not None:
        assert size_of(sent) == size


def test_json_mode() -> None:
    from vlmkit.providers import ollama
    from vlmkit.providers.call import _start

    _, req, _ = _start(
        "ollama/llava", HELLO, False, None, None, None, None, {"response_format": {"type": "json_object"}}
    )
    cfg, _, _ = _start("ollama/llava", HELLO, False, None, None, None, None, {})
    assert ollama.build_request(req, cfg).json["format"] == "json"


def test_parse_response() -> None:
    from vlmkit.providers import ollama
    from vlmkit.providers.call import _start

    cfg, req, _ = _start("ollama/llava", HELLO, False, None, None, None, None, {})
    data = {
        "model": "llava",
        "created_at": "2024-01-01T00:00:00Z",
        "message": {"role": "assistant", "content": "A cat."},
        "done": True,
        "done_reason": "length",
        "prompt_eval_count": 600,
        "eval_count": 5,
    }
    response = ollama.parse_response(data, req, cfg)
    assert response.content == "A cat." and response.choices[0].finish_reason == "length"
    assert response.usage.to_dict() == {"prompt_tokens": 600, "completion_tokens": 5, "total_tokens": 605}
