"""Structured output through the server, as OpenAI answers it: the official client's ``.parse`` gets
its model back, a reply cut by the token limit comes back with ``finish_reason: "length"`` (which
``.parse`` raises as its own ``LengthFinishReasonError``), a schema vlmkit cannot enforce is a 400,
and none of them is a 500. The SDK against the server raises its own typed error for a cut reply."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest
from pydantic import BaseModel

import vlmkit as vk
from tests.server.conftest import API_KEY, Running, data_url, image_message, start_server
from vlmkit.prediction import StopReason
from vlmkit.server import ServerSettings


class Photo(BaseModel):
    subject: str
    people: int
    outdoors: bool


def client(server: Running) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base, api_key=API_KEY, max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def local(settings: ServerSettings) -> Iterator[Running]:
    running = start_server(settings)
    yield running
    running.stop()


def test_parse_gives_the_pydantic_model(local: Running, hopper_jpeg: bytes) -> None:
    for seed in range(3):
        completion = client(local).chat.completions.parse(
            model="tiny", messages=image_message(data_url(hopper_jpeg)), response_format=Photo, seed=seed
        )
        choice = completion.choices[0]
        assert choice.finish_reason == "stop"
        assert isinstance(choice.message.parsed, Photo)


def test_a_reply_cut_by_max_tokens_is_finish_reason_length_not_a_500(local: Running, hopper_jpeg: bytes) -> None:
    with pytest.raises(openai.LengthFinishReasonError) as err:
        client(local).chat.completions.parse(
            model="tiny", messages=image_message(data_url(hopper_jpeg)), response_format=Photo, seed=1, max_tokens=4
        )
    completion = err.value.completion
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None and completion.usage.completion_tokens == 4
    assert local.results[-1].stats.stop_reason is StopReason.MAX_PREDICTED_TOKENS_REACHED
    assert completion.choices[0].message.content == local.results[-1].content


def test_a_cut_stream_ends_with_finish_reason_length(local: Running) -> None:
    with (
        client(local).chat.completions.stream(
            model="tiny", messages=[{"role": "user", "content": "JSON"}], response_format=Photo, seed=1, max_tokens=4
        ) as stream,
        pytest.raises(openai.LengthFinishReasonError),
    ):
        for _ in stream:
            pass


def test_a_schema_vlmkit_cannot_enforce_is_a_400_naming_the_keyword(local: Running) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "z", "schema": {"type": "string", "pattern": "^[0-9]{5}$"}}}
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError) as err:
            client(local).chat.completions.create(
                model="tiny",
                messages=[{"role": "user", "content": "zip?"}],
                response_format=fmt,  # type: ignore[arg-type]
                stream=stream,
            )
        assert err.value.status_code == 400
        message = str(err.value.body["message"])  # type: ignore[index]
        assert "uses 'pattern'" in message and "check the value after parsing" in message


def test_the_sdk_against_the_server_raises_its_typed_error(local: Running, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLMKIT_API_KEY", API_KEY)
    with vk.Client(local.url) as sdk:
        model = sdk.llm.model("tiny")
        with pytest.raises(vk.StructuredOutputError, match=r"cut at 4 tokens by the token limit.*raise max_tokens"):
            model.respond("JSON", response_format=Photo, config={"seed": 1, "maxTokens": 4})
        result = model.respond("JSON", response_format=Photo, config={"seed": 1, "maxTokens": 1000})
        assert isinstance(result.parsed, Photo)
