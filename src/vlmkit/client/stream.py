"""Predictions as streams of fragments, for the sync and the async API.

A prediction runs on a worker thread (the backend blocks). The worker posts events (a fragment, the
first token, the result, an error) to a queue that the caller reads: a ``queue.Queue`` in the sync
API, an ``asyncio.Queue`` fed with ``call_soon_threadsafe`` in the async one, so the event loop is
never blocked. The caller's callbacks run on the caller's side (its thread, or its event loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any

from vlmkit.client.backend import CancelToken, FragmentCallback
from vlmkit.errors import PredictionTimeoutError
from vlmkit.prediction import PredictionFragment, PredictionResult

Work = Callable[[FragmentCallback, Callable[[], None], CancelToken], PredictionResult]
"""A prediction to run: ``work(on_fragment, on_first_token, cancel) -> result``."""

Event = tuple[str, Any]

_FRAGMENT, _FIRST_TOKEN, _DONE, _ERROR = "fragment", "first_token", "done", "error"


def _start(work: Work, cancel: CancelToken, post: Callable[[Event], None]) -> None:
    def run() -> None:
        try:
            result = work(lambda f: post((_FRAGMENT, f)), lambda: post((_FIRST_TOKEN, None)), cancel)
        except BaseException as exc:
            post((_ERROR, exc))
        else:
            post((_DONE, result))

    threading.Thread(target=run, name="vlmkit-prediction", daemon=True).start()


class _Stream:
    """What both streams share: the events' meaning, the callbacks, the outcome."""

    def __init__(
        self,
        model: str,
        on_prediction_fragment: FragmentCallback | None,
        on_first_token: Callable[[], None] | None,
    ) -> None:
        self.model = model
        self._cancel = CancelToken()
        self._on_fragment = on_prediction_fragment
        self._on_first_token = on_first_token
        self._result: PredictionResult | None = None
        self._error: BaseException | None = None
        self._finished = False

    @property
    def finished(self) -> bool:
        return self._finished

    def _fail(self, exc: BaseException) -> BaseException:
        self._cancel.cancel()
        self._finished = True
        self._error = exc
        return exc

    def _handle(self, kind: str, value: Any) -> PredictionFragment | None:
        """Apply one event; a fragment is returned for the caller to yield."""
        try:
            if kind == _FRAGMENT:
                if self._on_fragment is not None:
                    self._on_fragment(value)
                return value  # type: ignore[no-any-return]
            if kind == _FIRST_TOKEN:
                if self._on_first_token is not None:
                    self._on_first_token()
                return None
        except BaseException as exc:  # a callback failed: stop the prediction, hand the error on
            raise self._fail(exc) from None
        self._finished = True
        if kind == _DONE:
            self._result = value
            return None
        self._error = value
        raise value

    def _outcome(self) -> PredictionResult:
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result


class PredictionStream(_Stream):
    """Iterate for :class:`PredictionFragment` s; :meth:`result` gives the final result; :meth:`cancel` stops.

    ``timeout`` is the longest wait for the next event (seconds, ``None`` for no limit): past it the
    prediction is cancelled and :class:`~vlmkit.errors.PredictionTimeoutError` raised.
    """

    def __init__(
        self,
        work: Work,
        *,
        model: str,
        timeout: float | None,
        on_prediction_fragment: FragmentCallback | None = None,
        on_first_token: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(model, on_prediction_fragment, on_first_token)
        self.timeout = timeout
        self._events: queue.Queue[Event] = queue.Queue()
        _start(work, self._cancel, self._events.put)

    def __iter__(self) -> PredictionStream:
        return self

    def __next__(self) -> PredictionFragment:
        while not self._finished:
            try:
                kind, value = self._events.get(timeout=self.timeout)
            except queue.Empty:
                raise self._fail(
                    PredictionTimeoutError(
                        f"model {self.model!r} sent nothing for {self.timeout} s, so the prediction was cancelled; "
                        "raise the limit with Client(timeout=...) or vk.configure_default_client(timeout=...) "
                        "(None waits forever)"
                    )
                ) from None
            fragment = self._handle(kind, value)
            if fragment is not None:
                return fragment
        raise StopIteration

    def result(self) -> PredictionResult:
        """The final result, once the rest of the stream has been read (callbacks still fire)."""
        for _ in self:
            pass
        return self._outcome()

    def cancel(self) -> None:
        """Stop generating; the result then has stop reason ``userStopped``."""
        self._cancel.cancel()

    def __enter__(self) -> PredictionStream:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._finished:
            self.cancel()
            with contextlib.suppress(Exception):
                self.result()


class AsyncPredictionStream(_Stream):
    """``async for`` the fragments; ``await wait_for_result()``; ``await cancel()``.

    Cancelling the task that reads the stream cancels the prediction too.
    """

    def __init__(
        self,
        work: Work,
        *,
        model: str,
        on_prediction_fragment: FragmentCallback | None = None,
        on_first_token: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(model, on_prediction_fragment, on_first_token)
        loop = asyncio.get_running_loop()
        self._events: asyncio.Queue[Event] = asyncio.Queue()

        def post(event: Event) -> None:
            try:
                loop.call_soon_threadsafe(self._events.put_nowait, event)
            except RuntimeError:  # the loop has closed: nobody is listening any more
                self._cancel.cancel()

        _start(work, self._cancel, post)

    def __aiter__(self) -> AsyncPredictionStream:
        return self

    async def __anext__(self) -> PredictionFragment:
        while not self._finished:
            try:
                kind, value = await self._events.get()
            except asyncio.CancelledError:
                self._cancel.cancel()
                raise
            fragment = self._handle(kind, value)
            if fragment is not None:
                return fragment
        raise StopAsyncIteration

    async def wait_for_result(self) -> PredictionResult:
        """Read the rest of the stream (callbacks still fire) and give the final result."""
        async for _ in self:
            pass
        return self._outcome()

    def result(self) -> PredictionResult:
        """The final result of a stream that has been read to its end."""
        if not self._finished:
            raise RuntimeError("the stream has not finished: read it to the end or await wait_for_result()")
        return self._outcome()

    async def cancel(self) -> None:
        """Stop generating; the result then has stop reason ``userStopped``."""
        self._cancel.cancel()

    async def __aenter__(self) -> AsyncPredictionStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        if not self._finished:
            self._cancel.cancel()
            with contextlib.suppress(Exception):
                await self.wait_for_result()
