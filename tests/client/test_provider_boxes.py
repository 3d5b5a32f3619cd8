"""``prediction.boxes`` over a provider: the answer's coordinates mapped through what was really sent.

The OpenAI stand-in of test_providers (127.0.0.1) answers with a box in the pixels of the image it
received; the prediction records how each image was rendered (OpenAI's 2048 px, or 512 px at low
detail), so the box comes back in the original photo's pixels.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import pytest
from PIL import Image

import vlmkit as vk
from tests.client import test_providers
from tests.client.test_providers import openai_server, sent_image
from vlmkit import grounding

__all__ = ["openai_server"]  # the fixture, imported for pytest


@pytest.mark.parametrize("detail", ["high", "low"])
def test_a_box_in_the_sent_image_comes_back_in_the_original(
    openai_server: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch, detail: str
) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (4000, 3000), "white").save(buf, format="JPEG")
    photo = vk.prepare_image(buf.getvalue())
    sent = (2048, 1536) if detail == "high" else (512, 384)
    # the right half of what the provider saw
    monkeypatch.setattr(test_providers, "REPLY", [f"[{sent[0] // 2}, 0, ", f"{sent[0]}, {sent[1]}]"])
    chat = vk.Chat()
    chat.add_user_message("Where is the right half?", images=[photo], detail=detail)  # type: ignore[arg-type]
    result = vk.llm("openai/gpt-4o").respond(chat)
    assert sent_image(openai_server[-1]).size == sent
    (seen,) = result.sent_images
    assert seen.image is photo and seen.transform.size == sent and seen.transform.original == (4000, 3000)
    assert grounding.parse(result.content, seen, "pixels") == [grounding.Box(2000, 0, 4000, 3000)]
    with pytest.raises(vk.errors.GroundingError, match="does not know how 'openai/gpt-4o' writes coordinates"):
        _ = result.boxes  # GPT-4o has no convention of its own: say which with grounding.parse


def test_a_config_detail_reaches_a_document_s_pages(openai_server: list[dict[str, Any]]) -> None:
    from tests.media import PageSpec, make_pdf

    pdf = make_pdf([PageSpec(text="One"), PageSpec(text="Two")])
    doc = vk.prepare_document(pdf, pages="2", dpi=150)  # one page of two: it goes as an image
    chat = vk.Chat()
    chat.add_user_message("Read it.", images=[doc])
    vk.llm("openai/gpt-4o").respond(chat, config={"detail": "low"})
    (part,) = [p for p in openai_server[-1]["messages"][-1]["content"] if p["type"] == "image_url"]
    assert part["image_url"]["detail"] == "low"
    page = Image.open(io.BytesIO(base64.b64decode(part["image_url"]["url"].partition(",")[2])))
    assert max(page.size) == 512  # OpenAI's low detail, applied to the page
