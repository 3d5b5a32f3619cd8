"""LiteLLM as a client, with the server as an OpenAI-compatible base: images, streaming, its own errors."""

from __future__ import annotations

from typing import Any

import litellm
import pytest

from tests.server.conftest import API_KEY, Running, data_url, image_message


def call(server: Running, model: str, messages: Any, *, key: str = API_KEY, **kwargs: Any) -> Any:
    return litellm.completion(
        model=f"openai/{model}", api_base=server.base, api_key=key, messages=messages, num_retries=0, **kwargs
    )


def test_image_as_data_url(server: Running, hopper_jpeg: bytes) -> None:
    r = call(server, "tiny", image_message(data_url(hopper_jpeg)), max_tokens=4, temperature=0)
    assert isinstance(r.choices[0].message.content, str)
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 4
    assert r.usage.prompt_tokens > 10
    assert server.results[-1].content == r.choices[0].message.content


def test_image_as_uploaded_file_id_and_stream(server: Running, hopper_jpeg: bytes) -> None:
    import openai

    uploaded = openai.OpenAI(base_url=server.base, api_key=API_KEY).files.create(
        file=("h.jpg", hopper_jpeg), purpose="vision"
    )
    stream = call(
        server,
        "tiny",
        image_message({"type": "image_url", "image_url": {"url": uploaded.id}}),
        max_tokens=4,
        temperature=0,  # greedy: sampling may meet the random model's end-of-sequence token
        stream=True,
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == server.results[-1].content
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["length"]


def test_gateway_through_litellm(server: Running, ups: Any) -> None:
    r = call(server, "gw", [{"role": "user", "content": "hi"}])
    assert r.choices[0].message.content == "a fake answer"
    assert ups["a"].requests[-1]["messages"] == [{"role": "user", "content": "hi"}]


def test_errors_are_litellm_exceptions(server: Running, hopper_jpeg: bytes) -> None:
    with pytest.raises(litellm.AuthenticationError) as auth:
        call(server, "tiny", [{"role": "user", "content": "hi"}], key="sk-wrong")
    assert "the API key is not valid for this server" in str(auth.value)
    with pytest.raises(litellm.NotFoundError) as missing:
        call(server, "nope", [{"role": "user", "content": "hi"}])
    assert "the model 'nope' does not exist on this server" in str(missing.value)
    with pytest.raises(litellm.BadRequestError) as bad:
        call(server, "tiny", image_message(data_url(b"\x89PNG\r\n\x1a\n-truncated", "image/png")))
    assert "messages[0].content[1]: " in str(bad.value)
