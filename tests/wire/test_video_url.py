"""vLLM's ``video_url`` part, read by the one OpenAI translation and resolved into a video's frames."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from tests.media import make_video
from vlmkit.chat import Chat, ImageRef, MediaPart
from vlmkit.errors import InvalidMessageError
from vlmkit.images.resolve import ResolveOptions, resolve_images
from vlmkit.images.video import Video
from vlmkit.wire.openai_chat import messages_from_chat, to_chat


def user(*parts: Any) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [{"type": "text", "text": "When?"}, *parts]}]


@pytest.mark.parametrize(
    ("value", "url", "file_id"),
    [
        ("https://example.com/clip.mp4", "https://example.com/clip.mp4", False),
        ({"url": "data:video/mp4;base64,AAAA"}, "data:video/mp4;base64,AAAA", False),
        ({"file_id": "file-0123456789abcdef01234567"}, "file-0123456789abcdef01234567", True),
    ],
)
def test_a_video_url_is_a_video_reference_and_is_written_back_as_one(value: Any, url: str, file_id: bool) -> None:
    chat = to_chat(user({"type": "video_url", "video_url": value}))
    assert chat.image_refs == [ImageRef(url, None, None, "messages[0].content[1]", file_id=file_id, video=True)]
    written = messages_from_chat(chat)[0]["content"][1]
    assert written == {"type": "video_url", "video_url": {"file_id" if file_id else "url": url}}
    assert Chat.from_dict(chat.to_dict()).image_refs == chat.image_refs


@pytest.mark.parametrize(
    ("part", "message"),
    [
        ({"type": "video_url", "video_url": {}}, "a video_url part needs a non-empty string 'url'"),
        ({"type": "video_url", "video_url": 3}, "a video_url part needs 'video_url': a URL string"),
        ({"type": "video_url"}, "a video_url part needs 'video_url': a URL string"),
    ],
)  # fmt: skip
def test_a_bad_video_url_part_says_what_and_where(part: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidMessageError) as caught:
        to_chat(user(part))
    assert caught.value.message.startswith("messages[0].content[1]: " + message)
    assert caught.value.location == "messages[0].content[1]"


def test_a_video_in_an_assistant_message_is_refused() -> None:
    part = {"type": "video_url", "video_url": {"url": "https://example.com/clip.mp4"}}
    with pytest.raises(InvalidMessageError) as caught:
        to_chat([{"role": "assistant", "content": [part]}])
    assert "images can only be sent in user and tool messages" in caught.value.message


def test_a_video_reference_resolves_to_frames_for_the_target() -> None:
    url = "data:video/mp4;base64," + base64.b64encode(make_video(seconds=2.0)).decode()
    chat = to_chat(user({"type": "video_url", "video_url": {"url": url}}))
    read = resolve_images(chat.image_refs, ResolveOptions(video_frames=4))
    video = next(iter(read.values()))
    assert isinstance(video, Video) and [f.time for f in video.frames] == [0.0, 0.5, 1.0, 1.5]
    part = chat.with_images(read).messages[0].content[1]
    assert isinstance(part, MediaPart) and part.media is video
    texts = [p.text for p in chat.with_images(read).messages[0].flat_content if hasattr(p, "text")]
    assert texts[1:] == ["Frame at 0:00.0:", "Frame at 0:00.5:", "Frame at 0:01.0:", "Frame at 0:01.5:"]
