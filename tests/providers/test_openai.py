"""OpenAI Chat Completions and the OpenAI-compatible family: the exact wire request, checked against
OpenAI's documented format and the ``openai`` SDK's request TypedDicts, and response parsing."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from openai.types.chat import completion_create_params as openai_types

from tests.conftest import photo_path
from tests.providers.conftest import Builder, Samples, data_url, image_message, size_of
from tests.providers.sdk_types import check

HELLO = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}]


def sdk_check(body: dict[str, Any]) -> None:
    check(body, openai_types.CompletionCreateParamsNonStreaming)


def image_of(body: dict[str, Any], message: int = 0) -> dict[str, Any]:
    parts = body["messages"][message]["content"]
    (image,) = [p for p in parts if p["type"] == "image_url"]
    return image["image_url"]  # type: ignore[no-any-return]


def decoded(url: str) -> tuple[str, bytes]:
    header, _, payload = url.partition(",")
    assert header.startswith("data:") and header.endswith(";base64")
    return header[5:-7], base64.b64decode(payload, validate=True)


def test_text_message_wire_request(wire: Builder) -> None:
    url, headers, body = wire("openai/gpt-4o", HELLO, api_key="sk-test", temperature=0.2, max_tokens=50, stop="END")
    assert url == "https://api.openai.com/v1/chat/completions"
    assert headers == {
        "Content-Type": "application/json",
        "Accept": "application/json",
        "Authorization": "Bearer sk-test",
    }
    assert body == {
        "model": "gpt-4o",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}],
        "temperature": 0.2,
        "max_completion_tokens": 50,
        "stop": ["END"],
    }
    sdk_check(body)


def test_streaming_asks_for_usage(wire: Builder) -> None:
    _, _, body = wire("openai/gpt-4o", HELLO, api_key="k", stream=True)
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    check(body, openai_types.CompletionCreateParamsStreaming)


def test_jpeg_passes_through_untouched(wire: Builder, samples: Samples) -> None:
    _, _, body = wire("openai/gpt-4o", image_message(data_url(samples.jpeg, "image/jpeg")), api_key="k")
    assert image_of(body) == {"url": data_url(samples.jpeg, "image/jpeg")}
    assert body["messages"][0]["content"][0] == {"type": "text", "text": "What is in this image?"}
    sdk_check(body)


def test_png_with_alpha_stays_png(wire: Builder, samples: Samples) -> None:
    _, _, body = wire("openai/gpt-4o", image_message(data_url(samples.png_alpha, "image/png")), api_key="k")
    assert image_of(body)["url"] == data_url(samples.png_alpha, "image/png")


def test_webp_is_accepted_as_is(wire: Builder, samples: Samples) -> None:
    _, _, body = wire("openai/gpt-4o", image_message(data_url(samples.webp, "image/webp")), api_key="k")
    assert image_of(body)["url"] == data_url(samples.webp, "image/webp")


def test_heic_is_converted_to_jpeg(wire: Builder, samples: Samples) -> None:
    _, _, body = wire("openai/gpt-4o", image_message(data_url(samples.heic, "image/heic")), api_key="k")
    mime, data = decoded(image_of(body)["url"])
    assert mime == "image/jpeg" and data[:3] == b"\xff\xd8\xff"
    assert size_of(data) == (320, 240)
    sdk_check(body)


def test_12mp_photo_is_downscaled_to_what_openai_looks_at(wire: Builder, samples: Samples) -> None:
    _, _, body = wire("openai/gpt-4o", image_message(data_url(samples.photo_12mp, "image/jpeg")), api_key="k")
    mime, data = decoded(image_of(body)["url"])
    assert mime == "image/jpeg" and size_of(data) == (2048, 1536)


def test_low_detail_is_kept_and_the_image_sized_for_it(wire: Builder, samples: Samples) -> None:
    msg = image_message(data_url(samples.photo_12mp, "image/jpeg"), detail="low")
    _, _, body = wire("openai/gpt-4o", msg, api_key="k")
    assert image_of(body)["detail"] == "low"
    assert size_of(decoded(image_of(body)["url"])[1]) == (512, 384)
    sdk_check(body)


def test_http_url_is_passed_through_for_openai_to_fetch(wire: Builder) -> None:
    msg = image_message("https://example.com/cat.png", detail="high", format="image/png")
    _, _, body = wire("openai/gpt-4o", msg, api_key="k")
    assert image_of(body) == {"url": "https://example.com/cat.png", "detail": "high"}  # 'format' is vlmkit's
    sdk_check(body)


def test_local_path_and_bare_base64_are_read(wire: Builder, samples: Samples) -> None:
    path = str(photo_path("grace_hopper.jpg"))
    bare = base64.b64encode(samples.jpeg).decode()
    for source in (path, bare):
        _, _, body = wire("openai/gpt-4o", image_message(source), api_key="k")
        assert image_of(body)["url"] == data_url(samples.jpeg, "image/jpeg")


@pytest.mark.parametrize(
    ("model", "url", "auth"),
    [
        ("xai/grok-2-vision-latest", "https://api.x.ai/v1/chat/completions", ("Authorization", "Bearer k")),
        ("mistral/pixtral-large-latest", "https://api.mistral.ai/v1/chat/completions", ("Authorization", "Bearer k")),
        ("groq/llama-3.2-11b-vision-preview", "https://api.groq.com/openai/v1/chat/completions", None),
        ("openrouter/openai/gpt-4o", "https://openrouter.ai/api/v1/chat/completions", None),
        ("deepseek/deepseek-chat", "https://api.deepseek.com/v1/chat/completions", None),
        ("together_ai/meta-llama/Llama-Vision-Free", "https://api.together.xyz/v1/chat/completions", None),
        ("lm_studio/qwen2-vl-2b-instruct", "http://localhost:1234/v1/chat/completions", None),
        ("llama_cpp/any", "http://localhost:8080/v1/chat/completions", None),
        ("hosted_vllm/Qwen/Qwen2-VL-2B", "http://localhost:8000/v1/chat/completions", None),
    ],
)
def test_compatible_family_addresses(wire: Builder, model: str, url: str, auth: tuple[str, str] | None) -> None:
    got_url, headers, body = wire(model, HELLO, api_key="k", max_tokens=5)
    assert got_url == url
    assert headers["Authorization"] == "Bearer k"
    assert body["model"] == model.split("/", 1)[1]
    assert body["max_tokens"] == 5  # only OpenAI itself gets max_completion_tokens
    sdk_check(body)


def test_azure_deployment_url_and_api_key_header(wire: Builder) -> None:
    url, headers, body = wire(
        "azure/my-gpt4o", HELLO, api_key="az", api_base="https://res.openai.azure.com", api_version="2024-10-21"
    )
    assert url == "https://res.openai.azure.com/openai/deployments/my-gpt4o/chat/completions?api-version=2024-10-21"
    assert headers["api-key"] == "az" and "Authorization" not in headers
    sdk_check(body)


def test_xai_gets_jpeg_or_png_only(wire: Builder, samples: Samples) -> None:
    _, _, body = wire("xai/grok-2-vision-latest", image_message(data_url(samples.webp, "image/webp")), api_key="k")
    mime, _ = decoded(image_of(body)["url"])
    assert mime == "image/jpeg"
    _, _, body = wire("xai/grok-2-vision-latest", image_message(data_url(samples.png_alpha, "image/png")), api_key="k")
    assert decoded(image_of(body)["url"])[0] == "image/png"


def test_llama_cpp_server_gets_what_stb_image_reads(wire: Builder, samples: Samples) -> None:
    _, _, body = wire("llama_cpp/m", image_message(data_url(samples.webp, "image/webp")))
    assert decoded(image_of(body)["url"])[0] in ("image/jpeg", "image/png")
    assert "detail" not in image_of(body)


def test_env_keys_and_base_override(wire: Builder, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "from-env")
    url, headers, _ = wire("openai/gpt-4o", HELLO)
    assert headers["Authorization"] == "Bearer from-env"
    url, _, _ = wire("openai/gpt-4o", HELLO, api_base="http://127.0.0.1:9/v1/")
    assert url == "http://127.0.0.1:9/v1/chat/completions"


def test_parse_response() -> None:
    from vlmkit.providers import openai
    from vlmkit.providers.call import _start

    cfg, req, _ = _start("openai/gpt-4o", HELLO, False, None, "k", None, None, {})
    data = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "gpt-4o-2024-08-06",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi!"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11},
    }
    response = openai.parse_response(data, req, cfg)
    assert response.choices[0].message.content == "Hi!"
    assert response["choices"][0]["message"]["content"] == "Hi!"
    assert (response.id, response.model, response.created) == ("chatcmpl-1", "gpt-4o-2024-08-06", 1700000000)
    assert response.usage.to_dict() == {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}
    assert response.to_dict()["object"] == "chat.completion"
    # the SDK's own response model reads our JSON form
    from openai.types.chat import ChatCompletion

    ChatCompletion.model_validate({k: v for k, v in response.to_dict().items() if k != "provider"})
