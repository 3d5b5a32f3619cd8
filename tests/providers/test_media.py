"""A PDF or a video in a chat: the file itself to the providers that read it, within their limits;
pages or frames otherwise.

Each native body is checked against the provider's official SDK types, as the image bodies are.
"""

from __future__ import annotations

import base64
import copy
import io
from typing import Any

import pytest
from anthropic.types import message_create_params as anthropic_types
from PIL import Image

import vlmkit as vk
from tests.media import PageSpec, make_pdf, make_video
from tests.providers.conftest import Builder
from tests.providers.sdk_types import check
from tests.providers.test_bedrock import validate as bedrock_validate
from tests.providers.test_gemini import genai_check
from tests.providers.test_openai import sdk_check as openai_check


@pytest.fixture(scope="module")
def pdf() -> bytes:
    return make_pdf([PageSpec(text="Invoice 42"), PageSpec(text="Total: 12 EUR"), PageSpec(text="Thanks")])


def chat_with(media: vk.Document | vk.Video) -> vk.Chat:
    chat = vk.Chat()
    chat.add_user_message("What is the total?", images=[media])
    return chat


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_anthropic_gets_the_pdf_itself(wire: Builder, pdf: bytes) -> None:
    doc = vk.prepare_document(pdf, "invoice.pdf", dpi=36)
    _, _, body = wire("anthropic/claude-sonnet-4-5", chat_with(doc), api_key="k")
    assert body["messages"][0]["content"] == [
        {"type": "text", "text": "What is the total?"},
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": b64(pdf)}},
    ]
    check(body, anthropic_types.MessageCreateParamsNonStreaming)


def test_over_the_page_limit_or_a_page_selection_goes_as_pages(wire: Builder, pdf: bytes) -> None:
    long = make_pdf([PageSpec(text=f"p{i}") for i in range(101)])  # Anthropic reads at most 100 pages of a PDF
    over = vk.prepare_document(long, "long.pdf", dpi=4, max_pages=101)
    _, _, body = wire("anthropic/claude-sonnet-4-5", chat_with(over), api_key="k")
    blocks = body["messages"][0]["content"]
    assert [b["type"] for b in blocks] == ["text"] + ["text", "image"] * 101
    assert [blocks[1]["text"], blocks[3]["text"], blocks[-2]["text"]] == ["Page 1:", "Page 2:", "Page 101:"]
    assert blocks[2]["source"]["data"] == b64(over.pages[0].image.data)
    check(body, anthropic_types.MessageCreateParamsNonStreaming)

    # two pages of three: the file would show the model the third too, so the two go as images
    some = vk.prepare_document(pdf, "invoice.pdf", pages="1-2", dpi=36)
    _, _, body = wire("anthropic/claude-sonnet-4-5", chat_with(some), api_key="k")
    assert [b["type"] for b in body["messages"][0]["content"]] == ["text", "text", "image", "text", "image"]


def test_gemini_openai_and_bedrock_get_the_pdf_too(wire: Builder, pdf: bytes) -> None:
    doc = vk.prepare_document(pdf, "invoice (final).pdf", dpi=36)
    _, _, body = wire("gemini/gemini-2.5-flash", chat_with(doc), api_key="g")
    assert body["contents"][0]["parts"][1] == {"inline_data": {"mime_type": "application/pdf", "data": b64(pdf)}}
    genai_check(body)

    _, _, body = wire("openai/gpt-4o", chat_with(doc), api_key="sk")
    assert body["messages"][0]["content"][1] == {
        "type": "file",
        "file": {"filename": "invoice (final).pdf", "file_data": "data:application/pdf;base64," + b64(pdf)},
    }
    openai_check(body)

    _, _, body = wire("bedrock/anthropic.claude-3-5-sonnet-20241022-v2:0", chat_with(doc), api_key="bedrock-key")
    block = body["messages"][0]["content"][1]["document"]
    assert block == {"format": "pdf", "name": "invoice (final)", "source": {"bytes": b64(pdf)}}
    decoded = copy.deepcopy(body)
    decoded["messages"][0]["content"][1]["document"]["source"]["bytes"] = pdf
    bedrock_validate(decoded)


@pytest.mark.parametrize("model", ["xai/grok-2-vision-latest", "ollama/llava"])
def test_providers_that_read_no_pdf_get_the_pages(wire: Builder, pdf: bytes, model: str) -> None:
    doc = vk.prepare_document(pdf, "invoice.pdf", dpi=36)
    _, _, body = wire(model, chat_with(doc), api_key="k", api_base="http://127.0.0.1:9")
    message: dict[str, Any] = body["messages"][0]
    if model.startswith("ollama/"):  # Ollama: the text, then the images
        assert message["content"] == "What is the total?Page 1:Page 2:Page 3:" and len(message["images"]) == 3
    else:
        kinds = [p["type"] for p in message["content"]]
        assert kinds == ["text"] + ["text", "image_url"] * 3
        openai_check(body)


def test_gemini_gets_a_video_itself_and_anthropic_its_frames(wire: Builder) -> None:
    mp4 = make_video(seconds=2.0)
    video = vk.prepare_video(mp4, "clip.mp4", every=1.0)
    _, _, body = wire("gemini/gemini-2.5-flash", chat_with(video), api_key="g")
    assert body["contents"][0]["parts"] == [
        {"text": "What is the total?"},
        {"inline_data": {"mime_type": "video/mp4", "data": b64(mp4)}},
    ]
    genai_check(body)
    _, _, body = wire("anthropic/claude-sonnet-4-5", chat_with(video), api_key="k")
    blocks = body["messages"][0]["content"]
    assert [b["type"] for b in blocks] == ["text", "text", "image", "text", "image"]
    assert [blocks[1]["text"], blocks[3]["text"]] == ["Frame at 0:00.0:", "Frame at 0:01.0:"]
    check(body, anthropic_types.MessageCreateParamsNonStreaming)
    # an animation is no video to Gemini: its frames go
    frames = [Image.new("RGB", (32, 32), c) for c in ("red", "blue")]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=500)
    gif = vk.prepare_video(buf.getvalue(), frames=2)
    _, _, body = wire("gemini/gemini-2.5-flash", chat_with(gif), api_key="g")
    kinds = [next(iter(p)) for p in body["contents"][0]["parts"]]
    assert kinds == ["text", "text", "inline_data", "text", "inline_data"]
    assert body["contents"][0]["parts"][2]["inline_data"]["mime_type"] == "image/jpeg"
