"""Gemini (AI Studio) and Vertex AI: the exact wire request against the documented
``GenerateContentRequest`` (and google-genai's pydantic types, where installed); response parsing."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from tests.providers.conftest import Builder, Samples, data_url, image_message, size_of
from vlmkit.errors import BadRequestError

HELLO = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}]


def genai_check(body: dict[str, Any]) -> None:
    """google-genai's models forbid unknown fields: validate contents, system instruction and config."""
    from google.genai import types

    for content in body["contents"]:
        types.Content.model_validate_json(json.dumps(content))
    if "system_instruction" in body:
        types.Content.model_validate_json(json.dumps(body["system_instruction"]))
    if "generationConfig" in body:
        types.GenerationConfig.model_validate_json(json.dumps(body["generationConfig"]))


def image_part(body: dict[str, Any]) -> dict[str, Any]:
    (part,) = [p for p in body["contents"][0]["parts"] if "text" not in p]
    return part  # type: ignore[no-any-return]


def test_text_message_wire_request(wire: Builder) -> None:
    url, headers, body = wire("gemini/gemini-2.0-flash", HELLO, api_key="g-key", temperature=0.1, max_tokens=64)
    assert url == "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.0-flash:generateContent"
    assert headers == {"Content-Type": "application/json", "Accept": "application/json", "x-goog-api-key": "g-key"}
    assert body == {
        "contents": [{"role": "user", "parts": [{"text": "Hello"}]}],
        "system_instruction": {"parts": [{"text": "Be brief."}]},
        "generationConfig": {"temperature": 0.1, "maxOutputTokens": 64},
    }
    genai_check(body)
    url, _, _ = wire("gemini/gemini-2.0-flash", HELLO, api_key="g", stream=True)
    assert url.endswith("/models/gemini-2.0-flash:streamGenerateContent?alt=sse")


@pytest.mark.parametrize(
    ("kind", "mime", "sent_mime", "size"),
    [
        ("jpeg", "image/jpeg", "image/jpeg", None),
        ("png_alpha", "image/png", "image/png", None),
        ("webp", "image/webp", "image/webp", None),
        ("heic", "image/heic", "image/heic", None),  # Gemini reads HEIC: sent as it is
        ("photo_12mp", "image/jpeg", "image/jpeg", (3072, 2304)),
    ],
)
def test_images_go_as_inline_data(
    wire: Builder, samples: Samples, kind: str, mime: str, sent_mime: str, size: tuple[int, int] | None
) -> None:
    data = getattr(samples, kind)
    _, _, body = wire("gemini/gemini-2.0-flash", image_message(data_url(data, mime)), api_key="k")
    assert body["contents"][0]["parts"][0] == {"text": "What is in this image?"}
    inline = image_part(body)["inline_data"]
    assert set(inline) == {"mime_type", "data"} and inline["mime_type"] == sent_mime
    sent = base64.b64decode(inline["data"])
    if size is None:
        assert sent == data
    else:
        assert size_of(sent) == size
    genai_check(body)


def test_detail_maps_to_media_resolution(wire: Builder, samples: Samples) -> None:
    msg = image_message(data_url(samples.jpeg, "image/jpeg"), detail="low")
    _, _, body = wire("gemini/gemini-2.0-flash", msg, api_key="k")
    assert body["generationConfig"] == {"mediaResolution": "MEDIA_RESOLUTION_LOW"}
    msg = image_message(data_url(samples.jpeg, "image/jpeg"), detail="high")
    _, _, body = wire("gemini/gemini-2.0-flash", msg, api_key="k")
    assert body["generationConfig"] == {"mediaResolution": "MEDIA_RESOLUTION_HIGH"}
    genai_check(body)


def test_json_mode(wire: Builder) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    _, _, body = wire("gemini/gemini-2.0-flash", HELLO, api_key="k", response_format=fmt)
    assert body["generationConfig"] == {"responseMimeType": "application/json", "responseJsonSchema": schema}


def test_gs_uri_reaches_vertex_as_file_data_with_the_declared_type(wire: Builder) -> None:
    msg = image_message("gs://my-gs-image", format="image/jpeg")
    url, headers, body = wire("vertex_ai/gemini-1.0-pro-vision", msg, api_key="ya29.token", vertex_project="proj")
    assert url == (
        "https://us-central1-aiplatform.googleapis.com/v1/projects/proj/locations/us-central1"
        "/publishers/google/models/gemini-1.0-pro-vision:generateContent"
    )
    assert headers["Authorization"] == "Bearer ya29.token"
    assert image_part(body) == {"file_data": {"mime_type": "image/jpeg", "file_uri": "gs://my-gs-image"}}
    genai_check(body)


def test_vertex_global_location_and_inline_images(wire: Builder, samples: Samples) -> None:
    msg = image_message(data_url(samples.heic, "image/heic"))
    url, _, body = wire(
        "vertex_ai/gemini-2.5-flash", msg, api_key="t", vertex_project="p", vertex_location="global", stream=True
    )
    assert url.startswith("https://aiplatform.googleapis.com/v1/projects/p/locations/global/publishers/google/models/")
    assert url.endswith("gemini-2.5-flash:streamGenerateContent?alt=sse")
    assert image_part(body)["inline_data"]["mime_type"] == "image/heic"


def test_gs_uri_without_a_type_or_outside_vertex_is_a_bad_request(wire: Builder) -> None:
    with pytest.raises(BadRequestError) as err:
        wire("vertex_ai/gemini-2.0-flash", image_message("gs://bucket/photo"), api_key="t", vertex_project="p")
    assert err.value.message.startswith("messages[0].content[1]: vertex_ai cannot read 'gs://bucket/photo': a gs:// ")
    with pytest.raises(BadRequestError) as err:
        wire("gemini/gemini-2.0-flash", image_message("gs://bucket/x.jpg"), api_key="k")
    assert err.value.message == (
        "messages[0].content[1]: gemini cannot read 'gs://bucket/x.jpg': "
        "Vertex AI reads gs:// URIs (use vertex_ai/<model>)"
    )


def test_parse_response_and_safety_block() -> None:
    from vlmkit.providers import gemini
    from vlmkit.providers.call import _start

    cfg, req, _ = _start("gemini/gemini-2.0-flash", HELLO, False, None, "k", None, None, {})
    data = {
        "candidates": [{"content": {"role": "model", "parts": [{"text": "A cat."}]}, "finishReason": "STOP"}],
        "usageMetadata": {"promptTokenCount": 270, "candidatesTokenCount": 3, "totalTokenCount": 273},
        "modelVersion": "gemini-2.0-flash",
        "responseId": "r1",
    }
    response = gemini.parse_response(data, req, cfg)
    assert response.content == "A cat." and response.choices[0].finish_reason == "stop"
    assert response.usage.total_tokens == 273 and response.id == "r1"
    blocked = gemini.parse_response({"promptFeedback": {"blockReason": "SAFETY"}}, req, cfg)
    assert blocked.content == "" and blocked.choices[0].finish_reason == "content_filter"
