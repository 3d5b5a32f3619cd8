"""The engine on every model family: each shape's own bugs, on the real llama.cpp path.

Each family is a generated random-weight model with its real architecture, projector, metadata,
special tokens and chat template (:mod:`vlmkit.engine.synthetic_families`): LLaVA's MLP, SmolVLM's
tiles, Qwen2-VL's and Qwen2.5-VL's M-RoPE (an image takes fewer positions than KV cells), Qwen3-VL's
deepstack (image embeddings three times the text width), Gemma 3's sliding-window layers and
non-causal image tokens. Greedy replies are compared token for token (the text and the count) with
the same chat evaluated from scratch in a fresh load: reuse must never change an answer, whether
of the KV cache, of images prepared on an earlier turn, or of embeddings read back from disk.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from vlmkit.chat import Chat
from vlmkit.engine import Engine, LoadOptions, native
from vlmkit.engine.images import budget_of, render_input
from vlmkit.engine.loaded import LoadedModel
from vlmkit.engine.model import Chunk, NativeModel
from vlmkit.engine.prepared import assemble, occurrence_ids
from vlmkit.engine.synthetic_families import FAMILIES, write_family
from vlmkit.errors import ContextLengthError, ModelLoadError, PredictionError
from vlmkit.images import ImageHandle
from vlmkit.prediction import PredictionConfig, PredictionResult, StopReason

GREEDY = PredictionConfig(temperature=0, max_tokens=8)
KEY = "family"

Files = tuple[Path, Path]


@pytest.fixture(scope="session")
def family_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Files]:
    root = tmp_path_factory.mktemp("families")
    return {name: write_family(name, root / name) for name in FAMILIES}


@pytest.fixture(params=list(FAMILIES))
def family(request: pytest.FixtureRequest, family_models: dict[str, Files]) -> Files:
    return family_models[request.param]


def fresh(files: Files, *, context_length: int | None = None, encoder_cache_mb: int | None = None) -> Engine:
    """An engine that has loaded nothing yet, with the family's model registered under ``KEY``."""
    options = LoadOptions(cpu_threads=1, context_length=context_length, encoder_cache_mb=encoder_cache_mb)
    engine = Engine(default_ttl=None, load_options=options)
    engine.register(KEY, *files)
    return engine


@pytest.fixture()
def warm(family: Files) -> Iterator[Engine]:
    with fresh(family) as engine:
        yield engine


def from_scratch(files: Files, chat: Chat, config: PredictionConfig = GREEDY) -> tuple[str, int]:
    """The reply of a fresh load that encodes every image (the encoder cache on disk is not read)."""
    with fresh(files, encoder_cache_mb=0) as engine:
        return said(engine.respond(KEY, chat, config))


def said(result: PredictionResult) -> tuple[str, int]:
    return result.content, result.stats.predicted_tokens


def test_reuse_answers_as_a_fresh_load_does(
    family: Files, warm: Engine, image_chat: Any, hopper: ImageHandle, rocket: ImageHandle
) -> None:
    # a follow-up turn: the first turn's prefix (image included) stays in the KV cache
    chat = image_chat(hopper)
    first = warm.respond(KEY, chat, GREEDY)
    chat.add_assistant_response(first)
    chat.add_user_message("What else?")
    follow_up = warm.respond(KEY, chat, GREEDY)
    assert follow_up.stats.images_encoded == 0 and follow_up.stats.images_reused == 1
    assert follow_up.stats.cached_prompt_tokens > first.stats.prompt_tokens // 2
    assert said(follow_up) == from_scratch(family, chat)

    # a new chat about a picture seen before: its embeddings come from the cache
    warm.respond(KEY, image_chat(rocket, "Another picture."), GREEDY)
    again_chat = image_chat(hopper, "A different question entirely.")
    again = warm.respond(KEY, again_chat, GREEDY)
    assert again.stats.images_encoded == 0 and again.stats.images_reused == 1
    assert said(again) == from_scratch(family, again_chat)

    # two images in one message, both known
    two = Chat()
    two.add_user_message("Compare these.", images=[rocket, hopper])
    both = warm.respond(KEY, two, GREEDY)
    assert both.stats.images_encoded == 0 and both.stats.images_reused == 2
    assert said(both) == from_scratch(family, two)


def test_replies_are_stable_across_loads_and_depend_on_the_image(
    family: Files, image_chat: Any, hopper: ImageHandle, rocket: ImageHandle
) -> None:
    config = PredictionConfig(temperature=0, max_tokens=12)
    a = from_scratch(family, image_chat(hopper), config)
    b = from_scratch(family, image_chat(hopper), config)
    assert a == b  # nothing read from outside the embeddings (a NaN or a stray value would differ)
    assert a != from_scratch(family, image_chat(rocket), config)
    assert a[1] == 12 and a[0].startswith(" ")  # words, each after a space


def test_image_embeddings_are_as_wide_as_the_model_reads(family: Files, hopper_bytes: bytes) -> None:
    model = NativeModel(*family, LoadOptions(cpu_threads=1, context_length=2048))
    chunks = model.tokenize_prompt(f"Look: {model.marker}", [(hopper_bytes, "hopper@0")], ["messages[0].content[1]"])
    try:
        images = [c for c in chunks if c.is_image]
        assert images
        for chunk in images:
            embd = model.encode_image(chunk)
            assert embd.shape == (chunk.n_tokens * model.n_embd_inp,)
            assert np.isfinite(embd).all()
        if Path(family[0]).stem == "qwen3-vl":  # deepstack: two more layers' features beside the main ones
            assert model.n_embd_inp == 3 * model.n_embd
        with pytest.raises(PredictionError, match="image embedding values for"):
            model.decode_image(images[0], embd[: -model.n_embd_inp], 0)  # never read past the end
    finally:
        model.free_chunks(chunks)
        model.close()


def _tokens_per_image(files: Files, image_chat: Any, image: ImageHandle) -> tuple[int, int]:
    """(prompt tokens of a one-image chat, of which the image's)."""
    with fresh(files) as engine:
        with_image = engine.respond(KEY, image_chat(image), PredictionConfig(max_tokens=1))
        without = engine.respond(KEY, "Describe this image.", PredictionConfig(max_tokens=1))
    return with_image.stats.prompt_tokens, with_image.stats.prompt_tokens - without.stats.prompt_tokens


def test_too_many_images_is_a_context_length_error(family: Files, image_chat: Any, hopper: ImageHandle) -> None:
    _, per_image = _tokens_per_image(family, image_chat, hopper)
    with fresh(family, context_length=768) as engine:
        n_ctx = engine.load(KEY).context_length
        chat = Chat()
        chat.add_user_message("Compare these.", images=[hopper] * (n_ctx // per_image + 1))
        with pytest.raises(ContextLengthError) as err:
            engine.respond(KEY, chat, GREEDY)
    message = str(err.value)
    taken = re.search(r"the prompt takes (\d+) tokens", message)
    assert taken is not None and int(taken.group(1)) > n_ctx
    assert f"the model's context holds {n_ctx}" in message
    assert "send fewer images" in message and "larger context_length" in message
    assert err.value.status_code == 400


def test_a_reply_reaching_the_context_end_stops_there(family: Files, image_chat: Any, hopper: ImageHandle) -> None:
    prompt, _ = _tokens_per_image(family, image_chat, hopper)
    with fresh(family, context_length=(prompt + 32) // 256 * 256 + 256) as engine:
        n_ctx = engine.load(KEY).context_length
        result = engine.respond(KEY, image_chat(hopper), PredictionConfig(temperature=0))
    assert result.stats.stop_reason is StopReason.CONTEXT_LENGTH_REACHED
    assert result.stats.prompt_tokens + result.stats.predicted_tokens == n_ctx


def test_a_failed_load_says_llama_cpps_error_and_not_its_warnings(
    family_models: dict[str, Files], image_chat: Any, hopper: ImageHandle
) -> None:
    qwen2_text, _ = family_models["qwen2-vl"]
    _, qwen3_projector = family_models["qwen3-vl"]  # 3 x 64 wide: another model's
    with fresh(family_models["qwen2-vl"]) as engine:
        engine.load(KEY)
        with pytest.raises(ModelLoadError) as err:
            NativeModel(qwen2_text, qwen3_projector, LoadOptions(cpu_threads=1))
        message = str(err.value)
        assert "mismatch between text model (n_embd = 64) and mmproj (n_embd = 192)" in message
        assert "Does the mmproj belong to this model" in message
        assert "Qwen-VL models require at minimum" not in message  # a warning llama.cpp logged on the way

        # a prediction on the model loaded before starts with no error lines: none of the failed load's
        engine.respond(KEY, image_chat(hopper), PredictionConfig(max_tokens=2))
        assert native.recent_errors() == ""


def test_a_follow_up_does_no_image_work_and_answers_as_a_fresh_load(
    family: Files, warm: Engine, image_chat: Any, hopper: ImageHandle, webp_cat: ImageHandle
) -> None:
    chat = Chat()
    chat.add_user_message("Compare these.", images=[hopper, webp_cat])  # a JPEG's bytes, and decoded pixels
    first = warm.respond(KEY, chat, GREEDY)
    assert first.stats.images_preprocessed == 2
    chat.add_assistant_response(first)
    chat.add_user_message("And the colours?")
    follow_up = warm.respond(KEY, chat, GREEDY)
    assert (follow_up.stats.images_preprocessed, follow_up.stats.images_encoded) == (0, 0)
    assert said(follow_up) == from_scratch(family, chat)

    # a new chat about a picture prepared before, at the same detail: no image work either
    again_chat = image_chat(webp_cat, "Once more.")
    again = warm.respond(KEY, again_chat, GREEDY)
    assert (again.stats.images_preprocessed, again.stats.images_encoded) == (0, 0)
    assert said(again) == from_scratch(family, again_chat)

    # another detail is another budget: prepared again
    low = warm.respond(KEY, again_chat, PredictionConfig(temperature=0, max_tokens=2, detail="low"))
    assert low.stats.images_preprocessed == 1


def _shape(chunks: list[Chunk]) -> list[tuple[object, ...]]:
    return [(c.tokens, c.image_id, c.n_tokens, c.n_pos) if c.is_image else (c.tokens,) for c in chunks]


def test_a_prompt_put_together_from_prepared_images_is_what_mtmd_makes_of_it(
    family: Files, hopper: ImageHandle, webp_cat: ImageHandle
) -> None:
    lm = LoadedModel.load(KEY, *family, LoadOptions(cpu_threads=1), ttl=None, max_queue=1)
    try:
        chat = Chat("Answer in one word.")
        chat.add_user_message("First <b>this</b>:", images=[hopper])
        chat.add_assistant_response("Fine.")
        chat.add_user_message("Now these two, and the first again.", images=[webp_cat, hopper])
        prompt = lm.template.render(chat, lm.native.marker)
        budgets = [budget_of(part, PredictionConfig()) for part in prompt.images]
        prepared = [
            lm.prepared.prepare(lm.native, part, budget, where)
            for part, budget, where in zip(prompt.images, budgets, prompt.locations, strict=True)
        ]
        assembled = assemble(lm.native, prompt.text, prepared)
        inputs = [render_input(part, budget.long_edge) for part, budget in zip(prompt.images, budgets, strict=True)]
        whole = lm.native.tokenize_prompt(
            prompt.text,
            [(i.data, image_id) for i, image_id in zip(inputs, occurrence_ids(prepared), strict=True)],
            prompt.locations,
        )
        try:
            assert [p.key for p in prepared] == [i.key for i in inputs]
            assert _shape(assembled) == _shape(whole)
            assert sum(1 for c in assembled if c.is_image) >= 3
        finally:
            lm.native.free_chunks(whole)
            lm.native.free_chunks(assembled)  # borrowed chunks: not freed here
            for p in prepared:
                lm.native.free_chunks(p.chunks)
    finally:
        lm.close()


def test_a_new_load_reads_the_embeddings_from_disk_and_answers_the_same(
    family: Files, image_chat: Any, hopper: ImageHandle
) -> None:
    chat = image_chat(hopper)
    with fresh(family) as first_engine:
        first = first_engine.respond(KEY, chat, GREEDY)
    assert first.stats.images_encoded == 1
    with fresh(family) as engine:  # a new engine, a new load: nothing in memory
        again = engine.respond(KEY, chat, GREEDY)
    assert (again.stats.images_encoded, again.stats.images_reused) == (0, 1)
    assert said(again) == said(first)


def test_image_token_bounds_resize_a_dynamic_resolution_image(
    family_models: dict[str, Files], image_chat: Any, hopper: ImageHandle
) -> None:
    # Qwen2-VL takes any size (28 pixels a token): the bounds resize the image until its count fits
    chat = image_chat(hopper)
    one = PredictionConfig(temperature=0, max_tokens=1)
    with fresh(family_models["qwen2-vl"]) as engine:

        def stats(**bounds: Any) -> Any:
            return engine.respond(KEY, chat, dataclasses.replace(one, **bounds)).stats

        natural = stats()
        capped = stats(image_max_tokens=100)
        as_detail = stats(detail=100)
        floored = stats(image_min_tokens=2 * natural.image_tokens)
        both = stats(image_min_tokens=60, image_max_tokens=80)
    assert natural.image_tokens > 100 and natural.image_sizes == [f"{hopper.width}x{hopper.height}"]
    assert 0 < capped.image_tokens <= 100
    assert as_detail.image_tokens == capped.image_tokens  # an int detail is the same cap
    assert floored.image_tokens >= 2 * natural.image_tokens
    assert 60 <= both.image_tokens <= 80

    def area(size: str) -> int:
        w, h = size.split("x")
        return int(w) * int(h)

    sizes = [area(s.image_sizes[0]) for s in (capped, natural, floored)]
    assert sizes == sorted(sizes) and len(set(sizes)) == 3  # shrunk, as it is, enlarged
    # each bound is its own budget: the prompt's positions count the tokens each one gave
    assert capped.prompt_tokens - capped.image_tokens == natural.prompt_tokens - natural.image_tokens


def test_an_image_prepared_at_a_budget_is_not_encoded_by_the_question(
    family_models: dict[str, Files], image_chat: Any, rocket: ImageHandle
) -> None:
    files = family_models["qwen2-vl"]
    budget = PredictionConfig(temperature=0, max_tokens=8, image_max_tokens=100)
    chat = image_chat(rocket)
    with fresh(files, encoder_cache_mb=0) as engine:
        other = engine.prepare(KEY, rocket, PredictionConfig(image_max_tokens=50))  # another budget
        prepared = engine.prepare(KEY, rocket, budget)
        assert (prepared.already_cached, other.already_cached) == (False, False)
        assert other.image_tokens <= 50 < prepared.image_tokens <= 100
        result = engine.respond(KEY, chat, budget)
    assert (result.stats.images_encoded, result.stats.images_preprocessed) == (0, 0)
    assert result.stats.image_tokens == prepared.image_tokens
    assert said(result) == from_scratch(files, chat, budget)


def test_several_images_are_encoded_in_one_pass_where_the_projector_batches(
    family: Files, hopper_bytes: bytes, rocket: ImageHandle
) -> None:
    """The images (and tiles) of a turn go through the encoder together where mtmd batches them
    (InternVL here); everywhere the embeddings are the ones encoding each alone gives."""
    model = NativeModel(*family, LoadOptions(cpu_threads=1, context_length=4096))
    sources = [(hopper_bytes, "hopper@0"), (rocket.data, "rocket@1")]
    where = ["messages[0].content[1]", "messages[0].content[2]"]
    chunks = model.tokenize_prompt(f"Look: {model.marker} and {model.marker}", sources, where)
    try:
        images = [c for c in chunks if c.is_image]
        together = model.encode_images(images)
        alone = [model.encode_image(c) for c in images]
        assert len(together) == len(alone) == len(images)
        for a, b in zip(together, alone, strict=True):
            assert a.shape == b.shape
            np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)
        if Path(family[0]).stem == "internvl":  # two photos in tiles and overviews: several chunks a pass
            M = native.mtmd()
            batch = M.mtmd_batch_init(model._mctx)
            try:
                assert [M.mtmd_batch_add_chunk(batch, c.image) for c in images[:2]] == [0, 0]
            finally:
                M.mtmd_batch_free(batch)
    finally:
        model.free_chunks(chunks)
        model.close()


def test_a_settled_reply_leaves_the_follow_up_only_its_own_message(
    family: Files, image_chat: Any, hopper: ImageHandle
) -> None:
    """While the model is idle after a reply, the chat with the reply as the template writes it is
    evaluated (the template often writes it as other tokens than were sampled: a space, an end of
    turn); the follow-up then evaluates its own message alone, and answers as a fresh load does."""

    def follow_up(settle: bool) -> tuple[PredictionResult, PredictionResult, Chat]:
        options = LoadOptions(cpu_threads=1)
        with Engine(default_ttl=None, load_options=options, settle_replies=settle) as engine:
            engine.register(KEY, *family)
            chat = image_chat(hopper)
            first = engine.respond(KEY, chat, GREEDY)
            assert engine.wait_settled(timeout=60)
            chat.add_assistant_response(first)
            chat.add_user_message("What else?")
            return first, engine.respond(KEY, chat, GREEDY), chat

    _, settled, chat = follow_up(True)
    _, unsettled, _ = follow_up(False)
    evaluated = settled.stats.prompt_tokens - settled.stats.cached_prompt_tokens
    question = Chat()
    question.add_user_message("What else?")
    with fresh(family) as engine:  # the new message and the template's words around it
        alone = engine.respond(KEY, question, PredictionConfig(max_tokens=1)).stats.prompt_tokens
    assert evaluated <= alone + 4
    assert unsettled.stats.prompt_tokens - unsettled.stats.cached_prompt_tokens > evaluated
    assert said(settled) == said(unsettled) == from_scratch(family, chat)
