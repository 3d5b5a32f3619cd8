"""``model.prepare(image)``: an image encoded ahead of the question, so that the question encodes nothing."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import vlmkit as vk
from tests.client.conftest import KEY, Generated

# the in-memory cache of embeddings only: a reload then encodes the image again, from scratch
NO_DISK = {"cpuThreads": 1, "encoderCacheMb": 0}
GREEDY = vk.PredictionConfig(temperature=0, max_tokens=8)


def noise_png(seed: int) -> bytes:
    """A picture no other test uses, so no cache holds its embeddings before this test makes them."""
    pixels = np.random.default_rng(seed).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG")
    return out.getvalue()


def test_a_prepared_image_is_not_encoded_again_and_answers_the_same(client: vk.Client) -> None:
    model = client.llm.model(KEY, config=NO_DISK)
    image = client.files.prepare_image(noise_png(1), "noise.png")
    first = model.prepare(image)
    assert first.image_tokens > 0 and first.already_cached is False
    assert first.image_size == "64x48"
    assert model.prepare(image) == vk.PreparedImageInfo(first.image_tokens, "64x48", already_cached=True)

    chat = vk.Chat()
    chat.add_user_message("Describe this image please", images=[image])
    prepared = model.respond(chat, config=GREEDY)
    assert (prepared.stats.images_encoded, prepared.stats.images_reused) == (0, 1)
    assert prepared.stats.image_tokens == first.image_tokens

    model.unload()  # loads again on the next call, with nothing cached
    cold = model.respond(chat, config=GREEDY)
    assert cold.stats.images_encoded == 1
    assert (cold.content, cold.stats.predicted_tokens) == (prepared.content, prepared.stats.predicted_tokens)


def test_prepare_reads_a_path_and_keeps_to_the_budget(client: vk.Client, photo: Path) -> None:
    model = client.llm.model(KEY, config=NO_DISK)
    low = model.prepare(photo, detail="low")
    assert low.already_cached is False and max(int(n) for n in low.image_size.split("x")) <= 512
    chat = vk.Chat()
    chat.add_user_message("Describe", images=[client.files.prepare_image(photo)])
    result = model.respond(chat, config=vk.PredictionConfig(max_tokens=2, detail="low"))
    assert (result.stats.images_encoded, result.stats.images_preprocessed) == (0, 0)


def test_bad_budgets_and_models_without_an_encoder_here_are_refused(
    client: vk.Client, generated: Generated, photo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = client.llm.model(KEY, config=NO_DISK)
    with pytest.raises(vk.InvalidSettingError) as bad:
        model.prepare(photo, image_max_tokens=0)
    assert bad.value.location == "image_max_tokens"
    assert bad.value.message == "image_max_tokens must be at least 1, not 0"
    with pytest.raises(vk.InvalidSettingError) as crossed:
        model.prepare(photo, image_min_tokens=50, image_max_tokens=10)
    assert crossed.value.location == "image_min_tokens"

    client.llm.register("text-only", generated.text_model)
    with pytest.raises(vk.ModelCapabilityError) as text:
        client.llm.model("text-only", config={"cpuThreads": 1}).prepare(photo)
    assert "does not support images" in text.value.message and "mmproj" in text.value.message

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")  # a handle needs a key; prepare sends nothing
    with pytest.raises(vk.ModelCapabilityError) as provider:
        client.llm.model("openai/gpt-4o").prepare(photo)
    assert provider.value.message.startswith("prepare() is not supported for 'openai/gpt-4o'")
    assert "send the image with the question" in provider.value.message


async def test_async_prepare(generated: Generated) -> None:
    async with vk.AsyncClient(models_dir=generated.models_dir) as client:
        model = await client.llm.model(KEY, config=NO_DISK)
        image = await client.files.prepare_image(noise_png(2), "noise.png")
        first = await model.prepare(image, image_max_tokens=4096)
        assert first.already_cached is False
        chat = vk.Chat()
        chat.add_user_message("Describe this image please", images=[image])
        result = await model.respond(chat, config=vk.PredictionConfig(max_tokens=2, image_max_tokens=4096))
        assert result.stats.images_encoded == 0 and result.stats.image_tokens == first.image_tokens
