"""A full queue is 429 with Retry-After; a client that goes away mid-stream stops its generation; a
graceful shutdown cancels what still runs and unloads the models."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import openai
import pytest

import vlmkit as vk
from tests.server.conftest import API_KEY, Running, start_server
from vlmkit.engine import owner
from vlmkit.prediction import PredictionConfig, PredictionFragment, StopReason
from vlmkit.server import ServerSettings

AUTH = {"Authorization": f"Bearer {API_KEY}"}
# greedy: the random-weight model then never meets its end-of-sequence token on this prompt (sampling may)
LONG = {
    "model": "tiny",
    "messages": [{"role": "user", "content": "Talk at length."}],
    "max_tokens": 3000,
    "temperature": 0,
}


def _wait_for(cond: Any, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "condition not met in time"
        time.sleep(0.01)


def _hold_model(running: Running) -> tuple[threading.Thread, threading.Event]:
    """Keep the local model 'tiny' busy (a prediction blocked in its first fragment) until released."""
    started, release = threading.Event(), threading.Event()

    def on_fragment(_: PredictionFragment) -> None:
        started.set()
        release.wait(20)

    engine = running.state.local.lease
    t = threading.Thread(
        target=engine.respond,
        args=("tiny", "hold", PredictionConfig(max_tokens=2)),
        kwargs={"on_fragment": on_fragment},
        daemon=True,
    )
    t.start()
    assert started.wait(20)
    return t, release


def test_full_queue_is_429_with_retry_after(settings: ServerSettings) -> None:
    running = start_server(settings.with_overrides(max_queue=0))
    try:
        holder, release = _hold_model(running)
        c = openai.OpenAI(base_url=running.base, api_key=API_KEY, max_retries=0)
        with pytest.raises(openai.RateLimitError) as info:
            c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=2)
        assert info.value.status_code == 429
        assert int(info.value.response.headers["retry-after"]) >= 1
        assert info.value.code == "queue_full"
        body: Any = info.value.body
        assert body["message"].startswith("model 'tiny' is busy and 0 requests are already waiting")
        with pytest.raises(openai.RateLimitError):  # streaming too: refused before the stream starts
            c.chat.completions.create(
                model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=2, stream=True
            )
        release.set()
        holder.join(20)
        r = c.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=2, temperature=0
        )
        assert r.usage is not None and r.usage.completion_tokens == 2
    finally:
        running.stop()


def test_the_server_and_the_sdk_share_a_model_and_the_server_keeps_its_queue(settings: ServerSettings) -> None:
    """One engine per process: an SDK client here gets the model the server loaded (no second load),
    and while it is busy the server's own bound (no one waits) still answers 429, while the SDK's
    caller waits its turn in the engine's queue."""
    running = start_server(settings.with_overrides(max_queue=0))
    replies: list[vk.PredictionResult] = []
    try:
        holder, release = _hold_model(running)
        loads = owner.load_count()
        with vk.Client() as client:
            model = client.llm.model("tiny")  # registered by the server, for the whole process
            assert owner.load_count() == loads and [i.key for i in owner.loaded()].count("tiny") == 1
            waiter = threading.Thread(target=lambda: replies.append(model.respond("hi", config={"maxTokens": 1})))
            waiter.start()
            queue = owner.engine()._loaded["tiny"].queue
            _wait_for(lambda: queue.waiting == 1)
            c = openai.OpenAI(base_url=running.base, api_key=API_KEY, max_retries=0)
            with pytest.raises(openai.RateLimitError) as info:
                c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=2)
            assert info.value.status_code == 429
            release.set()
            holder.join(20)
            waiter.join(20)
            assert replies[0].stats.predicted_tokens == 1
        assert [i.key for i in owner.loaded()].count("tiny") == 1  # the server still holds it
    finally:
        running.stop()
    assert "tiny" not in [i.key for i in owner.loaded()]  # the last holder has shut down


def test_client_leaving_mid_stream_stops_the_generation(settings: ServerSettings) -> None:
    running = start_server(settings, fragment_delay=0.02)
    try:
        with (
            httpx.Client(timeout=30) as http,
            http.stream("POST", running.base + "/chat/completions", json={**LONG, "stream": True}, headers=AUTH) as r,
        ):
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            events = 0
            for line in r.iter_lines():
                if line.startswith("data: "):
                    events += 1
                if events == 3:
                    break  # leave: the connection closes with the block
        _wait_for(lambda: running.results)
        result = running.results[-1]
        assert result.stats.stop_reason is StopReason.USER_STOPPED
        assert result.stats.predicted_tokens < 3000
        assert running.state.local.inflight == 0
    finally:
        running.stop()


def test_client_leaving_a_non_streamed_request_stops_it(settings: ServerSettings) -> None:
    running = start_server(settings, fragment_delay=0.02)
    try:
        with pytest.raises(httpx.ReadTimeout), httpx.Client(timeout=httpx.Timeout(30, read=0.5)) as http:
            http.post(running.base + "/chat/completions", json=LONG, headers=AUTH)
        _wait_for(lambda: running.results)
        assert running.results[-1].stats.stop_reason is StopReason.USER_STOPPED
    finally:
        running.stop()


def test_graceful_shutdown_cancels_in_flight_work_and_unloads(settings: ServerSettings) -> None:
    running = start_server(settings.with_overrides(shutdown_grace=0.5), fragment_delay=0.02)
    seen: list[str] = []

    def stream() -> None:
        try:
            with (
                httpx.Client(timeout=30) as http,
                http.stream(
                    "POST", running.base + "/chat/completions", json={**LONG, "stream": True}, headers=AUTH
                ) as r,
            ):
                for line in r.iter_lines():
                    seen.append(line)
        except httpx.HTTPError:
            seen.append("<closed>")

    t = threading.Thread(target=stream, daemon=True)
    t.start()
    _wait_for(lambda: len(seen) > 3)
    assert running.state.local.loaded()
    running.stop()
    t.join(20)
    assert running.results[-1].stats.stop_reason is StopReason.USER_STOPPED
    assert running.state.local.loaded() == []
    assert running.state.local.inflight == 0
