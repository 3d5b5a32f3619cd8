"""One embedded engine per process: the SDK and ``completion("local/KEY")`` share the generated test
VLM (one load, one model in memory), and asking whether a local model sees loads nothing.

What is in memory is read from the owner itself (:mod:`vlmkit.engine.owner`: its list of loaded
models and its count of loads), never from a stand-in.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

import vlmkit as vk
from tests.client.conftest import KEY, LOAD, Generated
from vlmkit.client.default import _reset_default_client
from vlmkit.engine import owner
from vlmkit.engine.store import write_manifest

MESSAGES = [{"role": "user", "content": "Say something."}]


def in_memory(key: str) -> int:
    """How many copies of ``key`` this process holds in memory."""
    return [info.key for info in owner.loaded()].count(key)


def test_the_sdk_and_completion_share_one_model(client: vk.Client) -> None:
    model = client.llm.model(KEY, config=LOAD)
    loads = owner.load_count()
    reply = vk.completion(f"local/{KEY}", MESSAGES, max_tokens=2, seed=1)
    chunks = list(vk.completion(f"local/{KEY}", MESSAGES, max_tokens=2, seed=1, stream=True))
    assert reply.usage.completion_tokens <= 2 and chunks[-1].choices[0].finish_reason in ("stop", "length")
    default = vk.llm(KEY, config=LOAD)  # the default client: a third user of the same model
    assert default.respond("hi", config={"maxTokens": 2}).stats.predicted_tokens <= 2
    assert model.respond("hi", config={"maxTokens": 2}).stats.predicted_tokens <= 2
    assert owner.load_count() == loads and in_memory(KEY) == 1

    client.close()  # the default client still holds it
    assert in_memory(KEY) == 1 and [m.identifier for m in vk.list_loaded_models()] == [KEY]
    _reset_default_client()  # the last holder lets go: it unloads
    assert in_memory(KEY) == 0


def test_a_model_completion_loaded_is_the_one_the_sdk_gets(generated: Generated) -> None:
    loads = owner.load_count()
    assert vk.completion(f"local/{KEY}", MESSAGES, max_tokens=1).provider == "local"
    assert owner.load_count() == loads + 1
    with vk.Client(models_dir=generated.models_dir) as client:
        info = client.llm.model(KEY, config=LOAD).get_info()
        assert owner.load_count() == loads + 1 and in_memory(KEY) == 1
        assert info.vision and [m.identifier for m in client.llm.list_loaded()] == [KEY]
    assert in_memory(KEY) == 0  # the client held it last, and closed


async def test_the_async_sdk_and_acompletion_share_one_model(generated: Generated) -> None:
    async with vk.AsyncClient(models_dir=generated.models_dir) as client:
        model = await client.llm.model(KEY, config=LOAD)
        loads = owner.load_count()
        stream = await vk.acompletion(f"local/{KEY}", MESSAGES, max_tokens=3, seed=1, stream=True)
        chunks = [chunk async for chunk in stream]
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens <= 3
        result = await model.respond("hi", config={"maxTokens": 2})
        assert result.stats.predicted_tokens <= 2
        assert owner.load_count() == loads and in_memory(KEY) == 1
    assert in_memory(KEY) == 0


def test_a_key_loaded_from_other_files_is_refused_not_swapped(generated: Generated, client: vk.Client) -> None:
    client.llm.model(KEY, config=LOAD)
    other = generated.home / "other-models"
    directory = other / KEY
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "text.gguf").write_bytes(generated.text_model.read_bytes())
    write_manifest(directory, KEY, "text.gguf", None, repo=None)
    with vk.Client(models_dir=other) as elsewhere, pytest.raises(vk.ModelLoadError) as info:
        elsewhere.llm.model(KEY, config=LOAD)
    message = str(info.value)
    assert f"model {KEY!r} is already loaded in this process from {generated.model}" in message
    assert "unload it first, or load this one under another key" in message


@pytest.fixture()
def threads_started(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[threading.Thread]]:
    """Every thread started while the test runs (``Thread.start`` is observed, and still starts it)."""
    started: list[threading.Thread] = []
    real_start = threading.Thread.start

    def start(thread: threading.Thread) -> None:
        started.append(thread)
        real_start(thread)

    monkeypatch.setattr(threading.Thread, "start", start)
    yield started


def test_supports_vision_reads_the_files_and_loads_nothing(
    generated: Generated, threads_started: list[threading.Thread]
) -> None:
    running, loads = threading.active_count(), owner.load_count()
    assert vk.supports_vision(f"local/{KEY}") is True  # downloaded, with a vision projector
    assert vk.supports_vision(f"local/{generated.text_model}") is False  # a text model's file
    assert vk.supports_vision("local/no-such-model") is False
    assert owner.load_count() == loads and in_memory(KEY) == 0
    assert threads_started == [] and threading.active_count() <= running


def test_vlmkit_ls_reads_the_files_and_loads_nothing(
    threads_started: list[threading.Thread], capsys: pytest.CaptureFixture[str]
) -> None:
    from vlmkit.cli import main

    loads = owner.load_count()
    assert main(["ls"]) == 0
    header, *rows, where = capsys.readouterr().out.splitlines()
    assert header.split()[:3] == ["KEY", "SIZE", "VISION"] and where.startswith("models run on: ")
    assert [(row.split()[0], row.split()[2]) for row in rows] == [(KEY, "yes")]
    assert owner.load_count() == loads and in_memory(KEY) == 0 and threads_started == []
