"""The official ``openai`` client against the server: local model with images (data URLs and uploaded
file ids), streaming, the gateway, and every error as the client's own exception type."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from tests.server.conftest import API_KEY, Running, data_url, image_message
from vlmkit.prediction import StopReason


def msg(exc: openai.APIStatusError) -> str:
    """The error's message as the server wrote it (``exc.message`` prefixes the status and a repr)."""
    body: Any = exc.body
    assert isinstance(body, dict), body
    return str(body["message"])


def client(server: Running, key: str | None = API_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base, api_key=key or "none", max_retries=0, timeout=60)


def test_models_list_flags_vision(server: Running) -> None:
    models = {m.id: m for m in client(server).models.list()}
    assert {"tiny", "tiny-text", "gw", "pair"} <= set(models)
    extra = {name: m.model_extra or {} for name, m in models.items()}
    assert extra["tiny"]["vision"] is True
    assert extra["tiny-text"]["vision"] is False
    assert extra["tiny"]["type"] == "local"
    assert extra["gw"] == {"vision": True, "type": "gateway", "loaded": True}
    assert models["gw"].owned_by == "openai"
    assert client(server).models.retrieve("tiny").id == "tiny"


def test_chat_with_a_data_url_image(server: Running, hopper_jpeg: bytes) -> None:
    response = client(server).chat.completions.create(
        model="tiny",
        messages=image_message(data_url(hopper_jpeg)),
        max_tokens=6,
        temperature=0,  # type: ignore[arg-type]
    )
    choice = response.choices[0]
    assert response.object == "chat.completion"
    assert response.model == "tiny"
    assert response.id.startswith("chatcmpl-")
    assert isinstance(choice.message.content, str)
    assert choice.message.role == "assistant"
    assert choice.finish_reason == "length"
    assert response.usage is not None
    assert response.usage.completion_tokens == 6
    assert response.usage.prompt_tokens > 10  # the image's tokens and the text's
    stats = (response.model_extra or {})["stats"]
    assert stats["stop_reason"] == "maxPredictedTokensReached"
    assert stats["images_encoded"] + stats["images_reused"] == 1
    assert server.results[-1].stats.stop_reason is StopReason.MAX_PREDICTED_TOKENS_REACHED


def test_stream_in_openai_chunk_shape(server: Running, hopper_jpeg: bytes) -> None:
    stream = client(server).chat.completions.create(
        model="tiny",
        messages=image_message(data_url(hopper_jpeg)),  # type: ignore[arg-type]
        max_tokens=5,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" and c.model == "tiny" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert [c.choices[0].finish_reason for c in finals] == ["length"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 5
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == server.results[-1].content


def test_uploaded_file_used_by_id_in_two_ways(server: Running, hopper_jpeg: bytes) -> None:
    c = client(server)
    uploaded = c.files.create(file=("hopper.jpg", hopper_jpeg, "image/jpeg"), purpose="vision")
    assert uploaded.id.startswith("file-")
    assert uploaded.bytes == len(hopper_jpeg)
    assert uploaded.filename == "hopper.jpg"
    assert uploaded.purpose == "vision"
    assert (uploaded.model_extra or {})["mime_type"] == "image/jpeg"
    assert c.files.retrieve(uploaded.id).id == uploaded.id
    assert uploaded.id in [f.id for f in c.files.list()]
    assert c.files.content(uploaded.id).content == hopper_jpeg

    file_part: dict[str, Any] = {"type": "file", "file": {"file_id": uploaded.id}}
    url_part: dict[str, Any] = {"type": "image_url", "image_url": {"url": uploaded.id}}
    for part in (file_part, url_part):
        r = c.chat.completions.create(model="tiny", messages=image_message(part), max_tokens=3)  # type: ignore[arg-type]
        assert r.usage is not None and r.usage.prompt_tokens > 10
    # the second chat about the same image did not encode it again
    assert server.results[-1].stats.images_encoded == 0

    deleted = c.files.delete(uploaded.id)
    assert deleted.deleted is True and deleted.id == uploaded.id
    with pytest.raises(openai.NotFoundError) as info:
        c.files.retrieve(uploaded.id)
    assert msg(info.value).endswith(f"no file with id {uploaded.id!r} on this server")
    with pytest.raises(openai.BadRequestError) as bad:
        c.chat.completions.create(model="tiny", messages=image_message(file_part))  # type: ignore[arg-type]
    assert "messages[0].content[1]: no such file: no uploaded file has the id" in msg(bad.value)
    assert bad.value.body["param"] == "messages[0].content[1]"  # type: ignore[index]


def test_upload_of_a_non_image_is_refused(server: Running) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client(server).files.create(file=("notes.png", b"hello, I am text\n" * 10, "image/png"), purpose="vision")
    assert "file: 'notes.png' is neither an image, a PDF nor a video: found text" in msg(info.value)
    assert "Upload an image (JPEG, PNG" in msg(info.value) and ", a PDF, or a video (MP4" in msg(info.value)


def test_wrong_key_is_authentication_error(server: Running) -> None:
    with pytest.raises(openai.AuthenticationError) as info:
        client(server, "sk-wrong").models.list()
    assert info.value.status_code == 401
    assert msg(info.value) == "the API key is not valid for this server"
    assert info.value.body["type"] == "authentication_error"  # type: ignore[index]
    assert info.value.code == "invalid_api_key"


def test_unknown_model_is_not_found(server: Running) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client(server).chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
    assert "the model 'nope' does not exist on this server; served: gw, pair, tiny, tiny-text" in msg(info.value)
    assert info.value.code == "model_not_found"


def test_a_path_as_model_name_is_not_loaded(server: Running, tiny_files: Any) -> None:
    with pytest.raises(openai.NotFoundError):
        client(server).chat.completions.create(model=str(tiny_files[0]), messages=[{"role": "user", "content": "hi"}])


def test_bad_image_names_the_part(server: Running) -> None:
    messages: list[Any] = [
        {"role": "system", "content": "Be brief."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "x"},
                {"type": "image_url", "image_url": {"url": data_url(b"GIF89a-broken", "image/gif")}},
            ],
        },
    ]
    with pytest.raises(openai.BadRequestError) as info:
        client(server).chat.completions.create(model="tiny", messages=messages)
    assert msg(info.value).startswith("messages[1].content[1]: ")
    assert info.value.body["param"] == "messages[1].content[1]"  # type: ignore[index]


def test_local_paths_and_loopback_urls_are_refused(server: Running, ups: Any) -> None:
    c = client(server)
    with pytest.raises(openai.BadRequestError) as info:
        c.chat.completions.create(model="tiny", messages=image_message("/etc/passwd"))  # type: ignore[arg-type]
    assert msg(info.value).startswith(
        "messages[0].content[1]: an image_url must be a data: URL, an http(s):// URL or the id of a file"
    )
    url = f"http://127.0.0.1:{ups['a'].port}/images/grace_hopper.jpg"
    with pytest.raises(openai.BadRequestError) as fetch:
        c.chat.completions.create(model="tiny", messages=image_message(url))  # type: ignore[arg-type]
    assert msg(fetch.value) == (
        f"messages[0].content[1]: refused {url}: 127.0.0.1 is a loopback address; vlmkit does not fetch loopback, "
        "private, link-local or metadata addresses unless the host is allowed: list the host under "
        "`fetch: allow_hosts:` in the server's YAML config (host names, addresses and CIDR networks) and restart "
        "the server"
    )


def test_image_to_a_text_model_is_a_capability_error(server: Running, hopper_jpeg: bytes) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client(server).chat.completions.create(model="tiny-text", messages=image_message(data_url(hopper_jpeg)))  # type: ignore[arg-type]
    assert "tiny-text" in msg(info.value)
    assert info.value.code == "model_not_vision_capable"


def test_schema_errors_are_422(server: Running) -> None:
    c = client(server)
    with pytest.raises(openai.UnprocessableEntityError) as info:
        c.chat.completions.create(model="tiny", messages="hello")  # type: ignore[arg-type]
    assert msg(info.value) == "messages must be a list of {'role': ..., 'content': ...} objects, not a string"
    with pytest.raises(openai.UnprocessableEntityError) as t:
        c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x"}], temperature="hot")  # type: ignore[arg-type]
    assert t.value.body["param"] == "temperature"  # type: ignore[index]


def test_body_over_the_limit_is_413(server: Running) -> None:
    big = data_url(b"\xff\xd8\xff" + b"\0" * (4 * 1024 * 1024))
    with pytest.raises(openai.APIStatusError) as info:
        client(server).chat.completions.create(model="tiny", messages=image_message(big))  # type: ignore[arg-type]
    assert info.value.status_code == 413
    assert "larger than this server's limit of 3,145,728 bytes" in msg(info.value)


def test_gateway_relays_images_and_answers(server: Running, ups: Any, hopper_jpeg: bytes) -> None:
    r = client(server).chat.completions.create(
        model="gw",
        messages=image_message(data_url(hopper_jpeg)),
        temperature=0.5,
        max_tokens=20,  # type: ignore[arg-type]
    )
    assert r.choices[0].message.content == "a fake answer"
    assert r.model == "gw"
    assert r.usage is not None and r.usage.total_tokens == 14
    sent = ups["a"].requests[-1]
    assert sent["model"] == "up-model"
    assert sent["temperature"] == 0.5
    image = sent["messages"][0]["content"][1]
    assert image["type"] == "image_url"
    assert image["image_url"]["url"].startswith("data:image/jpeg;base64,")
    assert ups["a"].headers[-1]["authorization"] == "Bearer sk-up-a"


def test_gateway_streams(server: Running, ups: Any) -> None:
    stream = client(server).chat.completions.create(
        model="gw", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "afakeanswer"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert {c.model for c in chunks} == {"gw"}
    assert ups["a"].requests[-1]["stream"] is True


def test_gateway_spreads_and_fails_over(server: Running, ups: Any) -> None:
    c = client(server)
    for _ in range(4):
        c.chat.completions.create(model="pair", messages=[{"role": "user", "content": "hi"}])
    assert len(ups["b"].requests) == 2 and len(ups["c"].requests) == 2
    ups["b"].status = 500
    for _ in range(3):
        r = c.chat.completions.create(model="pair", messages=[{"role": "user", "content": "hi"}])
        assert r.choices[0].message.content == "a fake answer"
    assert len(ups["b"].requests) == 3  # tried once, then passed over while cooling down
    assert len(ups["c"].requests) == 5
    ups["c"].status = 503
    with pytest.raises(openai.InternalServerError) as info:
        c.chat.completions.create(model="pair", messages=[{"role": "user", "content": "hi"}])
    assert info.value.status_code == 502
    assert "the upstream failed" in msg(info.value)


def test_gateway_does_not_fail_over_a_bad_request(server: Running, ups: Any) -> None:
    ups["b"].status = ups["c"].status = 400
    ups["b"].error_message = ups["c"].error_message = "Invalid image."
    with pytest.raises(openai.BadRequestError) as info:
        client(server).chat.completions.create(model="pair", messages=[{"role": "user", "content": "hi"}])
    assert "Invalid image." in msg(info.value)
    assert len(ups["b"].requests) + len(ups["c"].requests) == 1
