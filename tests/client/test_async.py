"""The async API: streams, cancellation, and the event loop kept free while models work."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import vlmkit as vk
from tests.client.conftest import HELD_SEED, KEY, LOAD, Generated, HeldBackend
from tests.conftest import ImageServer, loop_must_not_block
from vlmkit.images.fetch import FetchOptions

SHORT = vk.PredictionConfig(max_tokens=12, seed=HELD_SEED)
LIMIT = 20  # seconds: only so that a broken test fails instead of hanging


@pytest.fixture()
async def client(generated: Generated) -> AsyncIterator[vk.AsyncClient]:
    async with vk.AsyncClient(models_dir=generated.models_dir) as client:
        yield client


async def image_chat(client: vk.AsyncClient, photo: Path) -> vk.Chat:
    chat = vk.Chat()
    chat.add_user_message("Describe this image please", images=[await client.files.prepare_image(photo)])
    return chat


async def test_async_stream_fragments_and_result(client: vk.AsyncClient, photo: Path) -> None:
    model = await client.llm.model(KEY, config=LOAD)
    first_token: list[bool] = []
    stream = await model.respond_stream(
        await image_chat(client, photo), config=SHORT, on_first_token=lambda: first_token.append(True)
    )
    fragments = [fragment async for fragment in stream]
    result = stream.result()
    assert first_token == [True]
    assert fragments and "".join(f.content for f in fragments) == result.content
    assert result.stats.stop_reason in (vk.StopReason.MAX_PREDICTED_TOKENS_REACHED, vk.StopReason.EOS_FOUND)
    assert result.stats.images_encoded == 1


async def test_result_before_the_end_is_an_error(client: vk.AsyncClient) -> None:
    model = await client.llm.model(KEY, config=LOAD)
    async with await model.respond_stream("hi", config=SHORT) as stream:
        with pytest.raises(RuntimeError, match="has not finished"):
            stream.result()
        assert (await stream.wait_for_result()).stats.predicted_tokens > 0


async def test_cancel_an_async_stream(generated: Generated, photo: Path) -> None:
    backend = HeldBackend(KEY, models_dir=generated.models_dir)
    async with vk.AsyncClient(backend=backend) as client:
        model = await client.llm.model(KEY, config=LOAD)
        stream = await model.respond_stream(await image_chat(client, photo))  # no limit: runs to the context length
        await anext(stream)
        await stream.cancel()
        result = await asyncio.wait_for(stream.wait_for_result(), LIMIT)
    assert result.stats.stop_reason is vk.StopReason.USER_STOPPED


async def test_cancelling_the_task_cancels_the_prediction(generated: Generated) -> None:
    backend = HeldBackend(KEY, models_dir=generated.models_dir)
    async with vk.AsyncClient(backend=backend) as client:
        model = await client.llm.model(KEY, config=LOAD)
        task = asyncio.create_task(model.respond("tell me everything"))
        held = await asyncio.to_thread(backend.holding.wait, LIMIT)  # generating, held after its first fragment
        assert held, f"the prediction was never held; it ended with {task.result() if task.done() else 'nothing'!r}"
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert backend.release.is_set()  # the cancellation reached the engine's prediction
        backend.held_key = ""
        result = await asyncio.wait_for(model.respond("next", config=SHORT), LIMIT)  # and the model is free
        assert result.stats.predicted_tokens > 0


async def test_the_event_loop_keeps_serving_while_a_prediction_runs(generated: Generated, photo: Path) -> None:
    # The prediction is held mid-generation until a ticker task on the same loop has ticked five
    # times: if respond() blocked the loop, the ticker could never tick and the test would fail.
    backend = HeldBackend(KEY, models_dir=generated.models_dir)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.001)
            if backend.holding.is_set():  # count only the ticks while the prediction is in progress
                ticks += 1
                if ticks >= 5:
                    backend.release.set()

    async with vk.AsyncClient(backend=backend) as client:
        model = await client.llm.model(KEY, config=LOAD)
        chat = await image_chat(client, photo)
        ticking = asyncio.create_task(ticker())
        try:
            result = await asyncio.wait_for(model.respond(chat, config=SHORT), LIMIT)
        finally:
            ticking.cancel()
    assert ticks >= 5
    assert result.stats.predicted_tokens > 0


async def test_ticker_runs_during_an_unheld_prediction(client: vk.AsyncClient, photo: Path) -> None:
    model = await client.llm.model(KEY, config=LOAD)
    chat = await image_chat(client, photo)
    ticks = 0
    during: list[int] = []

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0)
            ticks += 1

    ticking = asyncio.create_task(ticker())
    try:
        await asyncio.sleep(0)
        start = ticks
        result = await model.respond(chat, on_first_token=lambda: during.append(ticks - start))
        during.append(ticks - start)
    finally:
        ticking.cancel()
    assert result.stats.stop_reason in (vk.StopReason.CONTEXT_LENGTH_REACHED, vk.StopReason.EOS_FOUND)
    assert during[-1] > 10  # a blocking call would leave the ticker at 0


async def test_two_models_predict_at_the_same_time(generated: Generated, photo: Path) -> None:
    # Model A is held mid-prediction; model B must answer completely meanwhile. A client that ran
    # predictions one after another (or on the loop) could not finish B before A is released.
    backend = HeldBackend("model-a", models_dir=generated.models_dir)
    async with vk.AsyncClient(backend=backend) as client:
        await client.llm.register("model-a", generated.model, generated.mmproj)
        await client.llm.register("model-b", generated.model, generated.mmproj)
        a, b = await asyncio.gather(client.llm.model("model-a", config=LOAD), client.llm.model("model-b", config=LOAD))
        chat = await image_chat(client, photo)

        task_a = asyncio.create_task(a.respond(chat, config=SHORT))
        await asyncio.to_thread(backend.holding.wait, LIMIT)
        result_b = await asyncio.wait_for(b.respond(chat, config=SHORT), LIMIT)
        assert not task_a.done()  # A is still in its prediction while B has finished
        backend.release.set()
        result_a = await asyncio.wait_for(task_a, LIMIT)

    assert result_a.model_info is not None and result_a.model_info.key == "model-a"
    assert result_b.model_info is not None and result_b.model_info.key == "model-b"
    # two models of one projector file: B reads the embeddings A encoded (the encoder cache on disk)
    assert (result_a.stats.images_encoded, result_b.stats.images_encoded, result_b.stats.images_reused) == (1, 0, 1)


async def test_concurrent_calls_on_two_models(client: vk.AsyncClient, generated: Generated, photo: Path) -> None:
    await client.llm.register("model-b", generated.model, generated.mmproj)
    a = await client.llm.model(KEY, config=LOAD)
    b = await client.llm.model("model-b", config=LOAD)
    chat = await image_chat(client, photo)
    results = await asyncio.gather(*(m.respond(chat, config=SHORT) for m in (a, b, a, b)))
    assert [r.model_info.key for r in results if r.model_info] == [KEY, "model-b", KEY, "model-b"]


async def test_async_model_management(client: vk.AsyncClient) -> None:
    model = await client.llm.model(KEY, config=LOAD)
    info = await model.get_info()
    assert info.vision and await model.get_context_length() == 1024
    assert [m.identifier for m in await client.llm.list_loaded()] == [KEY]
    assert [m.key for m in await client.list_downloaded_models()] == [KEY]
    await model.unload()
    assert await client.llm.list_loaded() == []
    with pytest.raises(vk.ModelNotFoundError):
        await client.llm.unload(KEY)
    with pytest.raises(vk.ModelNotFoundError, match="'nope'"):
        await client.llm.model("nope")


async def test_closing_the_async_client_cancels_its_predictions(generated: Generated) -> None:
    backend = HeldBackend(KEY, models_dir=generated.models_dir)
    client = vk.AsyncClient(backend=backend)
    model = await client.llm.model(KEY, config=LOAD)
    stream = await model.respond_stream("tell me everything")
    await anext(stream)
    await asyncio.wait_for(client.aclose(), LIMIT)
    result = await asyncio.wait_for(stream.wait_for_result(), LIMIT)
    assert result.stats.stop_reason is vk.StopReason.USER_STOPPED


async def test_an_image_url_in_openai_messages_is_fetched_off_the_event_loop(
    generated: Generated, image_server: ImageServer
) -> None:
    # The image server waits a second before it answers. Fetched on the event loop (as the SDK once
    # did while reading OpenAI-style messages), that second would be one step of the loop: asyncio's
    # debug mode records every step longer than the limit, and a ticker would stop ticking.
    image_server.delay = 1.0
    allow = FetchOptions(allow_hosts=frozenset({"127.0.0.1"}))
    messages = [{"role": "user", "content": [{"type": "text", "text": "What is this?"}, image_url(image_server.url())]}]
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    async with vk.AsyncClient(models_dir=generated.models_dir, fetch=allow) as client:
        model = await client.llm.model(KEY, config=LOAD)
        ticking = asyncio.create_task(ticker())
        try:
            async with loop_must_not_block(0.5) as slow:
                result = await asyncio.wait_for(model.respond(messages, config=SHORT), LIMIT)
        finally:
            ticking.cancel()
    assert slow == []
    assert ticks > 20  # about a hundred while the image was on its way
    assert image_server.served == ["/grace_hopper.jpg"] and result.stats.images_encoded == 1


async def test_an_image_url_is_refused_without_the_clients_allow_list(
    generated: Generated, image_server: ImageServer
) -> None:
    messages = [{"role": "user", "content": [image_url(image_server.url())]}]
    async with vk.AsyncClient(models_dir=generated.models_dir) as client:
        model = await client.llm.model(KEY, config=LOAD)
        with pytest.raises(vk.ImageFetchError) as err:
            await model.respond(messages, config=SHORT)
    assert err.value.message.startswith(
        f"messages[0].content[0]: refused {image_server.url()}: 127.0.0.1 is a loopback"
    )
    assert image_server.served == []


def image_url(url: str) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url}}
