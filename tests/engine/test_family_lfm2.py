"""LFM2-VL's own shape beyond the family tests (test_families.py runs those on it too).

A photo over twice LFM2-VL's 512 x 512 pixels is cut by mtmd into 512-pixel tiles, each after its
``<|img_row_R_col_C|>`` token, plus a downscaled thumbnail after ``<|img_thumbnail|>``, all inside
``<|image_start|> ... <|image_end|>``; a smaller one is a single chunk. The generated model must hold
those tokens as single special tokens (else mtmd would spell them out in bytes), and the hybrid
text model (short-convolution layers with a recurrent state beside the attention KV cache) must
answer a follow-up about a tiled photo exactly as a fresh load does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import photo_path

from vlmkit.chat import Chat
from vlmkit.engine import Engine, LoadOptions
from vlmkit.engine.model import Chunk, NativeModel
from vlmkit.engine.synthetic_families import write_family
from vlmkit.images import ImageHandle, prepare_image
from vlmkit.prediction import PredictionConfig

GREEDY = PredictionConfig(temperature=0, max_tokens=8)
Files = tuple[Path, Path]


@pytest.fixture(scope="module")
def lfm2(tmp_path_factory: pytest.TempPathFactory) -> Files:
    return write_family("lfm2-vl", tmp_path_factory.mktemp("lfm2-vl"))


@pytest.fixture(scope="module")
def retina() -> ImageHandle:
    return prepare_image(photo_path("retina.jpg"))  # 1411 x 1411: twice 512 x 512 many times over


@pytest.fixture()
def model(lfm2: Files) -> Iterator[NativeModel]:
    m = NativeModel(*lfm2, LoadOptions(cpu_threads=1, context_length=8192))
    yield m
    m.close()


def _layout(model: NativeModel, photo: bytes) -> tuple[list[Chunk], Callable[[str], int]]:
    chunks = model.tokenize_prompt(f"Look: {model.marker}", [(photo, "photo@0")], ["messages[0].content[1]"])

    def token(text: str) -> int:
        [one] = model.tokenize(text)  # a single special token, not spelled out
        return one

    return chunks, token


def test_a_large_photo_is_cut_into_tiles_and_a_thumbnail(model: NativeModel) -> None:
    chunks, token = _layout(model, photo_path("retina.jpg").read_bytes())
    try:
        images = [c for c in chunks if c.is_image]
        # a square photo: 3 x 3 tiles (the grid nearest its aspect, 2 to 10 tiles), then the thumbnail
        assert len(images) == 10
        assert all(c.n_tokens == c.n_pos == 256 for c in images[:9])  # a 512-pixel tile: 16 x 16 tokens
        assert 64 <= images[9].n_tokens <= 256
        marks = [c.tokens[-1] for c in chunks[:-1] if c.tokens]  # the token before each image chunk
        tiles = [token(f"<|img_row_{r}_col_{c}|>") for r in (1, 2, 3) for c in (1, 2, 3)]
        assert marks == [*tiles, token("<|img_thumbnail|>")]
        first = chunks[0].tokens
        assert first is not None and first[-2] == token("<|image_start|>")
        assert chunks[-1].tokens == [token("<|image_end|>")]
    finally:
        model.free_chunks(chunks)


def test_a_small_photo_is_one_chunk_without_a_thumbnail(model: NativeModel) -> None:
    chunks, token = _layout(model, photo_path("grace_hopper.jpg").read_bytes())  # 512 x 600
    try:
        assert [c.is_image for c in chunks] == [False, True, False]
        first = chunks[0].tokens
        assert first is not None and first[-1] == token("<|image_start|>")
        assert chunks[-1].tokens == [token("<|image_end|>")]
        # kept to LFM2-VL's 64 to 256 tokens of 32 x 32 pixels, its aspect kept
        assert 64 <= chunks[1].n_tokens <= 256
    finally:
        model.free_chunks(chunks)


def test_a_follow_up_about_a_tiled_photo_answers_as_a_fresh_load(
    lfm2: Files, retina: ImageHandle, image_chat: Any
) -> None:
    def engine() -> Engine:
        e = Engine(default_ttl=None, load_options=LoadOptions(cpu_threads=1, encoder_cache_mb=0))
        e.register("lfm2", *lfm2)
        return e

    chat: Chat = image_chat(retina)
    with engine() as warm:
        first = warm.respond("lfm2", chat, GREEDY)
        assert first.stats.image_tokens > 256  # more than one view holds: tiles and a thumbnail
        chat.add_assistant_response(first)
        chat.add_user_message("What else?")
        follow_up = warm.respond("lfm2", chat, GREEDY)
    assert follow_up.stats.images_encoded == 0
    assert follow_up.stats.cached_prompt_tokens >= first.stats.prompt_tokens
    with engine() as fresh:
        again = fresh.respond("lfm2", chat, GREEDY)
    assert (follow_up.content, follow_up.stats.predicted_tokens) == (again.content, again.stats.predicted_tokens)
