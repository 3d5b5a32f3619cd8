"""Structured output through the SDK: ``response_format`` parsed in one place for every backend.

A reply the grammar let end always parses; a reply cut short is a :class:`vk.StructuredOutputError`
saying where it was cut and which limit to raise, never a bare parse error.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel

import vlmkit as vk
from tests.client.conftest import KEY, LOAD, Generated
from vlmkit.prediction import PredictionResult, PredictionStats, StopReason, parse_structured


class Photo(BaseModel):
    subject: str
    people: int
    outdoors: bool


@pytest.fixture()
def chat(client: vk.Client, photo: Path) -> vk.Chat:
    chat = vk.Chat()
    chat.add_user_message("Describe this image please", images=[client.files.prepare_image(photo)])
    return chat


def test_the_readme_example_parses_into_the_model(model: vk.LLM, chat: vk.Chat) -> None:
    for seed in range(3):
        prediction = model.respond(chat, response_format=Photo, config={"seed": seed, "maxTokens": 1000})
        assert prediction.stats.stop_reason is vk.StopReason.EOS_FOUND
        assert isinstance(prediction.parsed, Photo)


def test_a_reply_cut_by_the_token_limit_says_so_and_which_limit_to_raise(model: vk.LLM, chat: vk.Chat) -> None:
    with pytest.raises(vk.StructuredOutputError) as err:
        model.respond(chat, response_format=Photo, config={"seed": 1, "maxTokens": 4})
    message = str(err.value)
    assert f"the structured reply of {KEY} was cut at 4 tokens by the token limit" in message
    assert "raise max_tokens (maxTokens)" in message
    assert err.value.stop_reason == "maxPredictedTokensReached"
    assert err.value.content.startswith("{")
    assert err.value.status_code == 422 and isinstance(err.value, vk.PredictionError)


def test_a_stream_gives_its_fragments_then_the_error(model: vk.LLM, chat: vk.Chat) -> None:
    stream = model.respond_stream(chat, response_format=Photo, config={"seed": 1, "maxTokens": 5})
    fragments: list[str] = []
    with pytest.raises(vk.StructuredOutputError, match="cut at 5 tokens") as err:
        for fragment in stream:
            fragments.append(fragment.content)
    assert fragments and "".join(fragments) == err.value.content


def test_a_reply_cut_by_a_stop_string_names_the_stop_strings(model: vk.LLM) -> None:
    with pytest.raises(vk.StructuredOutputError, match=r"by a stop string.*leave out stop strings"):
        model.respond("JSON", response_format=Photo, config={"seed": 1, "stop": [":"], "maxTokens": 300})


async def test_the_async_client_raises_it_too(generated: Generated) -> None:
    async with vk.AsyncClient(models_dir=generated.models_dir) as client:
        model = await client.llm.model(KEY, config=LOAD)
        with pytest.raises(vk.StructuredOutputError, match="cut at 3 tokens"):
            await model.respond("JSON", response_format=Photo, config={"seed": 2, "maxTokens": 3})


def _result(content: str, reason: StopReason, predicted: int = 9) -> PredictionResult:
    return PredictionResult(content=content, stats=PredictionStats(stop_reason=reason, predicted_tokens=predicted))


def test_each_way_a_reply_ends_gets_its_own_explanation() -> None:
    cut = '{"subject": "a pho'
    with pytest.raises(vk.StructuredOutputError, match="cut at 9 tokens when the context window was full") as err:
        parse_structured(_result(cut, StopReason.CONTEXT_LENGTH_REACHED), Photo, "m")
    assert "larger context_length" in str(err.value)
    with pytest.raises(vk.StructuredOutputError, match="m answered, but not in the requested format") as err:
        parse_structured(_result('{"subject": 3}', StopReason.EOS_FOUND), Photo, "m")
    assert "subject" in str(err.value)  # pydantic's account of what did not fit
    assert parse_structured(_result(cut, StopReason.USER_STOPPED), Photo, "m") is None  # stopped on purpose
    assert parse_structured(_result('{"ok": true}', StopReason.MAX_PREDICTED_TOKENS_REACHED), {}, "m") == {"ok": True}
