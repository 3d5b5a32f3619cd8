"""Errors: one hierarchy (``vk.VlmkitError``), each with a type AND a message that says what to do."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import vlmkit as vk
from tests.client.conftest import KEY, LOAD, Generated
from tests.conftest import photo_path
from vlmkit.errors import InvalidSettingError


@pytest.fixture()
def client(generated: Generated) -> Iterator[vk.Client]:
    with vk.Client(models_dir=generated.models_dir) as client:
        yield client


def test_unknown_model_key(client: vk.Client) -> None:
    with pytest.raises(vk.ModelNotFoundError, match=r"'no-such-model' is not downloaded.*catalog key") as info:
        client.llm.model("no-such-model")
    assert info.value.status_code == 404


@pytest.mark.parametrize("path", ["/nope/model.gguf", "models/nope.gguf", "~/nope/dir/model", "./nope"])
def test_a_model_path_that_does_not_exist_says_to_fix_it(client: vk.Client, path: str) -> None:
    with pytest.raises(vk.ModelNotFoundError) as info:
        client.llm.model(path)
    shown = Path(path).expanduser()
    assert str(info.value) == (
        f"the model file {shown} does not exist; fix the path, or name a downloaded model (`vlmkit ls`)"
    )
    assert "vlmkit get" not in str(info.value)


def test_catalog_model_not_downloaded_says_how_to_get_it(client: vk.Client) -> None:
    with pytest.raises(vk.ModelNotFoundError, match=r"run `vlmkit get smolvlm-256m` first"):
        client.llm.model("smolvlm-256m")


def test_image_to_a_text_only_model(client: vk.Client, generated: Generated, photo: Path) -> None:
    client.llm.register("text-only", generated.text_model)
    model = client.llm.model("text-only", config=LOAD)
    chat = vk.Chat()
    chat.add_user_message("What is this?", images=[client.files.prepare_image(photo)])
    with pytest.raises(vk.ModelCapabilityError, match=r"'text-only' does not support images.*use a vision") as info:
        model.respond(chat)
    assert info.value.model == "text-only"
    assert info.value.status_code == 400
    assert model.respond("text is fine", config={"maxTokens": 4}).stats.predicted_tokens > 0


@pytest.mark.parametrize(
    ("history", "message"),
    [
        (42, "cannot make a chat from a int"),
        ({"history": []}, "needs a 'messages' list"),
        (
            [{"role": "robot", "content": "hi"}],
            r"messages\[0\]\.role: role must be 'system', 'developer', 'user', 'assistant' or 'tool'",
        ),
        ([{"role": "user", "content": [{"type": "audio"}]}], r"messages\[0\]\.content\[0\]: unknown content part type"),
    ],
)
def test_bad_chat_input(client: vk.Client, history: object, message: str) -> None:
    model = client.llm.model(KEY, config=LOAD)
    with pytest.raises(vk.InvalidMessageError, match=message) as info:
        model.respond(history)  # type: ignore[arg-type]
    assert info.value.status_code == 400


def test_a_path_where_an_image_handle_belongs(photo: Path) -> None:
    chat = vk.Chat()
    with pytest.raises(vk.InvalidMessageError, match=r"images\[0\] is a str.*vk\.prepare_image"):
        chat.add_user_message("What is this?", images=[str(photo)])  # type: ignore[list-item]


async def test_an_image_not_awaited_is_told_to_await(generated: Generated, photo: Path) -> None:
    async with vk.AsyncClient(models_dir=generated.models_dir) as client:
        pending = client.files.prepare_image(photo)
        chat = vk.Chat()
        with pytest.raises(vk.InvalidMessageError) as info:
            chat.add_user_message("What is this?", images=[pending])  # type: ignore[list-item]
        assert str(info.value) == (
            "images[0] is a coroutine, not an image handle: await client.files.prepare_image(...) first "
            "(the async client's methods are coroutines)"
        )
        assert len(chat) == 0  # nothing half-added
        chat.add_user_message("What is this?", images=[await pending])
        assert chat.images[0].width == 512


def test_not_an_image(client: vk.Client) -> None:
    with pytest.raises(vk.ImageError):
        client.files.prepare_image(b"%PDF-1.7 not an image")
    with pytest.raises(vk.ImageSourceError):
        client.files.prepare_image("/no/such/photo.jpg")


def test_bad_prediction_settings(client: vk.Client) -> None:
    model = client.llm.model(KEY, config=LOAD)
    with pytest.raises(InvalidSettingError, match="unknown prediction setting 'maxTokenz'"):
        model.respond("hi", config={"maxTokenz": 4})
    with pytest.raises(
        InvalidSettingError, match="response_format must be a JSON schema dict or a pydantic model class"
    ):
        model.respond("hi", response_format=42)
    with pytest.raises(InvalidSettingError, match="unknown load setting 'ctx'"):
        client.llm.model(KEY, config={"ctx": 4})


def test_configure_default_client_too_late() -> None:
    vk.configure_default_client(timeout=30)  # before first use: fine, and may be repeated
    vk.prepare_image(photo_path("coffee.png"))  # needs no client
    vk.configure_default_client(timeout=30)
    vk.list_downloaded_models()  # the default client is made here
    too_late = r"already in use.*configure_default_client\(\.\.\.\) first"
    with pytest.raises(vk.DefaultClientAlreadyCreatedError, match=too_late):
        vk.configure_default_client(timeout=10)
    assert vk.get_default_client().timeout == 30


def test_closed_client(generated: Generated) -> None:
    client = vk.Client(models_dir=generated.models_dir)
    client.close()
    client.close()
    with pytest.raises(vk.ClientClosedError, match=r"closed; create a new vk\.Client"):
        client.llm.model(KEY)


def test_remote_host_that_is_not_there() -> None:
    from vlmkit.errors import APIConnectionError

    with vk.Client("http://127.0.0.1:1") as client, pytest.raises(APIConnectionError) as info:
        client.llm.list_loaded()
    assert str(info.value).startswith("cannot reach the vlmkit server at http://127.0.0.1:1: ")
    assert str(info.value).endswith("is `vlmkit serve` running there?")


def test_one_hierarchy() -> None:
    for error in (
        vk.ModelNotFoundError,
        vk.ModelCapabilityError,
        vk.ImageError,
        vk.PredictionTimeoutError,
        vk.PredictionCancelledError,
        vk.InvalidMessageError,
        vk.ClientClosedError,
        vk.DefaultClientAlreadyCreatedError,
    ):
        assert issubclass(error, vk.VlmkitError)
