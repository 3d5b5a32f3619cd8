"""One prediction at a time per model: FIFO queue, bounded; cancellation; streaming; idle unload."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from vlmkit.engine import CancelToken, Engine, LoadOptions
from vlmkit.engine.queue import TurnQueue
from vlmkit.errors import ModelLoadError, PredictionCancelledError, PredictionTimeoutError, QueueFullError
from vlmkit.prediction import PredictionConfig, PredictionFragment, PredictionResult, StopReason
from vlmkit.stream import AsyncPredictionStream

LONG = PredictionConfig(temperature=0, max_tokens=200)

ONE_THREAD = LoadOptions(cpu_threads=1)


def _blocking_call(engine: Engine, started: threading.Event, release: threading.Event) -> threading.Thread:
    def on_fragment(_: PredictionFragment) -> None:
        started.set()
        release.wait(10)

    t = threading.Thread(
        target=engine.respond, args=("tiny", "hold the model", LONG), kwargs={"on_fragment": on_fragment}
    )
    t.start()
    assert started.wait(10)
    return t


def _wait_for(cond: Any, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "condition not met in time"
        time.sleep(0.01)


def test_cancel_while_generating_returns_user_stopped(engine: Engine) -> None:
    token = CancelToken()
    seen: list[PredictionFragment] = []

    def on_fragment(f: PredictionFragment) -> None:
        seen.append(f)
        if len(seen) == 3:
            token.cancel()

    result = engine.respond("tiny", "Talk", LONG, on_fragment=on_fragment, cancel=token)
    assert result.stats.stop_reason is StopReason.USER_STOPPED
    assert result.stats.predicted_tokens == 3


def test_stream_yields_fragments_then_the_result(engine: Engine) -> None:
    stream = engine.respond_stream("tiny", "Talk", PredictionConfig(temperature=0, max_tokens=5))
    fragments = list(stream)
    result = stream.result()
    assert isinstance(result, PredictionResult)
    assert "".join(f.content for f in fragments) == result.content
    assert result.stats.predicted_tokens == 5


def test_stream_can_be_cancelled(engine: Engine) -> None:
    stream = engine.respond_stream("tiny", "Talk", PredictionConfig(temperature=0, max_tokens=3000))
    for _ in stream:
        stream.cancel()
    assert stream.result().stats.stop_reason is StopReason.USER_STOPPED
    assert stream.result().stats.predicted_tokens < 3000


def test_callers_queue_in_order_and_a_full_queue_says_so(tiny_model: tuple[Path, Path]) -> None:
    engine = Engine(default_ttl=None, max_queue=2, load_options=ONE_THREAD)
    engine.register("tiny", *tiny_model)
    engine.load("tiny")
    order: list[str] = []
    started, release = threading.Event(), threading.Event()
    lm = engine._loaded["tiny"]
    try:
        holder = _blocking_call(engine, started, release)

        def queued(name: str) -> None:  # the order in which they get the model: their first tokens
            engine.respond(
                "tiny", name, PredictionConfig(temperature=0, max_tokens=2), on_first_token=lambda: order.append(name)
            )

        waiters = []
        for name in ("first", "second"):
            t = threading.Thread(target=queued, args=(name,))
            t.start()
            waiters.append(t)
            expected = len(waiters)
            _wait_for(lambda expected=expected: lm.queue.waiting == expected)  # type: ignore[misc]

        with pytest.raises(QueueFullError) as err:
            engine.respond("tiny", "third", PredictionConfig(max_tokens=2))
        assert err.value.status_code == 429 and err.value.retry_after > 0
        assert "2 requests are already waiting" in str(err.value)

        release.set()
        holder.join(10)
        for t in waiters:
            t.join(10)
        assert order == ["first", "second"]
    finally:
        release.set()
        engine.close()


def test_cancel_and_timeout_while_queued(engine: Engine) -> None:
    started, release = threading.Event(), threading.Event()
    holder = _blocking_call(engine, started, release)
    try:
        token = CancelToken()
        threading.Timer(0.1, token.cancel).start()
        with pytest.raises(PredictionCancelledError, match="waiting in the queue"):
            engine.respond("tiny", "queued", LONG, cancel=token)
        with pytest.raises(PredictionTimeoutError) as err:
            engine.respond("tiny", "queued", LONG, queue_timeout=0.1)
        assert err.value.status_code == 504
    finally:
        release.set()
        holder.join(10)
    assert engine.respond("tiny", "free again", PredictionConfig(max_tokens=1)).stats.predicted_tokens == 1


def test_unload_then_respond_loads_again(engine: Engine) -> None:
    engine.load("tiny")
    assert engine.unload("tiny") and not engine.is_loaded("tiny")
    assert not engine.unload("tiny")
    assert engine.respond("tiny", "hi", PredictionConfig(max_tokens=1)).stats.predicted_tokens == 1
    assert [i.key for i in engine.list_loaded()] == ["tiny"]


def test_idle_ttl_unloads(tiny_model: tuple[Path, Path]) -> None:
    with Engine(default_ttl=0.2, load_options=ONE_THREAD) as engine:
        engine.register("tiny", *tiny_model)
        engine.load("tiny")
        engine.load(tiny_model[0], key="kept", ttl=None)
        _wait_for(lambda: not engine.is_loaded("tiny"))
        assert engine.is_loaded("kept")


# --- one cancel token, from the caller to the engine ------------------------------------------------


def test_a_sync_caller_cancels_through_its_own_token(engine: Engine) -> None:
    token = CancelToken()
    stream = engine.respond_stream("tiny", "Talk", PredictionConfig(temperature=0, max_tokens=3000), cancel=token)
    assert stream.token is token  # the caller's token is the one the engine watches
    next(iter(stream))
    token.cancel()
    result = stream.result()
    assert result.stats.stop_reason is StopReason.USER_STOPPED and result.stats.predicted_tokens < 3000


async def test_an_async_caller_cancels_through_its_own_token(engine: Engine) -> None:
    """Cancelling the task that reads the stream sets the caller's token; the engine, watching that very
    token, stops with ``userStopped``. The prediction is held in its first fragment until the token is
    cancelled, so it cannot end on its own first."""
    token = CancelToken()
    seen: list[CancelToken] = []
    results: list[PredictionResult] = []
    finished = threading.Event()

    def work(on_fragment: Any, on_first_token: Any, cancel: CancelToken) -> PredictionResult:
        seen.append(cancel)
        released = threading.Event()
        cancel.on_cancel(released.set)

        def hold(fragment: PredictionFragment) -> None:
            on_fragment(fragment)
            released.wait(20)

        try:
            results.append(engine.respond("tiny", "Talk", LONG, on_fragment=hold, cancel=cancel))
            return results[-1]
        finally:
            finished.set()

    stream = AsyncPredictionStream(work, model="tiny", cancel=token)
    first = asyncio.Event()

    async def read() -> None:
        async for _ in stream:
            first.set()  # and on to wait for the next fragment, which the held prediction does not send

    task = asyncio.create_task(read())
    await first.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await asyncio.to_thread(finished.wait, 20)
    assert seen == [token] and token.cancelled
    assert results[0].stats.stop_reason is StopReason.USER_STOPPED and results[0].stats.predicted_tokens == 1


# --- what a shared engine needs: loads counted, reloads as loaded, a bound per caller ------------------


def test_a_model_loads_again_as_it_was_loaded(engine: Engine) -> None:
    loads = engine.load_count
    engine.load("tiny", options=LoadOptions(cpu_threads=1, context_length=256))
    engine.load("tiny")  # in memory already: not loaded again
    assert engine.load_count == loads + 1
    engine.unload("tiny")
    assert engine.respond("tiny", "hi", PredictionConfig(max_tokens=1)).stats.predicted_tokens == 1
    assert engine.get_info("tiny").context_length == 256 and engine.load_count == loads + 2


def test_a_key_loaded_from_other_files_is_refused(
    engine: Engine, tiny_model: tuple[Path, Path], tiny_text_model: Path
) -> None:
    engine.load("tiny")
    engine.register("tiny", tiny_text_model)  # the same key, now naming another model
    with pytest.raises(ModelLoadError) as err:
        engine.load("tiny")
    message = str(err.value)
    assert f"model 'tiny' is already loaded in this process from {tiny_model[0]}, not from {tiny_text_model}" in message
    assert "unload it first, or load this one under another key" in message


def test_each_caller_may_bound_the_queue_for_itself(engine: Engine) -> None:
    started, release = threading.Event(), threading.Event()
    holder = _blocking_call(engine, started, release)
    waiter = threading.Thread(target=engine.respond, args=("tiny", "waits", PredictionConfig(max_tokens=1)))
    try:
        with pytest.raises(QueueFullError, match="0 requests are already waiting"):
            engine.respond("tiny", "no wait", PredictionConfig(max_tokens=1), max_queue=0)
        waiter.start()  # the engine's own bound (16) lets this one wait
        _wait_for(lambda: engine._loaded["tiny"].queue.waiting == 1)
    finally:
        release.set()
        holder.join(10)
    waiter.join(10)
    assert not waiter.is_alive()


def test_background_work_holding_the_turn_never_makes_the_line_full() -> None:
    """A yielding holder (a reply being settled) gives way: with no room to wait at all, a caller
    still waits for it rather than being refused; a second caller is refused as before."""
    queue = TurnQueue(max_waiting=0)
    assert queue.try_acquire(yielding=True)
    got = threading.Event()

    def caller() -> None:
        queue.acquire(timeout=5)
        got.set()
        queue.release()

    t = threading.Thread(target=caller)
    t.start()
    _wait_for(lambda: queue.waiting == 1)
    with pytest.raises(QueueFullError):
        queue.acquire(timeout=1)
    queue.release()  # the background work stops for the caller
    t.join(5)
    assert got.is_set() and not queue.busy
