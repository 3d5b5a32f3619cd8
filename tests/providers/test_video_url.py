"""vLLM's ``video_url`` part in OpenAI-format messages to ``completion()``: read through
``prepare_video`` (8 frames, sized for the provider), then sent as every video is: the file itself
to Gemini, the frames, each after its time, to the others. Bodies are checked against the official
SDK types."""

from __future__ import annotations

import base64
from typing import Any

from tests.media import make_video
from tests.providers.conftest import Builder
from tests.providers.test_gemini import genai_check
from tests.providers.test_openai import sdk_check as openai_check


def messages(url: str) -> list[dict[str, Any]]:
    return [
        {
            "role": "user",
            "content": [{"type": "text", "text": "When?"}, {"type": "video_url", "video_url": {"url": url}}],
        }
    ]


def test_a_video_url_goes_to_gemini_as_the_file_and_to_openai_as_timed_frames(wire: Builder) -> None:
    mp4 = make_video(seconds=2.0)
    url = "data:video/mp4;base64," + base64.b64encode(mp4).decode()
    _, _, body = wire("gemini/gemini-2.5-flash", messages(url), api_key="g")
    assert body["contents"][0]["parts"][1] == {
        "inline_data": {"mime_type": "video/mp4", "data": base64.b64encode(mp4).decode()}
    }
    genai_check(body)
    _, _, body = wire("openai/gpt-4o", messages(url), api_key="k")
    parts = body["messages"][0]["content"]
    texts = [p["text"] for p in parts if p["type"] == "text"]
    times = ["0:00.0", "0:00.2", "0:00.5", "0:00.8", "0:01.0", "0:01.2", "0:01.5", "0:01.8"]  # every 0.25 s
    assert texts == ["When?", *(f"Frame at {t}:" for t in times)]
    assert [p["type"] for p in parts[1:]] == ["text", "image_url"] * 8
    openai_check(body)
