"""One prediction at a time per loaded model; callers wait their turn in order, in a bounded line."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

from vlmkit.errors import PredictionCancelledError, PredictionTimeoutError, QueueFullError


class TurnQueue:
    """A FIFO lock with a bounded number of waiters.

    ``acquire`` returns at once when the model is free; otherwise the caller waits behind the others
    (``QueueFullError`` when ``max_waiting`` are already waiting). The turn is handed directly to the
    next waiter on ``release``, so the order is strictly first come, first served.
    """

    def __init__(self, max_waiting: int = 16) -> None:
        self.max_waiting = max_waiting
        self._lock = threading.Lock()
        self._busy = False
        self._waiters: deque[threading.Event] = deque()
        self._durations: deque[float] = deque(maxlen=8)
        self._since = 0.0
        self._yielding = False  # the turn is held by background work that gives way to any caller

    @property
    def busy(self) -> bool:
        return self._busy

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def retry_after(self) -> float:
        """A guess of how long until a place frees up, from recent turn durations."""
        avg = sum(self._durations) / len(self._durations) if self._durations else 1.0
        return round(max(0.1, avg), 2)

    def try_acquire(self, *, yielding: bool = False) -> bool:
        """Take the turn if it is free. A ``yielding`` holder (background work that stops as soon as
        anyone waits) never makes a caller find the line full: it is not counted as work ahead."""
        with self._lock:
            if self._busy or self._waiters:
                return False
            self._busy = True
            self._yielding = yielding
            self._since = time.monotonic()
            return True

    def acquire(
        self,
        *,
        timeout: float | None = None,
        should_stop: Callable[[], bool] = lambda: False,
        what: str = "the model",
        max_waiting: int | None = None,
    ) -> None:
        """Wait for the turn. ``max_waiting`` bounds the line for this caller (default: the queue's own
        bound), so each user of a shared model keeps its own limit."""
        limit = self.max_waiting if max_waiting is None else max_waiting
        with self._lock:
            if not self._busy and not self._waiters:
                self._busy = True
                self._since = time.monotonic()
                return
            if len(self._waiters) >= limit and not (self._yielding and not self._waiters):
                raise QueueFullError(
                    f"{what} is busy and {len(self._waiters)} requests are already waiting "
                    f"(the most this model queues); retry in about {self.retry_after()} s",
                    retry_after=self.retry_after(),
                )
            mine = threading.Event()
            self._waiters.append(mine)
        deadline = None if timeout is None else time.monotonic() + timeout
        while not mine.wait(0.05):
            stop = should_stop()
            late = deadline is not None and time.monotonic() >= deadline
            if stop or late:
                with self._lock:
                    if mine.is_set():  # handed over just now: give it on
                        break
                    self._waiters.remove(mine)
                if stop:
                    raise PredictionCancelledError("the prediction was cancelled while waiting in the queue")
                raise PredictionTimeoutError(f"{what} stayed busy for {timeout} s; the request was not run")
        else:
            return
        # the turn came at the moment we gave up: pass it on and report the cancellation/timeout
        self.release()
        if should_stop():
            raise PredictionCancelledError("the prediction was cancelled while waiting in the queue")
        raise PredictionTimeoutError(f"{what} stayed busy for {timeout} s; the request was not run")

    def release(self) -> None:
        with self._lock:
            self._yielding = False
            now = time.monotonic()
            self._durations.append(now - self._since)
            self._since = now
            if self._waiters:
                self._waiters.popleft().set()  # stays busy: the turn passes to the next in line
            else:
                self._busy = False
