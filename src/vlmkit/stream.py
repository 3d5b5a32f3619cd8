"""A prediction in progress: its cancel token, the bridge from the worker thread that runs it to the
caller that reads it, and the prediction stream, read from sync code or from an event loop.

Every prediction in this process blocks a worker thread (inside llama.cpp, or on a socket), and every
face reads it here: the SDK's streams, the engine's ``respond_stream``, ``completion("local/...")``
and the server's local models. One :class:`CancelToken` travels from the caller to the engine
unchanged, so ``stream.cancel()``, a cancelled task and a client that went away all stop it the same way.

The worker posts to a :class:`Bridge`; the reader takes everything posted since it last looked, in
one go. A reader on an event loop is woken once per batch (one ``call_soon_threadsafe``, and only
while it waits), never once per fragment. asyncio, not anyio: the async SDK and the server run on
asyncio, and ``call_soon_threadsafe`` wakes a loop without making the worker wait for it (anyio's
``from_thread.run_sync`` blocks the worker until the loop has run the call).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

from vlmkit.errors import PredictionTimeoutError
from vlmkit.prediction import PredictionFragment, PredictionResult

T = TypeVar("T")

FragmentCallback = Callable[[PredictionFragment], None]


class CancelToken:
    """Cancel a prediction from any thread: a queued one gives up its place, a running one stops at the
    next token. :meth:`on_cancel` hooks another stop onto it (a held prediction, an HTTP request)."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._hooks: list[Callable[[], None]] = []

    def cancel(self) -> None:
        with self._lock:
            if self._event.is_set():
                return
            self._event.set()
            hooks, self._hooks = self._hooks, []
        for hook in hooks:
            hook()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def on_cancel(self, hook: Callable[[], None]) -> None:
        """Call ``hook`` when cancelled (at once if that already happened)."""
        with self._lock:
            if not self._event.is_set():
                self._hooks.append(hook)
                return
        hook()


# --- the bridge ------------------------------------------------------------------------------------


class Bridge(Generic[T]):
    """What a worker thread posts, read in batches by one reader: a thread (:meth:`take`) or the event
    loop the bridge was made on (:meth:`atake`)."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._posted = threading.Condition(self._lock)
        self._items: list[T] = []
        self._waiter: asyncio.Future[None] | None = None

    def post(self, item: T) -> bool:
        """Hand ``item`` to the reader, from any thread. False when no one can read it any more (the
        reader's event loop has closed)."""
        with self._lock:
            self._items.append(item)
            waiter, self._waiter = self._waiter, None
            self._posted.notify()
        if self._loop is None:
            return True
        if waiter is None:  # the reader is busy: it takes this with the rest of the batch
            return not self._loop.is_closed()
        try:
            self._loop.call_soon_threadsafe(_wake, waiter)
        except RuntimeError:  # the loop has closed
            return False
        return True

    def take(self, timeout: float | None = None) -> list[T]:
        """Everything posted since the last take, waiting up to ``timeout`` s for the first (``[]``: none came)."""
        with self._lock:
            self._posted.wait_for(lambda: self._items, timeout)
            items, self._items = self._items, []
        return items

    async def atake(self, timeout: float | None = None) -> list[T]:
        """Everything posted since the last take, awaiting the first without blocking the loop for
        up to ``timeout`` s (``[]``: none came)."""
        assert self._loop is not None, "a Bridge read with atake() is made with the reader's loop"
        deadline = None if timeout is None else self._loop.time() + timeout
        while True:
            with self._lock:
                if self._items:
                    items, self._items = self._items, []
                    return items
                if deadline is not None and self._loop.time() >= deadline:
                    self._waiter = None
                    return []
                waiter = self._waiter = self._loop.create_future()
            timer = None if deadline is None else self._loop.call_at(deadline, _wake, waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                with self._lock:
                    if self._waiter is waiter:
                        self._waiter = None
                raise
            finally:
                if timer is not None:
                    timer.cancel()


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def start_thread(fn: Callable[[], None], name: str) -> None:
    """Run ``fn`` on a daemon thread of its own. Not a pool's: work that waits (a model's queue) never
    holds a place that other work needs, so a full queue is answered at once."""
    threading.Thread(target=fn, name=name, daemon=True).start()


async def call_in_thread(fn: Callable[[], T], *, name: str = "vlmkit-worker") -> T:
    """Await blocking ``fn``, run on a thread of its own, without blocking the loop.

    Cancelling the awaiting task does not stop ``fn``; pass it a :class:`CancelToken` for that.
    """
    bridge: Bridge[tuple[bool, object]] = Bridge(asyncio.get_running_loop())

    def run() -> None:
        try:
            bridge.post((True, fn()))
        except BaseException as exc:
            bridge.post((False, exc))

    start_thread(run, name)
    ((ok, value),) = await bridge.atake()
    if not ok:
        assert isinstance(value, BaseException)
        raise value
    return value  # type: ignore[return-value]


# --- the prediction stream -------------------------------------------------------------------------

Work = Callable[[FragmentCallback, Callable[[], None], CancelToken], PredictionResult]
"""A prediction to run on a worker: ``work(on_fragment, on_first_token, cancel) -> result``."""


class FirstToken:
    """The event posted when the first token has been generated."""


Event = PredictionFragment | FirstToken | PredictionResult | BaseException
"""What a prediction's worker posts: fragments, the first token, then its result or its error."""

_FIRST_TOKEN = FirstToken()


def _run(work: Work, cancel: CancelToken, bridge: Bridge[Event]) -> None:
    """Start ``work`` on a worker thread posting to ``bridge``; a reader that is gone cancels it."""

    def post(event: Event) -> None:
        if not bridge.post(event):
            cancel.cancel()

    def run() -> None:
        try:
            result = work(post, lambda: post(_FIRST_TOKEN), cancel)
        except BaseException as exc:
            post(exc)
        else:
            post(result)

    start_thread(run, "vlmkit-prediction")


class _Stream:
    """What both streams share: the events' meaning, the callbacks, the outcome."""

    def __init__(
        self,
        model: str,
        cancel: CancelToken | None,
        on_prediction_fragment: FragmentCallback | None,
        on_first_token: Callable[[], None] | None,
    ) -> None:
        self.model = model
        self._cancel = cancel or CancelToken()
        self._on_fragment = on_prediction_fragment
        self._on_first_token = on_first_token
        self._pending: deque[Event] = deque()
        self._result: PredictionResult | None = None
        self._error: BaseException | None = None
        self._finished = False

    @property
    def finished(self) -> bool:
        return self._finished

    @property
    def token(self) -> CancelToken:
        """The token that stops this prediction (the one the engine watches)."""
        return self._cancel

    def _fail(self, exc: BaseException) -> BaseException:
        self._cancel.cancel()
        self._finished = True
        self._error = exc
        return exc

    def _handle(self, event: Event) -> PredictionFragment | None:
        """Apply one event; a fragment is returned for the caller to yield."""
        try:
            if isinstance(event, PredictionFragment):
                if self._on_fragment is not None:
                    self._on_fragment(event)
                return event
            if isinstance(event, FirstToken):
                if self._on_first_token is not None:
                    self._on_first_token()
                return None
        except BaseException as exc:  # a callback failed: stop the prediction, hand the error on
            raise self._fail(exc) from None
        self._finished = True
        if isinstance(event, PredictionResult):
            self._result = event
            return None
        self._error = event
        raise event

    def _outcome(self) -> PredictionResult:
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result


class PredictionStream(_Stream):
    """Iterate for :class:`PredictionFragment` s; :meth:`result` gives the final result; :meth:`cancel` stops.

    ``timeout`` is the longest wait for the next event (seconds, ``None`` for no limit): past it the
    prediction is cancelled and :class:`~vlmkit.errors.PredictionTimeoutError` raised. ``cancel`` is
    the token to stop it with (default: a new one).
    """

    def __init__(
        self,
        work: Work,
        *,
        model: str,
        timeout: float | None = None,
        cancel: CancelToken | None = None,
        on_prediction_fragment: FragmentCallback | None = None,
        on_first_token: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(model, cancel, on_prediction_fragment, on_first_token)
        self.timeout = timeout
        self._bridge: Bridge[Event] = Bridge()
        _run(work, self._cancel, self._bridge)

    def __iter__(self) -> PredictionStream:
        return self

    def __next__(self) -> PredictionFragment:
        while not self._finished:
            if not self._pending:
                batch = self._bridge.take(self.timeout)
                if not batch:
                    raise self._fail(
                        PredictionTimeoutError(
                            f"model {self.model!r} sent nothing for {self.timeout} s, so the prediction was "
                            "cancelled; raise the limit with Client(timeout=...) or "
                            "vk.configure_default_client(timeout=...) (None waits forever)"
                        )
                    ) from None
                self._pending.extend(batch)
            fragment = self._handle(self._pending.popleft())
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

    Made on a running event loop. Cancelling the task that reads the stream cancels the prediction too.
    """

    def __init__(
        self,
        work: Work,
        *,
        model: str,
        cancel: CancelToken | None = None,
        on_prediction_fragment: FragmentCallback | None = None,
        on_first_token: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(model, cancel, on_prediction_fragment, on_first_token)
        self._bridge: Bridge[Event] = Bridge(asyncio.get_running_loop())
        _run(work, self._cancel, self._bridge)

    def __aiter__(self) -> AsyncPredictionStream:
        return self

    async def __anext__(self) -> PredictionFragment:
        if not self._finished:
            item = await self.next_within(None)
            if isinstance(item, PredictionFragment):
                return item
        raise StopAsyncIteration

    async def next_within(self, timeout: float | None) -> PredictionFragment | PredictionResult | None:
        """The next fragment, the result once the stream has finished (its error raised if it
        failed), or ``None`` when no fragment came within ``timeout`` s (the prediction goes on)."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while not self._finished:
            if not self._pending:
                left = None if deadline is None else max(0.0, deadline - loop.time())
                try:
                    batch = await self._bridge.atake(left)
                except asyncio.CancelledError:
                    self._cancel.cancel()
                    raise
                if not batch:
                    return None
                self._pending.extend(batch)
            fragment = self._handle(self._pending.popleft())
            if fragment is not None:
                return fragment
        return self._outcome()

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
