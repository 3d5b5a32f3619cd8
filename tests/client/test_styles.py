"""The three API styles of issue 4, written as in the issue (the test VLM stands in for the named model)."""

from __future__ import annotations

from pathlib import Path

import pytest

import vlmkit as vk
from tests.client.conftest import KEY, LOAD, Generated

ENDED = {vk.StopReason.EOS_FOUND, vk.StopReason.CONTEXT_LENGTH_REACHED, vk.StopReason.MAX_PREDICTED_TOKENS_REACHED}


def check(prediction: vk.PredictionResult, *, images: int = 1) -> None:
    assert isinstance(prediction.content, str)
    stats = prediction.stats
    assert stats.stop_reason in ENDED
    assert stats.predicted_tokens > 0
    assert stats.prompt_tokens > 0
    assert stats.images_encoded + stats.images_reused == images
    assert stats.tokens_per_second is not None and stats.tokens_per_second > 0
    assert stats.time_to_first_token_sec is not None
    assert prediction.model_info is not None and prediction.model_info.key == KEY
    assert prediction.model_info.vision


def test_convenience_api(generated: Generated, photo: Path) -> None:
    vk.configure_default_client(models_dir=generated.models_dir)  # the test model, "downloaded" as KEY
    vk.llm(KEY, config=LOAD)  # loaded with one thread; the example's vk.llm(...) then finds it loaded

    image_handle = vk.prepare_image(str(photo))
    model = vk.llm("qwen2-vl-2b-instruct")
    chat = vk.Chat()
    chat.add_user_message("Describe this image please", images=[image_handle])
    prediction = model.respond(chat)
    print(prediction.content, prediction.stats.tokens_per_second)

    check(prediction)
    assert [m.key for m in vk.list_downloaded_models()] == [KEY]


@pytest.mark.parametrize("source", ["path", "bytes", "file object"])
def test_convenience_prepare_image_sources(photo: Path, source: str) -> None:
    if source == "path":
        handle = vk.prepare_image(str(photo))
    elif source == "bytes":
        handle = vk.prepare_image(photo.read_bytes())
    else:
        with photo.open("rb") as f:
            handle = vk.prepare_image(f)
    assert handle.mime_type == "image/jpeg"
    assert handle.identifier == vk.prepare_image(photo.read_bytes()).identifier


def test_scoped_resource_api(generated: Generated, photo: Path) -> None:
    chat = vk.Chat()
    with vk.Client() as client:
        client.llm.register("qwen2-vl-2b-instruct", generated.model, generated.mmproj)
        client.llm.model(KEY, config=LOAD)
        image_handle = client.files.prepare_image(str(photo))
        chat.add_user_message("Describe this image please", images=[image_handle])

        model = client.llm.model("qwen2-vl-2b-instruct")
        prediction = model.respond(chat)

        check(prediction)
        assert [m.identifier for m in client.llm.list_loaded()] == [KEY]
    assert client.closed
    with pytest.raises(vk.ClientClosedError, match="client is closed"):
        model.respond(chat)


async def test_asynchronous_api(generated: Generated, photo: Path) -> None:
    chat = vk.Chat()
    async with vk.AsyncClient(models_dir=generated.models_dir) as client:
        await client.llm.model(KEY, config=LOAD)
        image_handle = await client.files.prepare_image(str(photo))
        chat.add_user_message("Describe this image please", images=[image_handle])

        model = await client.llm.model("qwen2-vl-2b-instruct")
        prediction = await model.respond(chat)

        check(prediction)
    with pytest.raises(vk.ClientClosedError):
        await model.respond(chat)
