"""A PDF and a video to a local model: pages and frames go to the real engine as images, each after
its page number or time."""

from __future__ import annotations

from tests.media import PageSpec, make_pdf, make_video

from vlmkit.chat import Chat, TextPart
from vlmkit.engine import Engine
from vlmkit.images import LLAMA_CPP, prepare_document, prepare_video
from vlmkit.prediction import PredictionConfig


def test_pages_of_a_pdf_reach_the_local_model(engine: Engine) -> None:
    pdf = make_pdf([PageSpec(text="Invoice"), PageSpec(text="Terms"), PageSpec(text="Signature")])
    doc = prepare_document(pdf, pages="1,3", target=LLAMA_CPP.replace(max_long_edge=256))
    chat = Chat()
    chat.add_user_message("What does this document say?", images=[doc])
    result = engine.respond("tiny", chat, PredictionConfig(temperature=0, max_tokens=2))
    assert result.stats.images_encoded + result.stats.images_reused == 2
    sizes = [f"{page.width}x{page.height}" for page in doc.page_images]
    assert result.stats.image_sizes == sizes  # each page sent as it was drawn: no second resize
    assert all(255 <= max(page.width or 0, page.height or 0) <= 256 for page in doc.page_images)
    assert [s.image for s in result.sent_images] == doc.page_images


def test_frames_of_a_video_reach_the_local_model(engine: Engine) -> None:
    video = prepare_video(make_video(seconds=2.0), every=1.0, target=LLAMA_CPP)
    chat = Chat()
    chat.add_user_message("What moves?", images=[video])
    assert [p.text for p in chat.messages[0].flat_content if isinstance(p, TextPart)][1:] == [
        "Frame at 0:00.0:",
        "Frame at 0:01.0:",
    ]
    result = engine.respond("tiny", chat, PredictionConfig(temperature=0, max_tokens=2))
    assert result.stats.image_sizes == ["160x120", "160x120"]
    assert [s.image for s in result.sent_images] == video.frame_images
