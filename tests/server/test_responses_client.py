"""The official ``openai`` client's ``responses.create`` against a ``vlmkit serve`` subprocess: images as
data URLs, URLs and uploaded file ids, instructions, ``text.format``, typed stream events, follow-ups
with ``previous_response_id`` (kept in memory, and on disk across a restart), and every bad input as
an error in OpenAI's shape and the client's own exception type."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.server.conftest import API_KEY, data_url
from tests.server.served import Served, restart, serve_fixture


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, tiny_files: tuple[Path, Path, Path]) -> Iterator[Served]:
    yield from serve_fixture(tmp_path_factory, tiny_files)


def client(served: Served) -> openai.OpenAI:
    return openai.OpenAI(base_url=served.base, api_key=API_KEY, max_retries=0, timeout=120)


def asked(url: str, text: str = "Describe this image.", **image: Any) -> list[Any]:
    part = {"type": "input_image", "image_url": url, **image}
    return [{"role": "user", "content": [{"type": "input_text", "text": text}, part]}]


def msg(exc: openai.APIStatusError) -> dict[str, Any]:
    body: Any = exc.body
    assert isinstance(body, dict) and set(body) == {"message", "type", "param", "code"}, body
    return body


def test_an_image_on_the_local_model(served: Served, hopper_jpeg: bytes) -> None:
    response = client(served).responses.create(
        model="tiny", input=asked(data_url(hopper_jpeg), detail="low"), max_output_tokens=6, temperature=0
    )
    assert response.object == "response" and response.model == "tiny" and response.id.startswith("resp_")
    assert response.status == "incomplete"
    assert response.incomplete_details is not None and response.incomplete_details.reason == "max_output_tokens"
    assert response.usage is not None and response.usage.output_tokens == 6 and response.usage.input_tokens > 10
    assert response.output[0].type == "message" and response.output[0].role == "assistant"
    assert isinstance(response.output_text, str)


def test_typed_stream_events(served: Served, hopper_jpeg: bytes) -> None:
    events = list(
        client(served).responses.create(
            model="tiny", input=asked(data_url(hopper_jpeg)), max_output_tokens=5, temperature=0, stream=True
        )
    )
    kinds = [e.type for e in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.incomplete",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    final = events[-1].response  # type: ignore[union-attr]
    assert final.output_text == text and final.usage is not None and final.usage.output_tokens == 5
    again = client(served).responses.create(
        model="tiny", input=asked(data_url(hopper_jpeg)), max_output_tokens=5, temperature=0
    )
    assert again.output_text == text


def test_a_follow_up_sends_no_image_again_and_reuses_the_prefix(served: Served, hopper_jpeg: bytes) -> None:
    c = client(served)
    first = c.responses.create(model="tiny", input=asked(data_url(hopper_jpeg)), max_output_tokens=4, temperature=0)
    follow = c.responses.create(
        model="tiny", input="And the colours?", previous_response_id=first.id, max_output_tokens=4, temperature=0
    )
    assert follow.previous_response_id == first.id
    assert follow.usage is not None and first.usage is not None
    assert follow.usage.input_tokens > first.usage.input_tokens  # the image and the first turn are in it
    assert follow.usage.input_tokens_details.cached_tokens >= first.usage.input_tokens - 2  # the prefix was reused


def test_a_gateway_model_with_instructions_a_schema_and_a_follow_up(served: Served, hopper_jpeg: bytes) -> None:
    c = client(served)
    schema = {"type": "object", "properties": {"colour": {"type": "string"}}, "required": ["colour"]}
    first = c.responses.create(
        model="gw",
        instructions="Answer in JSON.",
        input=asked(data_url(hopper_jpeg)),
        text={"format": {"type": "json_schema", "name": "answer", "schema": schema, "strict": True}},
        max_output_tokens=30,
    )
    assert first.output_text == "a fake answer" and first.status == "completed"
    assert first.text.format is not None and first.text.format.type == "json_schema"
    sent = served.upstream.requests[-1]
    assert sent["messages"][0] == {"role": "system", "content": "Answer in JSON."}
    assert sent["response_format"]["type"] == "json_schema"
    assert sent["response_format"]["json_schema"]["schema"] == schema
    follow = c.responses.create(model="gw", input="Why?", previous_response_id=first.id)
    assert follow.output_text == "a fake answer"
    sent = served.upstream.requests[-1]
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "user"]  # instructions do not carry over
    assert sent["messages"][0]["content"][1]["image_url"]["url"].startswith("data:image/jpeg;base64,")
    assert sent["messages"][1]["content"] == "a fake answer"

    stream = c.responses.create(model="gw", input="Hello", stream=True)
    events = list(stream)
    assert events[-1].type == "response.completed"
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "afakeanswer"


def test_a_file_id_and_an_image_url(served: Served, hopper_jpeg: bytes) -> None:
    c = client(served)
    uploaded = c.files.create(file=("hopper.jpg", hopper_jpeg, "image/jpeg"), purpose="vision")
    response = c.responses.create(
        model="tiny",
        input=[{"role": "user", "content": [{"type": "input_image", "file_id": uploaded.id, "detail": "low"}]}],
        max_output_tokens=3,
    )
    assert response.usage is not None and response.usage.input_tokens > 10
    url = f"http://127.0.0.1:{served.upstream.port}/images/grace_hopper.jpg"
    with pytest.raises(openai.BadRequestError) as caught:  # a private address is not fetched unless allowed
        c.responses.create(model="tiny", input=asked(url), max_output_tokens=3)
    error = msg(caught.value)
    assert error["message"].startswith("input[0].content[1]: ") and "allow_hosts" in error["message"]


def test_a_follow_up_after_a_restart_reads_the_stored_conversation(served: Served, hopper_jpeg: bytes) -> None:
    first = client(served).responses.create(model="gw", input=asked(data_url(hopper_jpeg)), max_output_tokens=5)
    assert (served.files_dir / "responses" / f"{first.id}.json").is_file()
    restart(served)
    follow = client(served).responses.create(model="gw", input="More?", previous_response_id=first.id)
    assert follow.output_text == "a fake answer"
    sent = served.upstream.requests[-1]["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    assert sent[0]["content"][1]["image_url"]["url"].startswith("data:image/jpeg;base64,")


# --- bad input -----------------------------------------------------------------------------------


def test_a_mislabelled_data_url_is_read_as_what_its_bytes_are(served: Served, hopper_jpeg: bytes) -> None:
    # as for chat completions, an image's type comes from its bytes: a data URL's label is not a claim to check
    response = client(served).responses.create(
        model="gw", input=asked(data_url(hopper_jpeg, "image/png")), max_output_tokens=5
    )
    assert response.output_text == "a fake answer"
    sent = served.upstream.requests[-1]["messages"][0]["content"][1]
    assert sent["image_url"]["url"].startswith("data:image/jpeg;base64,")


def test_a_corrupt_image(served: Served) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client(served).responses.create(model="tiny", input=asked(data_url(b"not an image" * 30)), max_output_tokens=3)
    error = msg(caught.value)
    assert error["param"] == "input[0].content[1]"
    assert "is neither an image nor a PDF" in error["message"] and "Send an image (JPEG, PNG" in error["message"]


def test_an_oversized_body(served: Served) -> None:
    big = b"\xff\xd8\xff" + bytes(3 * 1024 * 1024)
    with pytest.raises(openai.APIStatusError) as caught:
        client(served).responses.create(model="tiny", input=asked(data_url(big)), max_output_tokens=3)
    assert caught.value.status_code == 413
    error = msg(caught.value)
    assert error["code"] == "request_too_large" and "upload large images once through /v1/files" in error["message"]


def test_an_unknown_model(served: Served) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client(served).responses.create(model="gpt-nope", input="hi")
    error = msg(caught.value)
    assert error["code"] == "model_not_found" and error["param"] == "model"
    assert "the model 'gpt-nope' does not exist on this server; served: gw, tiny" in error["message"]


def test_an_unknown_previous_response(served: Served) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client(served).responses.create(model="gw", input="hi", previous_response_id="resp_" + "0" * 48)
    error = msg(caught.value)
    assert error["param"] == "previous_response_id" and error["code"] == "previous_response_not_found"
    assert "send the whole conversation as input instead" in error["message"]


@pytest.mark.parametrize(
    ("body", "status", "param", "fact"),
    [
        ({"model": "gw", "input": []}, 422, "input", "input must be a string or a non-empty list of items"),
        ({"model": "gw", "input": "hi", "max_output_tokens": 0}, 422, "max_output_tokens", "max_output_tokens"),
        ({"model": "gw", "input": "hi", "text": {"format": {"type": "xml"}}}, 422, "text.format", "type 'xml'"),
        (
            {"model": "gw", "input": "hi", "tools": [{"type": "function", "name": "f", "parameters": {}}]},
            422,
            "tools",
            "use /v1/chat/completions, which calls tools",
        ),
        (
            {"model": "gw", "input": [{"type": "function_call_output", "call_id": "c", "output": "1"}]},
            400,
            "input[0]",
            "input items of type 'function_call_output' are not supported",
        ),
        (
            {"model": "gw", "input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
            400,
            "input[0].content[0]",
            "content part type 'input_file' is not supported",
        ),
    ],
)
def test_bad_requests_name_the_field(served: Served, body: dict[str, Any], status: int, param: str, fact: str) -> None:
    r = served.post("/v1/responses", body)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["param"] == param and fact in error["message"], error
    assert json.dumps(r.json()).count("Traceback") == 0


def test_a_failing_upstream_is_a_502(served: Served) -> None:
    served.upstream.status, served.upstream.error_message = 500, "the upstream is down"
    try:
        with pytest.raises(openai.InternalServerError) as caught:
            client(served).responses.create(model="gw", input="hi", stream=True)
        assert caught.value.status_code == 502
        assert "the upstream is down" in msg(caught.value)["message"]
    finally:
        served.upstream.status = 200
