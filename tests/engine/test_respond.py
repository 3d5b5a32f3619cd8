"""Answering chats with images on the real llama.cpp path (tiny generated model, random weights).

Random weights never stop on purpose: these tests assert structure, stats and stop reasons, and that
the noise is words from the model's vocabulary, never which words.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from vlmkit.chat import Chat, ImagePart
from vlmkit.engine import Engine
from vlmkit.engine.synthetic import COMMON_WORDS
from vlmkit.errors import (
    ContextLengthError,
    InvalidMessageError,
    InvalidSettingError,
    ModelCapabilityError,
    ModelNotFoundError,
)
from vlmkit.images import ImageHandle
from vlmkit.prediction import PredictionConfig, PredictionFragment, StopReason
from vlmkit.wire.openai_chat import to_chat

GREEDY = PredictionConfig(temperature=0, max_tokens=6)


def test_respond_with_image_gives_content_stats_and_model_info(
    engine: Engine, image_chat: Any, hopper: ImageHandle
) -> None:
    fragments: list[PredictionFragment] = []
    result = engine.respond("tiny", image_chat(hopper), GREEDY, on_fragment=fragments.append)

    assert result.stats.stop_reason is StopReason.MAX_PREDICTED_TOKENS_REACHED
    assert result.stats.predicted_tokens == 6
    assert result.stats.prompt_tokens > 16  # 16 image tokens plus the text
    assert result.stats.images_encoded == 1 and result.stats.images_reused == 0
    assert result.stats.cached_prompt_tokens == 0
    assert result.stats.time_to_first_token_sec is not None and result.stats.time_to_first_token_sec > 0
    assert result.stats.tokens_per_second is not None and result.stats.tokens_per_second > 0
    assert "".join(f.content for f in fragments) == result.content
    assert sum(f.tokens_count for f in fragments) == 6
    assert result.model_info is not None and result.model_info.vision and result.model_info.key == "tiny"
    assert result.model_info.architecture == "llama" and result.model_info.projector_type == "mlp"


def test_any_prompt_tokenizes_and_every_piece_said_is_a_word(engine: Engine) -> None:
    """No top-k, top-p or min-p to hide the byte and control tokens: only the model keeps them out."""
    untruncated = PredictionConfig(max_tokens=64, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=7)
    fragments: list[PredictionFragment] = []
    prompt = "Ünïcödé, 🙂 and tabs\t: any text tokenizes"
    result = engine.respond("tiny", prompt, untruncated, on_fragment=fragments.append)
    assert result.stats.stop_reason is StopReason.MAX_PREDICTED_TOKENS_REACHED
    assert result.stats.prompt_tokens > 40  # the prompt fell back to byte tokens
    assert all(re.fullmatch(r"( [a-z]+)+", f.content) for f in fragments), fragments
    words = result.content.split()
    assert len(words) == 64 and set(words) <= set(COMMON_WORDS)
    assert len(set(words)) > 20  # noise, not one word on repeat


def test_string_prompt_and_text_only_chat(engine: Engine) -> None:
    result = engine.respond("tiny", "Hello", GREEDY)
    assert result.stats.images_encoded == 0 and result.stats.predicted_tokens == 6


def test_follow_up_turn_reuses_prefix_and_does_not_reencode(
    engine: Engine, image_chat: Any, hopper: ImageHandle
) -> None:
    chat = image_chat(hopper)
    first = engine.respond("tiny", chat, GREEDY)
    chat.add_assistant_response(first)
    chat.add_user_message("What else?")
    second = engine.respond("tiny", chat, GREEDY)

    assert second.stats.images_encoded == 0
    assert second.stats.images_reused == 1
    # everything up to the first reply was evaluated already (text and the image's 16 positions)
    assert second.stats.cached_prompt_tokens >= first.stats.prompt_tokens - 2
    assert second.stats.prompt_tokens > first.stats.prompt_tokens


def test_new_chat_about_known_image_uses_cached_embeddings(
    engine: Engine, image_chat: Any, hopper: ImageHandle, rocket: ImageHandle
) -> None:
    engine.respond("tiny", image_chat(hopper, "First chat."), GREEDY)
    engine.respond("tiny", image_chat(rocket, "Another picture."), GREEDY)  # KV now holds the rocket
    again = engine.respond("tiny", image_chat(hopper, "A different question entirely."), GREEDY)
    assert again.stats.images_encoded == 0 and again.stats.images_reused == 1
    assert again.stats.cached_prompt_tokens < again.stats.prompt_tokens - 16  # the image was evaluated again


def test_same_image_twice_in_one_prompt_is_encoded_once(engine: Engine, hopper: ImageHandle) -> None:
    chat = Chat()
    chat.add_user_message("Compare these.", images=[hopper, hopper])
    result = engine.respond("tiny", chat, GREEDY)
    assert result.stats.images_encoded == 1


def test_identical_request_twice_reuses_all_but_the_last_token(
    engine: Engine, image_chat: Any, hopper: ImageHandle
) -> None:
    chat = image_chat(hopper)
    a = engine.respond("tiny", chat, GREEDY)
    b = engine.respond("tiny", chat, GREEDY)
    assert b.stats.cached_prompt_tokens == b.stats.prompt_tokens - 1
    assert a.content == b.content  # greedy on the same prompt


def test_seed_makes_sampling_repeatable(engine: Engine) -> None:
    cfg = PredictionConfig(temperature=1.5, top_k=0, top_p=1.0, min_p=0.0, seed=1234, max_tokens=12)
    a = engine.respond("tiny", "Say something", cfg)
    b = engine.respond("tiny", "Say something", cfg)
    assert a.content == b.content


def test_stop_string_cuts_the_reply(engine: Engine) -> None:
    probe = engine.respond("tiny", "Hi", PredictionConfig(temperature=0, max_tokens=12))
    assert len(probe.content) >= 3
    stop = probe.content[2:4]
    fragments: list[PredictionFragment] = []
    result = engine.respond(
        "tiny", "Hi", PredictionConfig(temperature=0, max_tokens=12, stop=[stop]), on_fragment=fragments.append
    )
    assert result.stats.stop_reason is StopReason.STOP_STRING_FOUND
    assert result.content == probe.content[: probe.content.find(stop)]
    assert "".join(f.content for f in fragments) == result.content


def test_structured_output_parses(engine: Engine) -> None:
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    result = engine.respond("tiny", "Answer in JSON", PredictionConfig(max_tokens=80, response_format=schema))
    assert result.stats.stop_reason is StopReason.EOS_FOUND
    assert result.parsed is None  # the engine answers text; the SDK parses it (vlmkit.prediction.parse_structured)
    assert isinstance(json.loads(result.content)["ok"], bool)


def test_structured_output_with_pydantic_model(engine: Engine) -> None:
    import pydantic

    class Verdict(pydantic.BaseModel):  # type: ignore[misc,name-defined]
        ok: bool

    result = engine.respond("tiny", "JSON please", PredictionConfig(max_tokens=80, response_format=Verdict))
    assert isinstance(Verdict.model_validate_json(result.content), Verdict)


def test_image_to_text_only_model_names_the_model(engine: Engine, image_chat: Any, hopper: ImageHandle) -> None:
    with pytest.raises(ModelCapabilityError) as err:
        engine.respond("tiny-text", image_chat(hopper), GREEDY)
    assert err.value.model == "tiny-text"
    assert "'tiny-text' does not support images" in str(err.value)
    assert err.value.status_code == 400
    assert err.value.location == "messages[0].content[1]"  # the image, as a server's param names it
    assert str(err.value).startswith("messages[0].content[1]: model 'tiny-text' does not support images")


def test_prompt_longer_than_context_is_a_clear_error(
    engine: Engine, image_chat: Any, tiny_model, hopper: ImageHandle
) -> None:
    from vlmkit.engine import LoadOptions

    info = engine.load(tiny_model[0], key="tiny-small", options=LoadOptions(context_length=256, cpu_threads=1))
    with pytest.raises(ContextLengthError, match=f"context holds {info.context_length}") as err:
        engine.respond("tiny-small", image_chat(hopper, "x " * info.context_length), GREEDY)
    assert "larger context_length" in str(err.value) and err.value.status_code == 400


def test_context_full_stops_generation(engine: Engine, tiny_model: Any) -> None:
    from vlmkit.engine import LoadOptions

    info = engine.load(tiny_model[0], key="tiny-ctx", options=LoadOptions(context_length=256, cpu_threads=1))
    result = engine.respond("tiny-ctx", "Go on", PredictionConfig(temperature=0))
    assert result.stats.stop_reason is StopReason.CONTEXT_LENGTH_REACHED
    assert result.stats.prompt_tokens + result.stats.predicted_tokens == info.context_length


def test_detail_token_cap_and_levels(engine: Engine, image_chat: Any, hopper: ImageHandle) -> None:
    # the "mlp" projector has a fixed size (16 tokens): a cap below it cannot shrink it further
    low = engine.respond("tiny", image_chat(hopper), PredictionConfig(temperature=0, max_tokens=2, detail="low"))
    capped = engine.respond("tiny", image_chat(hopper), PredictionConfig(temperature=0, max_tokens=2, detail=8))
    assert low.stats.prompt_tokens == capped.stats.prompt_tokens


def test_unknown_model_is_not_found(engine: Engine) -> None:
    with pytest.raises(ModelNotFoundError, match="vlmkit get"):
        engine.respond("qwen2-vl-2b-instruct", "hi", GREEDY)


def test_bad_config_values_are_rejected() -> None:
    with pytest.raises(ValueError, match="detail"):
        PredictionConfig(detail="medium")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="temperature"):
        PredictionConfig(temperature=-1)


def test_chat_template_refusal_is_a_prediction_error(engine: Engine) -> None:
    chat = Chat()
    assert isinstance(engine.respond("tiny", chat, GREEDY).content, str)  # empty chat: still a prompt


def test_a_malformed_schema_is_a_bad_request(engine: Engine) -> None:
    with pytest.raises(InvalidSettingError, match="'properties' that is not an object") as err:
        engine.respond("tiny", "x", PredictionConfig(response_format={"type": "object", "properties": 3}))
    assert err.value.status_code == 400  # a malformed schema is the caller's to fix


def test_a_chat_the_template_refuses_is_a_bad_request(hopper: ImageHandle) -> None:
    from vlmkit.engine.prompt import compile_template
    from vlmkit.errors import BadRequestError, ChatTemplateError

    strict = compile_template(
        "{% for m in messages %}{% if m.role == 'assistant' and loop.first %}"
        "{{ raise_exception('Conversation must start with a user message') }}{% endif %}"
        "{{ m.content }}{% endfor %}",
        "<s>",
        "</s>",
    )
    chat = Chat()
    chat.add_assistant_response("hello")
    with pytest.raises(ChatTemplateError, match="refused this chat: Conversation must start with a user") as info:
        strict.render(chat, "<__media__>")
    assert isinstance(info.value, BadRequestError) and info.value.status_code == 400

    users_only = compile_template(
        "{% for m in messages %}{% if m.role == 'user' %}{{ m.content }}{% endif %}{% endfor %}", "<s>", "</s>"
    )
    chat = Chat("look")
    chat.messages[0].content.append(ImagePart(hopper))
    chat.add_user_message("what is it?")
    with pytest.raises(ChatTemplateError, match=r"dropped images \(0 of 1 kept\); put images in user messages"):
        users_only.render(chat, "<__media__>")


def test_an_image_not_read_yet_is_refused_not_dropped(engine: Engine) -> None:
    chat = to_chat(
        [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}]
    )
    with pytest.raises(InvalidMessageError) as err:
        engine.respond("tiny", chat, GREEDY)
    assert err.value.message == (
        "messages[0].content[0]: the image 'https://example.com/cat.png' has not been read; read the chat's images "
        "first: chat.with_images(vlmkit.images.resolve_images(chat.image_refs))"
    )
    assert err.value.location == "messages[0].content[0]"
