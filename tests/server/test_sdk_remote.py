"""The SDK's three API styles unchanged against the server: ``vk.Client("http://host:port")``,
``prepare_image`` uploading through ``/v1/files`` once, cancellation and errors."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import vlmkit as vk
from tests.conftest import photo_path
from tests.server.conftest import API_KEY, Running, start_server
from vlmkit.client.default import _reset_default_client
from vlmkit.errors import AuthenticationError, ClientError, ModelCapabilityError, ModelNotFoundError, QueueFullError
from vlmkit.server import LocalModel, ServerSettings

KEY = "qwen2-vl-2b-instruct"
PHOTO = photo_path("grace_hopper.jpg")
SHORT = {"maxTokens": 6, "temperature": 0}


@pytest.fixture()
def remote(settings: ServerSettings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Running]:
    tiny = settings.local["tiny"]
    local = {**settings.local, KEY: LocalModel(KEY, tiny.path, tiny.mmproj)}
    running = start_server(settings.with_overrides(local=local))
    monkeypatch.setenv("VLMKIT_API_KEY", API_KEY)
    _reset_default_client()
    yield running
    _reset_default_client()
    running.stop()


def check(prediction: vk.PredictionResult, running: Running, *, encoded: int = 1) -> None:
    assert isinstance(prediction.content, str)
    assert prediction.content == running.results[-1].content
    stats = prediction.stats
    assert stats.stop_reason is vk.StopReason.MAX_PREDICTED_TOKENS_REACHED
    assert stats.predicted_tokens == 6
    assert stats.prompt_tokens > 10
    assert stats.images_encoded == encoded
    assert stats.tokens_per_second is not None and stats.tokens_per_second > 0
    assert prediction.model_info is not None and prediction.model_info.key == KEY and prediction.model_info.vision


def test_images_the_server_forgot_are_uploaded_again(remote: Running) -> None:
    with vk.Client(remote.url) as client:
        model = client.llm.model(KEY)
        chat = vk.Chat()
        chat.add_user_message("Describe this image please", images=[vk.prepare_image(str(PHOTO))])
        check(model.respond(chat, config=SHORT), remote)
        for stored in remote.state.files.list():  # as after a restart without files_dir
            remote.state.files.delete(stored.id)
        chat.add_user_message("And again?")
        model.respond(chat, config=SHORT)  # answered file_not_found, then sent again
        assert len(remote.state.files.list()) == 1


def test_convenience_api(remote: Running) -> None:
    vk.configure_default_client(remote.url)
    image_handle = vk.prepare_image(str(PHOTO))  # the image layer's own: no client, so no upload yet
    model = vk.llm(KEY)
    chat = vk.Chat()
    chat.add_user_message("Describe this image please", images=[image_handle])
    prediction = model.respond(chat, config=SHORT)
    check(prediction, remote)
    assert [f.image.identifier for f in remote.state.files.list()] == [image_handle.identifier]  # uploaded on use
    chat.add_assistant_response(prediction)
    chat.add_user_message("And the colours?")
    follow_up = model.respond(chat, config=SHORT)
    check(follow_up, remote, encoded=0)  # the image was not sent again, nor encoded again
    assert len(remote.state.files.list()) == 1
    listing = {m.key: m for m in vk.list_downloaded_models()}
    assert listing[KEY].vision and listing[KEY].architecture == "llama" and listing[KEY].context_length == 4096


def test_scoped_resource_api(remote: Running) -> None:
    chat = vk.Chat()
    with vk.Client(remote.url) as client:
        image_handle = client.files.prepare_image(str(PHOTO))
        model = client.llm.model(KEY)
        chat.add_user_message("Describe this image please", images=[image_handle])
        prediction = model.respond(chat, config=SHORT)
        check(prediction, remote)
        assert [m.identifier for m in client.llm.list_loaded()] == [KEY]
        client.llm.unload(KEY)
        assert client.llm.list_loaded() == []


async def test_async_api(remote: Running) -> None:
    chat = vk.Chat()
    async with vk.AsyncClient(remote.url) as client:
        image_handle = await client.files.prepare_image(str(PHOTO))
        model = await client.llm.model(KEY)
        chat.add_user_message("Describe this image please", images=[image_handle])
        prediction = await model.respond(chat, config=SHORT)
        check(prediction, remote)
        fragments = []
        stream = await model.respond_stream(chat, config=SHORT)
        async for fragment in stream:
            fragments.append(fragment.content)
        assert "".join(fragments) == remote.results[-1].content


def test_images_not_prepared_first_are_uploaded_on_use(remote: Running, tmp_path: Path) -> None:
    with vk.Client(remote.url) as client:
        chat = vk.Chat()
        chat.add_user_message("What is this?", images=[vk.prepare_image(PHOTO.read_bytes())])
        client.llm.model(KEY).respond(chat, config=SHORT)
        assert len(remote.state.files.list()) == 1


def test_cancel_stops_the_server_side_generation(settings: ServerSettings, monkeypatch: pytest.MonkeyPatch) -> None:
    running = start_server(settings, fragment_delay=0.02)
    monkeypatch.setenv("VLMKIT_API_KEY", API_KEY)
    try:
        with vk.Client(running.url) as client:
            stream = client.llm.model("tiny").respond_stream(
                "Talk at length.", config={"maxTokens": 3000, "temperature": 0}
            )
            for i, _ in enumerate(stream):
                if i == 2:
                    stream.cancel()
            result = stream.result()
        assert result.stats.stop_reason is vk.StopReason.USER_STOPPED
        end = time.monotonic() + 20
        while not running.results:  # the server notices the closed connection and stops the engine
            assert time.monotonic() < end, "the server-side generation did not stop"
            time.sleep(0.02)
        assert running.results[-1].stats.stop_reason is vk.StopReason.USER_STOPPED
        assert running.results[-1].stats.predicted_tokens < 3000
    finally:
        running.stop()


def test_errors_over_the_wire(remote: Running, monkeypatch: pytest.MonkeyPatch) -> None:
    with vk.Client(remote.url) as client:
        with pytest.raises(ModelNotFoundError) as missing:
            client.llm.model("nope")
        assert str(missing.value).startswith("the model 'nope' does not exist on this server; served: ")
        text_model = client.llm.model("tiny-text")
        chat = vk.Chat()
        chat.add_user_message("Look", images=[client.files.prepare_image(str(PHOTO))])
        with pytest.raises(ModelCapabilityError) as capability:
            text_model.respond(chat, config=SHORT)
        assert "model 'tiny-text' does not support images" in str(capability.value)
        with pytest.raises(vk.InvalidImageError) as bad:  # checked here, before any upload
            client.files.prepare_image(b"GIF89a" + b"\0" * 10)
        assert str(bad.value) == "the GIF data ends without its trailer: it is truncated"
        assert len(remote.state.files.list()) == 1


def test_the_key_is_an_argument_or_the_variable(remote: Running, monkeypatch: pytest.MonkeyPatch) -> None:
    url = remote.url
    said = "(the server said: the API key is not valid for this server)"
    monkeypatch.delenv("VLMKIT_API_KEY")
    with vk.Client(url) as client, pytest.raises(AuthenticationError) as missing:
        client.llm.list_loaded()
    assert str(missing.value) == (
        f"the vlmkit server at {url} needs an API key: pass vk.Client({url!r}, api_key=...) or set VLMKIT_API_KEY "
        "(the server said: no API key given: send 'Authorization: Bearer <key>' (or 'x-api-key: <key>'))"
    )
    assert missing.value.status_code == 401
    with vk.Client(url, api_key=API_KEY) as client:
        assert client.llm.list_loaded() == []
    with vk.Client(url, api_key="sk-wrong") as client, pytest.raises(AuthenticationError) as wrong:
        client.llm.model(KEY)
    assert str(wrong.value) == (
        f"the vlmkit server at {url} refused the key from api_key=: pass the key it was started with (`vlmkit serve "
        f"--api-key`, or its config's api_keys) as vk.Client(..., api_key=...) or in VLMKIT_API_KEY {said}"
    )
    monkeypatch.setenv("VLMKIT_API_KEY", "sk-wrong")
    with vk.Client(url) as client, pytest.raises(AuthenticationError) as from_env:
        client.llm.list_loaded()
    assert f"at {url} refused the key from VLMKIT_API_KEY: pass the key it was started with" in str(from_env.value)
    with vk.Client(url, api_key=API_KEY) as client:  # the argument wins over the variable
        assert client.llm.list_loaded() == []
    vk.configure_default_client(url, api_key=API_KEY)
    assert KEY in {m.key for m in vk.list_downloaded_models()}


async def test_the_async_client_takes_the_key(remote: Running, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VLMKIT_API_KEY")
    async with vk.AsyncClient(remote.url, api_key=API_KEY) as client:
        assert KEY in {m.key for m in await client.list_downloaded_models()}
    async with vk.AsyncClient(remote.url) as client:
        with pytest.raises(
            AuthenticationError, match=r"needs an API key: pass vk.Client\(.*api_key=...\) or set VLMKIT"
        ):
            await client.llm.list_loaded()


def test_a_key_without_a_server_is_refused() -> None:
    with pytest.raises(ClientError) as info:
        vk.Client(api_key="sk-anything")
    assert str(info.value).startswith(
        "api_key= is the key of a vlmkit server: pass it with the server's address, vk.Client('http://HOST:PORT', "
        "api_key=...). The in-process engine needs no key"
    )


def test_full_queue_is_queue_full_error(settings: ServerSettings, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.server.test_lifecycle import _hold_model

    running = start_server(settings.with_overrides(max_queue=0))
    monkeypatch.setenv("VLMKIT_API_KEY", API_KEY)
    try:
        _, release = _hold_model(running)
        with vk.Client(running.url) as client, pytest.raises(QueueFullError) as info:
            client.llm.model("tiny").respond("hi", config=SHORT)
        assert info.value.retry_after >= 1
        assert str(info.value).startswith("model 'tiny' is busy and 0 requests are already waiting")
        release.set()
    finally:
        running.stop()


def test_config_detail_crosses_the_wire(remote: Running, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = remote.state.local.lease
    seen: list[tuple[vk.Chat, vk.PredictionConfig]] = []
    respond = engine.respond

    def spy(*args: Any, **kwargs: Any) -> vk.PredictionResult:  # records what reached the engine, runs it
        every = [*args, *kwargs.values()]
        chat = next(a for a in every if isinstance(a, vk.Chat))
        seen.append((chat, next(a for a in every if isinstance(a, vk.PredictionConfig))))
        return respond(*args, **kwargs)

    monkeypatch.setattr(engine, "respond", spy)
    with vk.Client(remote.url) as client:
        model = client.llm.model(KEY)
        for detail in (16, "low"):
            chat = vk.Chat()
            chat.add_user_message("Describe this image please", images=[client.files.prepare_image(PHOTO)])
            model.respond(chat, config={**SHORT, "detail": detail})
    (_, capped), (low_chat, low) = seen
    assert capped.detail == 16  # the token cap reached the server's engine
    assert low.detail is None and low_chat.messages[-1].content[-1].detail == "low"  # 'low' went on the image


def test_prepare_is_refused_through_a_server_and_says_how_to_get_it(remote: Running) -> None:
    with vk.Client(remote.url) as client, pytest.raises(ModelCapabilityError) as refused:
        client.llm.model(KEY).prepare(PHOTO)
    assert refused.value.message.startswith(f"prepare() is not supported for {KEY!r} through a server")
    assert "POST /v1/files with a 'model' field" in refused.value.message
