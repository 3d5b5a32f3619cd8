"""The one bridge from a worker thread to its reader, and the one cancel token (:mod:`vlmkit.stream`).

The model-backed cases (the engine stopping on the caller's token) are in tests/engine and tests/client;
here the worker is a plain function, so each property is shown on its own.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest

from vlmkit.errors import PredictionTimeoutError
from vlmkit.prediction import PredictionFragment, PredictionResult, PredictionStats, StopReason
from vlmkit.stream import AsyncPredictionStream, Bridge, CancelToken, PredictionStream, call_in_thread


def test_a_sync_reader_takes_everything_posted_in_one_batch() -> None:
    bridge: Bridge[int] = Bridge()
    worker = threading.Thread(target=lambda: [bridge.post(i) for i in range(100)])
    worker.start()
    worker.join()
    assert bridge.take() == list(range(100))
    assert bridge.take(timeout=0) == []


async def test_an_async_reader_is_woken_once_per_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    """A burst of posts while the reader waits wakes the loop once, not once per item."""
    loop = asyncio.get_running_loop()
    wakeups: list[object] = []
    real = loop.call_soon_threadsafe

    def counted(callback: Callable[..., object], *args: Any, **kwargs: Any) -> asyncio.Handle:
        wakeups.append(callback)
        return real(callback, *args, **kwargs)

    monkeypatch.setattr(loop, "call_soon_threadsafe", counted)
    bridge: Bridge[int] = Bridge(loop)
    reader = asyncio.create_task(bridge.atake())
    await asyncio.sleep(0)  # the reader now waits
    worker = threading.Thread(target=lambda: [bridge.post(i) for i in range(100)])
    worker.start()
    worker.join()  # the loop is held here, so all 100 arrive before the reader runs
    assert await reader == list(range(100))
    assert len(wakeups) == 1


async def test_a_post_to_a_closed_loop_says_nobody_listens() -> None:
    other = asyncio.new_event_loop()
    bridge: Bridge[int] = Bridge(other)
    other.close()
    assert bridge.post(1) is False


async def test_call_in_thread_gives_the_value_or_raises_the_error() -> None:
    caller = threading.get_ident()
    assert await call_in_thread(lambda: threading.get_ident() != caller) is True

    def fail() -> None:
        raise KeyError("no such thing")

    with pytest.raises(KeyError, match="no such thing"):
        await call_in_thread(fail)


def test_on_cancel_runs_once_and_at_once_when_already_cancelled() -> None:
    token, calls = CancelToken(), []
    token.on_cancel(lambda: calls.append("before"))
    token.cancel()
    token.cancel()
    token.on_cancel(lambda: calls.append("after"))
    assert token.cancelled and calls == ["before", "after"]


def counting_work() -> Callable[..., PredictionResult]:
    """A worker that sends three fragments, then waits until its token is cancelled."""

    def work(on_fragment: Any, on_first_token: Any, cancel: CancelToken) -> PredictionResult:
        on_first_token()
        sent = 0
        released = threading.Event()
        cancel.on_cancel(released.set)
        while not cancel.cancelled:
            on_fragment(PredictionFragment(content=f"{sent} "))
            sent += 1
            if sent == 3:
                released.wait(20)  # held until cancelled, so that the cancel is what stops it
        stats = PredictionStats(stop_reason=StopReason.USER_STOPPED, predicted_tokens=sent)
        return PredictionResult(content="".join(f"{i} " for i in range(sent)), stats=stats)

    return work


def test_a_sync_stream_stops_on_the_callers_token() -> None:
    token = CancelToken()
    stream = PredictionStream(counting_work(), model="m", cancel=token)
    assert stream.token is token
    fragments = [next(stream) for _ in range(3)]
    token.cancel()
    result = stream.result()
    assert [f.content for f in fragments] == ["0 ", "1 ", "2 "]
    assert result.stats.stop_reason is StopReason.USER_STOPPED and result.stats.predicted_tokens == 3


async def test_an_async_stream_stops_when_its_reader_is_cancelled() -> None:
    token = CancelToken()
    stream = AsyncPredictionStream(counting_work(), model="m", cancel=token)
    three = asyncio.Event()

    async def read() -> None:
        seen = 0
        async for _ in stream:
            seen += 1
            if seen == 3:
                three.set()

    task = asyncio.create_task(read())
    await three.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert token.cancelled


def test_a_silent_worker_times_out_and_is_cancelled() -> None:
    started = threading.Event()

    def silent(on_fragment: Any, on_first_token: Any, cancel: CancelToken) -> PredictionResult:
        started.set()
        released = threading.Event()
        cancel.on_cancel(released.set)
        released.wait(20)
        raise AssertionError("unreachable: the stream has given up")

    stream = PredictionStream(silent, model="quiet", timeout=0.05)
    with pytest.raises(PredictionTimeoutError) as info:
        stream.result()
    assert "model 'quiet' sent nothing for 0.05 s, so the prediction was cancelled" in str(info.value)
    assert "Client(timeout=...)" in str(info.value) and stream.token.cancelled
