"""The sync API: streaming, callbacks, cancellation, the fragment timeout, structured output, models."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import BaseModel

import vlmkit as vk
from tests.client.conftest import HELD_SEED, KEY, LOAD, Generated, HeldBackend
from vlmkit.client.backend import CancelToken, FragmentCallback
from vlmkit.client.backends import LocalBackend
from vlmkit.wire.openai_chat import messages_from_chat

SHORT = vk.PredictionConfig(max_tokens=12, seed=HELD_SEED)


@pytest.fixture()
def chat(client: vk.Client, photo: Path) -> vk.Chat:
    chat = vk.Chat("You describe images.")
    chat.add_user_message("Describe this image please", images=[client.files.prepare_image(photo)])
    return chat


def test_stream_gives_fragments_then_the_same_result(model: vk.LLM, chat: vk.Chat) -> None:
    stream = model.respond_stream(chat, config=SHORT)
    fragments = list(stream)
    result = stream.result()

    assert fragments and all(isinstance(f, vk.PredictionFragment) for f in fragments)
    assert "".join(f.content for f in fragments) == result.content
    assert result.stats.stop_reason in (vk.StopReason.MAX_PREDICTED_TOKENS_REACHED, vk.StopReason.EOS_FOUND)
    assert 0 < result.stats.predicted_tokens <= 12
    assert sum(f.tokens_count for f in fragments) <= 12
    assert stream.finished and stream.result() is result


def test_callbacks_see_the_first_token_then_every_fragment(model: vk.LLM, chat: vk.Chat) -> None:
    events: list[object] = []
    result = model.respond(
        chat, config=SHORT, on_first_token=lambda: events.append("first token"), on_prediction_fragment=events.append
    )
    assert events[0] == "first token"
    assert events.count("first token") == 1
    fragments = events[1:]
    assert fragments and "".join(f.content for f in fragments) == result.content  # type: ignore[attr-defined]


def test_a_failing_callback_stops_the_prediction_and_raises(model: vk.LLM, chat: vk.Chat) -> None:
    def boom(fragment: vk.PredictionFragment) -> None:
        raise RuntimeError("callback failed")

    with pytest.raises(RuntimeError, match="callback failed"):
        model.respond(chat, on_prediction_fragment=boom)
    assert model.respond("again", config=SHORT).stats.predicted_tokens <= 12  # the model is free again


def test_cancel_stops_generation_with_user_stopped(generated: Generated, chat: vk.Chat) -> None:
    backend = HeldBackend(KEY, models_dir=generated.models_dir)
    with vk.Client(backend=backend) as client:
        stream = client.llm.model(KEY, config=LOAD).respond_stream(chat)  # no limit: it runs to the context length
        first = next(stream)
        stream.cancel()
        result = stream.result()
    assert result.content.startswith(first.content)
    assert result.stats.stop_reason is vk.StopReason.USER_STOPPED
    assert result.stats.predicted_tokens < 1024


def test_leaving_a_stream_early_cancels_it(generated: Generated, chat: vk.Chat) -> None:
    backend = HeldBackend(KEY, models_dir=generated.models_dir)
    with vk.Client(backend=backend) as client:
        model = client.llm.model(KEY, config=LOAD)
        with model.respond_stream(chat) as stream:
            next(stream)
        assert stream.finished
        assert stream.result().stats.stop_reason is vk.StopReason.USER_STOPPED


class Silent(LocalBackend):
    """Sends nothing until cancelled (a model stuck loading or busy elsewhere)."""

    def __init__(self) -> None:
        super().__init__()
        self.cancelled = threading.Event()

    def load(self, key: str, *, ttl: float | None, options: object) -> vk.ModelInfo:
        return vk.ModelInfo(key, "", None, "llama", 1024, vision=True, size_bytes=0)

    def respond(
        self,
        key: str,
        chat: vk.Chat,
        config: vk.PredictionConfig,
        *,
        on_fragment: FragmentCallback,
        on_first_token: Callable[[], None],
        cancel: CancelToken,
    ) -> vk.PredictionResult:
        cancel.on_cancel(self.cancelled.set)
        self.cancelled.wait(20)
        raise vk.PredictionCancelledError("cancelled")


def test_sync_calls_time_out_between_fragments() -> None:
    backend = Silent()
    with vk.Client(backend=backend, timeout=0.2) as client:
        model = client.llm.model(KEY, config=LOAD)
        with pytest.raises(vk.PredictionTimeoutError, match=r"sent nothing for 0\.2 s.*Client\(timeout=") as info:
            model.respond("hello")
    assert info.value.status_code == 504
    assert backend.cancelled.is_set()  # the stalled prediction was cancelled, not left running


def test_default_fragment_timeout_is_60_seconds_and_settable(generated: Generated) -> None:
    with vk.Client() as client:
        assert client.timeout == 60.0
    vk.configure_default_client(timeout=5.0)
    assert vk.get_default_client().timeout == 5.0


class Answer(BaseModel):
    name: str
    count: int


def test_structured_output_with_a_pydantic_model(model: vk.LLM) -> None:
    result = model.respond(
        "Name one thing and count it.",
        response_format=Answer,
        config={"temperature": 0, "maxTokens": 200},  # LM Studio's camelCase keys work too
    )
    assert result.stats.stop_reason is vk.StopReason.EOS_FOUND  # the grammar closes the JSON
    assert isinstance(result.parsed, Answer)
    assert Answer.model_validate_json(result.content) == result.parsed


def test_structured_output_with_a_json_schema(model: vk.LLM) -> None:
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    config = vk.PredictionConfig(temperature=0, max_tokens=100, response_format=schema)
    result = model.respond("Is it ok?", config=config)
    assert result.stats.stop_reason is vk.StopReason.EOS_FOUND
    assert isinstance(result.parsed, dict) and isinstance(result.parsed["ok"], bool)


def test_follow_up_turn_reuses_the_evaluated_image(model: vk.LLM, chat: vk.Chat) -> None:
    first = model.respond(chat, config=SHORT)
    chat.add_assistant_response(first)
    chat.add_user_message("And the colours?")
    second = model.respond(chat, config=SHORT)
    assert first.stats.images_encoded == 1
    assert second.stats.images_encoded == 0 and second.stats.images_reused == 1
    assert second.stats.cached_prompt_tokens > first.stats.prompt_tokens // 2  # the first turn's prompt, image and all


def test_chat_survives_json_with_image_identity(model: vk.LLM, chat: vk.Chat) -> None:
    first = model.respond(chat, config=SHORT)
    restored = vk.Chat.from_json(chat.to_json())

    assert [i.identifier for i in restored.images] == [i.identifier for i in chat.images]
    assert messages_from_chat(restored) == messages_from_chat(chat)
    again = model.respond(restored, config=SHORT)  # a new Chat object: the engine knows the image by identity
    assert first.stats.images_encoded == 1
    assert again.stats.images_encoded == 0 and again.stats.images_reused == 1


def test_respond_takes_prompts_and_openai_histories(model: vk.LLM, chat: vk.Chat) -> None:
    for history in ("hello", messages_from_chat(chat), {"messages": messages_from_chat(chat)}):
        result = model.respond(history, config=SHORT)
        assert 0 < result.stats.predicted_tokens <= 12


def test_model_info(client: vk.Client, model: vk.LLM, generated: Generated) -> None:
    info = model.get_info()
    assert info.key == KEY and info.vision is True
    assert info.architecture == "llama"
    assert model.get_context_length() == info.context_length == 1024
    assert info.size_bytes == generated.model.stat().st_size + generated.mmproj.stat().st_size

    client.llm.register("text-only", generated.text_model)
    text = client.llm.model("text-only", config=LOAD).get_info()
    assert text.vision is False and text.mmproj_path is None


def test_list_unload_and_reload(client: vk.Client, model: vk.LLM) -> None:
    assert [m.identifier for m in client.llm.list_loaded()] == [KEY]
    [downloaded] = client.list_downloaded_models()
    assert downloaded.key == KEY and downloaded.vision

    client.llm.unload(KEY)
    assert client.llm.list_loaded() == []
    with pytest.raises(vk.ModelNotFoundError, match="not loaded"):
        client.llm.unload(KEY)
    assert model.respond("hi", config=SHORT).stats.predicted_tokens > 0  # the handle loads it again
    assert [m.identifier for m in client.llm.list_loaded()] == [KEY]


def test_no_key_means_the_loaded_or_downloaded_model(client: vk.Client) -> None:
    assert client.llm.model(config=LOAD).identifier == KEY


def test_a_gguf_path_is_a_model_key(client: vk.Client, generated: Generated) -> None:
    model = client.llm.model(generated.model, config=LOAD)  # its mmproj beside it is found
    assert model.get_info().vision


def test_idle_ttl_unloads_and_the_handle_loads_again(client: vk.Client) -> None:
    model = client.llm.model(KEY, ttl=0.05, config=LOAD)
    deadline = time.monotonic() + 20
    while client.llm.list_loaded() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert client.llm.list_loaded() == []  # unloaded by the engine after its idle TTL
    result = model.respond("hi", config=SHORT)  # the handle loads it again
    assert result.stats.predicted_tokens > 0 and result.model_info is not None and result.model_info.key == KEY


def test_closing_the_client_cancels_its_predictions(generated: Generated, chat: vk.Chat) -> None:
    backend = HeldBackend(KEY, models_dir=generated.models_dir)
    client = vk.Client(backend=backend)
    stream = client.llm.model(KEY, config=LOAD).respond_stream(chat)
    next(stream)  # generating, held after its first fragment
    client.close()  # cancels the prediction, then unloads the model
    assert stream.result().stats.stop_reason is vk.StopReason.USER_STOPPED
    assert backend.list_loaded() == []
