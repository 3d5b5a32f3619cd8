"""Anthropic Messages: the exact wire request against the documented format and the ``anthropic``
SDK's request TypedDicts; response parsing."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from anthropic.types import message_create_params as params

from tests.providers.conftest import Builder, Samples, data_url, image_message, size_of
from tests.providers.sdk_types import check
from vlmkit.images import ANTHROPIC

HELLO = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}]


def source_of(body: dict[str, Any]) -> dict[str, Any]:
    (block,) = [b for b in body["messages"][0]["content"] if b["type"] == "image"]
    return block["source"]  # type: ignore[no-any-return]


def test_text_message_wire_request(wire: Builder) -> None:
    url, headers, body = wire(
        "anthropic/claude-3-7-sonnet-latest", HELLO, api_key="sk-ant", temperature=0.5, stop=["X"]
    )
    assert url == "https://api.anthropic.com/v1/messages"
    assert headers == {
        "Content-Type": "application/json",
        "Accept": "application/json",
        "anthropic-version": "2023-06-01",
        "x-api-key": "sk-ant",
    }
    assert body == {
        "model": "claude-3-7-sonnet-latest",
        "max_tokens": 4096,
        "messages": [{"role": "user", "content": "Hello"}],
        "system": "Be brief.",
        "temperature": 0.5,
        "stop_sequences": ["X"],
    }
    # anthropic SDK 2.x speaks API version 2026-10-21, which dropped the sampling settings; vlmkit sends
    # 2023-06-01, where they are documented, and only when the caller gives them
    check({k: v for k, v in body.items() if k != "temperature"}, params.MessageCreateParamsNonStreaming)
    _, _, streaming = wire("anthropic/claude-3-7-sonnet-latest", HELLO, api_key="k", stream=True, max_tokens=9)
    assert streaming["stream"] is True and streaming["max_tokens"] == 9
    check(streaming, params.MessageCreateParamsStreaming)


def test_jpeg_goes_as_base64_source(wire: Builder, samples: Samples) -> None:
    _, _, body = wire(
        "anthropic/claude-3-7-sonnet-latest", image_message(data_url(samples.jpeg, "image/jpeg")), api_key="k"
    )
    assert body["messages"][0]["content"] == [
        {"type": "text", "text": "What is in this image?"},
        {
            "type": "image",
            "source": {"type": "base64", "media_type": "image/jpeg", "data": base64.b64encode(samples.jpeg).decode()},
        },
    ]
    check(body, params.MessageCreateParamsNonStreaming)


@pytest.mark.parametrize(
    ("kind", "mime", "expected_mime", "size"),
    [
        ("png_alpha", "image/png", "image/png", (451, 300)),
        ("webp", "image/webp", "image/webp", None),
        ("heic", "image/heic", "image/jpeg", (320, 240)),
        ("photo_12mp", "image/jpeg", "image/jpeg", ANTHROPIC.target_size(4000, 3000)),
    ],
)
def test_images_are_rendered_for_anthropic(
    wire: Builder, samples: Samples, kind: str, mime: str, expected_mime: str, size: tuple[int, int] | None
) -> None:
    data = getattr(samples, kind)
    _, _, body = wire("anthropic/claude-3-7-sonnet-latest", image_message(data_url(data, mime)), api_key="k")
    source = source_of(body)
    assert source["type"] == "base64" and source["media_type"] == expected_mime
    sent = base64.b64decode(source["data"])
    if size is None:
        assert sent == data  # acceptable as it is: untouched
    else:
        assert size_of(sent) == size
        w, h = size
        assert max(w, h) <= 1568 and w * h <= (ANTHROPIC.max_pixels or 0)
    check(body, params.MessageCreateParamsNonStreaming)


def test_http_url_goes_as_url_source(wire: Builder) -> None:
    msg = image_message("https://example.com/x.png", format="image/png")
    _, _, body = wire("anthropic/claude-3-7-sonnet-latest", msg, api_key="k")
    assert source_of(body) == {"type": "url", "url": "https://example.com/x.png"}
    check(body, params.MessageCreateParamsNonStreaming)


def test_missing_key_is_an_authentication_error(wire: Builder) -> None:
    from vlmkit.errors import AuthenticationError

    with pytest.raises(AuthenticationError) as err:
        wire("anthropic/claude-3-7-sonnet-latest", HELLO)
    assert err.value.message == "no API key for anthropic: pass api_key= or set ANTHROPIC_API_KEY"
    assert err.value.status_code == 401


def test_parse_response() -> None:
    from vlmkit.providers import anthropic
    from vlmkit.providers.call import _start

    cfg, req, _ = _start("anthropic/claude-3-7-sonnet-latest", HELLO, False, None, "k", None, None, {})
    data = {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": "claude-3-7-sonnet-20250219",
        "content": [{"type": "text", "text": "A cat "}, {"type": "text", "text": "on a mat."}],
        "stop_reason": "max_tokens",
        "stop_sequence": None,
        "usage": {"input_tokens": 20, "output_tokens": 6, "cache_read_input_tokens": 4},
    }
    response = anthropic.parse_response(data, req, cfg)
    assert response.choices[0].message.content == "A cat on a mat."
    assert response.choices[0].finish_reason == "length"
    assert response.usage.to_dict() == {"prompt_tokens": 24, "completion_tokens": 6, "total_tokens": 30}
    assert response.id == "msg_01" and response.model == "claude-3-7-sonnet-20250219"
