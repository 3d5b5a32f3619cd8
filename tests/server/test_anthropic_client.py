"""The official ``anthropic`` client against a ``vlmkit serve`` subprocess: Messages with base64 images on
the generated test model and on a gateway name, streaming, count_tokens, ``x-api-key``, and every bad
input as Anthropic's own error shape and the client's own exception type."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest

from tests.server.conftest import API_KEY
from tests.server.served import Served, serve_fixture


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, tiny_files: tuple[Path, Path, Path]) -> Iterator[Served]:
    yield from serve_fixture(tmp_path_factory, tiny_files)


def client(served: Served, key: str = API_KEY) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=served.url, api_key=key, max_retries=0, timeout=120)


def image_block(data: bytes, media_type: str = "image/jpeg") -> dict[str, Any]:
    return {
        "type": "image",
        "source": {"type": "base64", "media_type": media_type, "data": base64.b64encode(data).decode()},
    }


def asked(data: bytes, media_type: str = "image/jpeg", text: str = "Describe this image.") -> list[Any]:
    return [{"role": "user", "content": [{"type": "text", "text": text}, image_block(data, media_type)]}]


def error_of(exc: anthropic.APIStatusError) -> dict[str, Any]:
    """The error of an answer, checked to be in Anthropic's shape exactly."""
    body: Any = exc.body
    assert isinstance(body, dict) and set(body) == {"type", "error"} and body["type"] == "error", body
    assert set(body["error"]) == {"type", "message"}, body
    error: dict[str, Any] = body["error"]
    return error


def test_a_base64_image_on_the_local_model(served: Served, hopper_jpeg: bytes) -> None:
    message = client(served).messages.create(
        model="tiny",
        max_tokens=6,
        extra_body={"temperature": 0},
        messages=asked(hopper_jpeg),  # type: ignore[arg-type]
    )
    assert message.type == "message" and message.role == "assistant" and message.model == "tiny"
    assert message.id.startswith("msg_")
    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens == 6
    assert message.usage.input_tokens + (message.usage.cache_read_input_tokens or 0) > 10  # the image and the text
    assert [block.type for block in message.content] == ["text"]


def test_a_stream_on_the_local_model(served: Served, hopper_jpeg: bytes) -> None:
    with client(served).messages.stream(
        model="tiny",
        max_tokens=5,
        extra_body={"temperature": 0},
        messages=asked(hopper_jpeg),  # type: ignore[arg-type]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert final.stop_reason == "max_tokens"
    assert final.usage.output_tokens == 5
    assert final.content[0].type == "text" and final.content[0].text == text
    # the same turn, not streamed, says the same (temperature 0)
    again = client(served).messages.create(
        model="tiny",
        max_tokens=5,
        extra_body={"temperature": 0},
        messages=asked(hopper_jpeg),  # type: ignore[arg-type]
    )
    assert again.content[0].type == "text" and again.content[0].text == text


def test_the_raw_event_sequence(served: Served, hopper_jpeg: bytes) -> None:
    body = {"model": "tiny", "max_tokens": 3, "stream": True, "messages": asked(hopper_jpeg)}
    r = served.post("/v1/messages", body, **{"x-api-key": API_KEY})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    names = [line[len("event: ") :] for line in r.text.splitlines() if line.startswith("event: ")]
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(names[3:-3]) <= {"content_block_delta"}


def test_a_gateway_model_with_system_and_stop_sequences(served: Served, hopper_jpeg: bytes) -> None:
    message = client(served).messages.create(
        model="gw",
        max_tokens=20,
        system="Answer briefly.",
        stop_sequences=["END"],
        messages=asked(hopper_jpeg),  # type: ignore[arg-type]
        metadata={"user_id": "u-1"},
    )
    assert message.content[0].type == "text" and message.content[0].text == "a fake answer"
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens == 11 and message.usage.output_tokens == 3
    sent = served.upstream.requests[-1]
    assert sent["messages"][0] == {"role": "system", "content": "Answer briefly."}
    assert {k: sent.get(k) for k in ("stop", "max_completion_tokens", "user")} == {
        "stop": ["END"],
        "max_completion_tokens": 20,
        "user": "u-1",
    }, sent
    image = sent["messages"][1]["content"][1]
    assert image["type"] == "image_url" and image["image_url"]["url"].startswith("data:image/jpeg;base64,")
    assert base64.b64decode(image["image_url"]["url"].split(",", 1)[1]) == hopper_jpeg  # the bytes, not a placeholder

    with client(served).messages.stream(model="gw", max_tokens=20, messages=asked(hopper_jpeg)) as stream:  # type: ignore[arg-type]
        assert "".join(stream.text_stream) == "afakeanswer"  # the fake upstream's words, sent one a chunk
        assert stream.get_final_message().stop_reason == "end_turn"


def test_count_tokens_estimates_the_image(served: Served, hopper_jpeg: bytes) -> None:
    c = client(served)
    with_image = c.messages.count_tokens(model="tiny", messages=asked(hopper_jpeg))  # type: ignore[arg-type]
    text_only = c.messages.count_tokens(model="tiny", messages=[{"role": "user", "content": "Describe this image."}])
    with_system = c.messages.count_tokens(
        model="tiny", messages=[{"role": "user", "content": "Describe this image."}], system="Be brief."
    )
    assert with_system.input_tokens > text_only.input_tokens
    # grace_hopper.jpg is 512 x 600: Anthropic's documented cost is ceil(512 * 600 / 750) tokens
    assert with_image.input_tokens - text_only.input_tokens >= 409
    assert 0 < text_only.input_tokens < 30


def test_keys_x_api_key_and_bearer(served: Served) -> None:
    ask = {"model": "gw", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    assert served.post("/v1/messages", ask).status_code == 200  # Authorization: Bearer
    r = httpx.post(served.url + "/v1/messages", json=ask, headers={"x-api-key": API_KEY}, timeout=60)
    assert r.status_code == 200 and r.json()["content"][0]["text"] == "a fake answer"
    with pytest.raises(anthropic.AuthenticationError) as caught:
        client(served, key="sk-wrong").messages.create(
            model="gw", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
        )
    error = error_of(caught.value)
    assert error["type"] == "authentication_error"
    assert "not valid for this server" in error["message"]


# --- bad input: each one Anthropic's error shape, naming the part and what to do ---------------


def test_a_mislabelled_media_type(served: Served, hopper_jpeg: bytes) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        client(served).messages.create(model="tiny", max_tokens=5, messages=asked(hopper_jpeg, "image/png"))  # type: ignore[arg-type]
    error = error_of(caught.value)
    assert error["type"] == "invalid_request_error"
    assert error["message"].startswith("messages[0].content[1]: source.media_type is 'image/png'")
    assert "the image's bytes are image/jpeg; send media_type 'image/jpeg'" in error["message"]


def test_a_corrupt_image(served: Served) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        client(served).messages.create(model="gw", max_tokens=5, messages=asked(b"not an image at all" * 20))  # type: ignore[arg-type]
    error = error_of(caught.value)
    assert error["type"] == "invalid_request_error"
    assert error["message"].startswith("messages[0].content[1]: ")
    assert "is not an image vlmkit reads" in error["message"] and "Supported: JPEG, PNG" in error["message"]
    assert served.upstream.requests == [] or served.upstream.requests[-1]["messages"][-1]["content"] != "x"


def test_an_oversized_body(served: Served) -> None:
    big = b"\xff\xd8\xff" + bytes(3 * 1024 * 1024)
    with pytest.raises(anthropic.APIStatusError) as caught:
        client(served).messages.create(model="tiny", max_tokens=5, messages=asked(big))  # type: ignore[arg-type]
    assert caught.value.status_code == 413
    error = error_of(caught.value)
    assert error["type"] == "request_too_large"
    assert "larger than this server's limit of 3,145,728 bytes" in error["message"]
    assert "upload large images once through /v1/files" in error["message"]


def test_an_unknown_model(served: Served, hopper_jpeg: bytes) -> None:
    with pytest.raises(anthropic.NotFoundError) as caught:
        client(served).messages.create(model="claude-nope", max_tokens=5, messages=asked(hopper_jpeg))  # type: ignore[arg-type]
    error = error_of(caught.value)
    assert error["type"] == "not_found_error"
    assert "the model 'claude-nope' does not exist on this server; served: gw, tiny" in error["message"]


@pytest.mark.parametrize(
    ("body", "facts"),
    [
        ({"model": "tiny", "messages": [{"role": "user", "content": "hi"}]}, ["max_tokens is required"]),
        (
            {
                "model": "tiny",
                "max_tokens": 5,
                "messages": [{"role": "user", "content": "hi"}],
                "tools": [{"name": "f"}],
            },
            ["tools: tool use is not supported on /v1/messages yet", "use /v1/chat/completions"],
        ),
        (
            {"model": "tiny", "max_tokens": 5, "messages": [{"role": "system", "content": "hi"}]},
            ["messages[0].role: role must be 'user' or 'assistant'", "top-level 'system' field"],
        ),
        (
            {
                "model": "tiny",
                "max_tokens": 5,
                "messages": [
                    {"role": "user", "content": [{"type": "image", "source": {"type": "base64", "data": "AAAA"}}]}
                ],
            },
            ["messages[0].content[0].source.media_type: a base64 source needs 'media_type'"],
        ),
        (
            {
                "model": "tiny",
                "max_tokens": 5,
                "messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}],
            },
            ["messages[0].content[0]: content block type 'document' is not supported"],
        ),
        (
            {
                "model": "tiny",
                "max_tokens": 5,
                "messages": [
                    {"role": "user", "content": [{"type": "image", "source": {"type": "url", "url": "/etc/passwd"}}]}
                ],
            },
            ["messages[0].content[0]: ", "an http(s):// URL"],
        ),
    ],
)
def test_bad_requests_name_the_part(served: Served, body: dict[str, Any], facts: list[str]) -> None:
    r = served.post("/v1/messages", body)
    assert r.status_code == 400, r.text
    assert r.json()["type"] == "error" and r.json()["error"]["type"] == "invalid_request_error"
    for fact in facts:
        assert fact in r.json()["error"]["message"]


def test_an_unknown_route_and_bad_json_in_anthropic_shape(served: Served) -> None:
    r = httpx.post(served.url + "/v1/messages", content=b"{not json", headers={"x-api-key": API_KEY}, timeout=30)
    assert r.status_code == 400
    assert r.json()["error"]["type"] == "invalid_request_error" and "not valid JSON" in r.json()["error"]["message"]
    r = httpx.post(served.url + "/v1/messages/batches", content=json.dumps({}), headers={"x-api-key": API_KEY})
    assert r.status_code == 404
    assert r.json() == {
        "type": "error",
        "error": {"type": "not_found_error", "message": "no route POST /v1/messages/batches on this server"},
    }


def test_a_failing_upstream_is_a_502_in_anthropic_shape(served: Served) -> None:
    served.upstream.status, served.upstream.error_message = 500, "the upstream is down"
    try:
        for stream in (False, True):
            r = served.post(
                "/v1/messages",
                {"model": "gw", "max_tokens": 5, "stream": stream, "messages": [{"role": "user", "content": "hi"}]},
            )
            assert r.status_code == 502, r.text
            error = r.json()["error"]
            assert r.json()["type"] == "error" and error["type"] == "api_error"
            assert "the upstream is down" in error["message"]
    finally:
        served.upstream.status = 200
