"""Images prepared once per budget: pixels handed to mtmd as decoded, caps met once, the cache bounded.

The family tests (test_families.py) check that prepared images change no answer on any model shape;
these check what a prepared image is and how long it is kept.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from vlmkit.chat import Chat, ImagePart
from vlmkit.engine import LoadOptions, predict
from vlmkit.engine.images import Budget, render_input
from vlmkit.engine.loaded import LoadedModel
from vlmkit.engine.synthetic_families import write_family
from vlmkit.images import ImageHandle, prepare_image
from vlmkit.images.render import RgbPixels
from vlmkit.prediction import PredictionConfig

GREEDY = PredictionConfig(temperature=0, max_tokens=4)
RETINA = Path(__file__).resolve().parents[2] / "examples" / "images" / "retina.jpg"


def load(files: tuple[Path, Path]) -> LoadedModel:
    return LoadedModel.load("m", *files, LoadOptions(cpu_threads=1), ttl=None, max_queue=1)


@pytest.fixture()
def tiny(tiny_model: tuple[Path, Path]) -> Iterator[LoadedModel]:
    lm = load(tiny_model)
    yield lm
    lm.close()


def test_mtmd_gets_a_files_bytes_when_they_do_and_the_decoded_pixels_otherwise(
    hopper: ImageHandle, webp_cat: ImageHandle, chelsea: Image.Image
) -> None:
    as_is = render_input(ImagePart(hopper), 1024)  # a JPEG stb_image reads, within the bound
    assert as_is.data == hopper.data and as_is.key == f"{hopper.identifier}:512x600"

    webp = render_input(ImagePart(webp_cat), 1024)  # a format stb_image does not read: decoded by vlmkit
    assert webp.data == RgbPixels(chelsea.tobytes(), 451, 300)  # lossless: the very pixels, nothing re-encoded

    retina = render_input(ImagePart(prepare_image(RETINA)), 512)  # scaled down by vlmkit
    assert isinstance(retina.data, RgbPixels) and (retina.width, retina.height) == (512, 512)
    assert len(retina.data.data) == 512 * 512 * 3


def test_the_same_picture_twice_is_prepared_once(tiny: LoadedModel, hopper: ImageHandle) -> None:
    chat = Chat()
    chat.add_user_message("Compare these.", images=[hopper, hopper])
    result = predict.run(tiny, chat, GREEDY)
    assert (result.stats.images_preprocessed, result.stats.images_encoded) == (1, 1)
    assert result.stats.images_reused == 1 and len(tiny.prepared) == 1


def test_prepared_images_are_bounded_but_never_dropped_under_a_prompt(
    tiny: LoadedModel, image_chat: Any, hopper: ImageHandle, rocket: ImageHandle, webp_cat: ImageHandle
) -> None:
    tiny.prepared.max_bytes = 0  # keep nothing a turn does not use
    both = Chat()
    both.add_user_message("Compare these.", images=[hopper, rocket])
    first = predict.run(tiny, both, GREEDY)
    assert first.stats.images_preprocessed == 2 and len(tiny.prepared) == 2  # the turn's own images stay

    assert predict.run(tiny, image_chat(webp_cat), GREEDY).stats.images_preprocessed == 1
    assert len(tiny.prepared) == 1  # the first turn's two are freed

    again = predict.run(tiny, both, GREEDY)  # prepared again, and answered as before
    assert again.stats.images_preprocessed == 2
    assert again.content == first.content


@pytest.fixture(scope="module")
def qwen2_vl(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_family("qwen2-vl", tmp_path_factory.mktemp("qwen2-vl"))


def test_a_token_cap_is_met_once_and_kept(qwen2_vl: tuple[Path, Path], image_chat: Any, hopper: ImageHandle) -> None:
    lm = load(qwen2_vl)
    try:
        predict.run(lm, image_chat(hopper), PredictionConfig(temperature=0, max_tokens=1, detail="high"))
        full = lm.prepared.get(hopper.identifier, Budget(None, None))
        chat = image_chat(hopper)
        capped = PredictionConfig(temperature=0, max_tokens=4, detail=64)
        first = predict.run(lm, chat, capped)
        shrunk = lm.prepared.get(hopper.identifier, Budget(None, 64))
        assert full is not None and shrunk is not None
        assert full.n_tokens > 64 >= shrunk.n_tokens > 0 and first.stats.images_preprocessed == 1
        chat.add_assistant_response(first)
        chat.add_user_message("And?")
        follow_up = predict.run(lm, chat, capped)
        assert follow_up.stats.images_preprocessed == 0 and follow_up.stats.images_encoded == 0
    finally:
        lm.close()


def test_where_a_projector_places_images_by_position_mtmd_tokenizes_the_whole_prompt(
    tiny_model: tuple[Path, Path], hopper: ImageHandle, webp_cat: ImageHandle
) -> None:
    assembled, whole = load(tiny_model), load(tiny_model)
    whole.prepared.whole_prompt = True  # as for HunyuanVL and DeepSeek-V4, which no test model has
    try:
        chat = Chat()
        chat.add_user_message("Compare these.", images=[hopper, webp_cat])
        a, w = predict.run(assembled, chat, GREEDY), predict.run(whole, chat, GREEDY)
        assert w.content == a.content and w.stats.prompt_tokens == a.stats.prompt_tokens
        assert (a.stats.images_preprocessed, w.stats.images_preprocessed) == (2, 4)  # alone, then in the prompt
        chat.add_assistant_response(w)
        chat.add_user_message("And?")
        assert predict.run(whole, chat, GREEDY).stats.images_preprocessed == 2  # each turn, in the prompt
    finally:
        assembled.close()
        whole.close()
