"""Videos and animations as a source: frames sampled at the right times, and every limit a clear error."""

from __future__ import annotations

import io

import pytest
from PIL import Image

import vlmkit as vk
from tests.media import frame_number, make_video
from vlmkit.chat import ImagePart, MediaPart, TextPart
from vlmkit.errors import BadRequestError, InvalidVideoError, VideoError, VideoTooLargeError
from vlmkit.images import ANTHROPIC, prepare_video
from vlmkit.images.tokens import anthropic_tokens
from vlmkit.images.video import timestamp


@pytest.fixture(scope="module")
def mp4() -> bytes:
    return make_video(seconds=3.0, fps=10)  # frame i shows at i / 10 s, and carries its number


def test_one_frame_every_s_seconds_is_the_frame_on_screen_then(mp4: bytes) -> None:
    video = prepare_video(mp4, "clip.mp4", every=0.25)
    assert (video.mime_type, video.width, video.height, video.duration) == ("video/mp4", 160, 120, 3.0)
    assert [f.time for f in video.frames] == [i * 0.25 for i in range(12)]
    # the frame that starts at or before each time (0.25 s: frame 2, shown from 0.2 s to 0.3 s)
    assert [frame_number(f.image.data) for f in video.frames] == [int(i * 2.5) for i in range(12)]
    assert video.frames[1].image.name == "clip-0.25s.jpg" and video.frames[1].image.mime_type == "image/jpeg"


def test_n_frames_spread_evenly_with_their_times_in_the_chat(mp4: bytes) -> None:
    video = prepare_video(mp4, frames=4)
    assert [f.time for f in video.frames] == [0.0, 0.75, 1.5, 2.25]
    assert [frame_number(f.image.data) for f in video.frames] == [0, 7, 15, 22]
    chat = vk.Chat()
    chat.add_user_message("When does the block cross the middle?", images=[video])
    assert chat.messages[0].content[1] == MediaPart(video)
    parts = chat.messages[0].flat_content  # what a model that reads only images gets
    assert [type(p) for p in parts] == [TextPart] + [TextPart, ImagePart] * 4
    assert [p.text for p in parts[1::2] if isinstance(p, TextPart)] == [
        "Frame at 0:00.0:",
        "Frame at 0:00.8:",
        "Frame at 0:01.5:",
        "Frame at 0:02.2:",
    ]
    assert chat.images == video.frame_images
    assert [timestamp(s) for s in (0, 59.96, 75.25, 3725)] == ["0:00.0", "1:00.0", "1:15.2", "1:02:05.0"]


def test_frames_are_sized_for_the_target(mp4: bytes) -> None:
    big = make_video(seconds=0.5, fps=10, size=(1920, 1080))
    video = prepare_video(big, frames=2, target=ANTHROPIC)
    assert {(f.image.width, f.image.height) for f in video.frames} == {ANTHROPIC.target_size(1920, 1080)}
    assert not video.frames[0].image.render(ANTHROPIC).changed


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "PNG"])
def test_animations_use_their_frame_durations(fmt: str) -> None:
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 255, 255)]
    durations = [100, 200, 300, 100, 300]  # frames start at 0, 0.1, 0.3, 0.6, 0.7 s; 1 s in all
    frames = [Image.new("RGB", (64, 48), c) for c in colours]
    buf = io.BytesIO()
    params = {"lossless": True} if fmt == "WEBP" else {}
    frames[0].save(buf, format=fmt, save_all=True, append_images=frames[1:], duration=durations, loop=0, **params)
    video = prepare_video(buf.getvalue(), every=0.25)
    assert video.mime_type == f"image/{fmt.lower()}" and video.duration == pytest.approx(1.0)
    seen = [Image.open(io.BytesIO(f.image.data)).convert("RGB").getpixel((32, 24)) for f in video.frames]
    expected = [colours[0], colours[1], colours[2], colours[4]]  # at 0, 0.25, 0.5, 0.75 s
    assert all(max(abs(a - b) for a, b in zip(s, e, strict=True)) < 8 for s, e in zip(seen, expected, strict=True))


def test_limits_name_themselves_and_the_way_under(mp4: bytes) -> None:
    with pytest.raises(VideoTooLargeError) as caught:
        prepare_video(mp4, "clip.mp4", every=0.05)
    message = str(caught.value)
    assert "60 frames of 'clip.mp4' (3.0 s), over max_frames=32" in message
    assert "frames=32, or every=0.1" in message and "raise max_frames" in message
    assert isinstance(caught.value, BadRequestError) and caught.value.status_code == 400

    each = anthropic_tokens(160, 120)
    with pytest.raises(VideoTooLargeError) as caught:
        prepare_video(mp4, frames=10, target=ANTHROPIC, max_tokens=100)
    assert f"cost about {10 * each} tokens ({each} each), over max_tokens=100" in str(caught.value)
    assert f"frames={100 // each}" in str(caught.value)
    budgeted = prepare_video(mp4, target=ANTHROPIC, max_tokens=100)  # as many frames as the budget allows
    assert len(budgeted.frames) == 100 // each
    with pytest.raises(VideoTooLargeError, match=r"one frame of .* over max_tokens=10; raise max_tokens"):
        prepare_video(mp4, target=ANTHROPIC, max_tokens=10)
    with pytest.raises(VideoError, match="pass target= the policy of one of anthropic, gemini, openai"):
        prepare_video(mp4, max_tokens=1000)
    with pytest.raises(VideoTooLargeError, match=r"over max_bytes=1,000; cut the video shorter"):
        prepare_video(mp4, max_bytes=1000)


def test_bad_settings_and_files(mp4: bytes, hopper_bytes: bytes) -> None:
    with pytest.raises(VideoError, match="not both"):
        prepare_video(mp4, frames=2, every=1.0)
    with pytest.raises(VideoError, match="frames must be a positive number of frames, not 0"):
        prepare_video(mp4, frames=0)
    with pytest.raises(VideoError, match="every must be a positive number of seconds"):
        prepare_video(mp4, every=-1)
    with pytest.raises(InvalidVideoError, match=r"is a still image \(image/jpeg\).*use prepare_image"):
        prepare_video(hopper_bytes, "hopper.jpg")
    with pytest.raises(InvalidVideoError, match="neither an image nor a video FFmpeg reads"):
        prepare_video(b"\x00\x01 not a video at all" * 10, "x.bin")
