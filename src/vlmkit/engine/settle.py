"""Settle each reply while the model is idle, so that a follow-up evaluates only its own message.

When a reply ends, the KV cache holds the tokens as they were sampled. The next turn's prompt holds
the reply as the chat template writes it (after "Assistant: " rather than "Assistant:", trimmed,
closed by an end-of-turn marker), which often tokenizes differently from the first token of the
reply on: without settling, a follow-up question evaluates the whole previous reply again before its
own words, and that is most of its time to first token. Here one background thread evaluates the
chat with its reply, as the template writes it, in the time the user reads the answer and types the
next question (:func:`vlmkit.engine.predict.settle`).

It never refuses or holds up a request for long: it takes a model's turn only when the model is
free, as a holder that does not count against the model's line (a server with no queue still takes
the request), and stops between evaluation steps as soon as anyone waits, keeping what it evaluated. Only a model's
latest reply is settled; an older one still pending is dropped. A request that is not a follow-up
(a new chat, the same question again) finds the prefix it shares with the settled one, as before.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from vlmkit.chat import Chat, ChatMessage
from vlmkit.engine import predict
from vlmkit.engine.loaded import LoadedModel
from vlmkit.prediction import PredictionConfig, PredictionResult, StopReason

log = logging.getLogger("vlmkit.engine")

# replies that end where a follow-up cannot simply go on (a tool call is followed by its results)
_UNSETTLED = (StopReason.USER_STOPPED, StopReason.CONTEXT_LENGTH_REACHED, StopReason.TOOL_CALLS)


@dataclass(frozen=True)
class _Job:
    lm: LoadedModel
    chat: Chat | Sequence[ChatMessage]
    reply: str
    config: PredictionConfig | None


class Settler:
    """One daemon thread settling the latest reply of each model, while that model is idle."""

    def __init__(self) -> None:
        self._jobs: dict[int, _Job] = {}  # by model (id of its LoadedModel), latest reply only
        self._cond = threading.Condition()
        self._working = False
        self._closed = False
        self._thread: threading.Thread | None = None
        self.settled_tokens = 0
        """Tokens evaluated ahead of follow-ups so far (what the follow-ups did not have to)."""

    def submit(
        self,
        lm: LoadedModel,
        chat: Chat | Sequence[ChatMessage],
        result: PredictionResult,
        config: PredictionConfig | None,
    ) -> None:
        if result.stats.stop_reason in _UNSETTLED or result.tool_calls or self._closed:
            return
        frozen = chat.copy() if isinstance(chat, Chat) else list(chat)  # the caller goes on adding to it
        with self._cond:
            self._jobs[id(lm)] = _Job(lm, frozen, result.content, config)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="vlmkit-engine-settle", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until nothing is pending or being settled (tests and benchmarks); False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._jobs and not self._working, timeout)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._jobs.clear()
            self._cond.notify_all()

    def _loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: bool(self._jobs) or self._closed)
                if self._closed:
                    return
                _, job = self._jobs.popitem()
                self._working = True
            try:
                self._settle(job)
            except Exception:  # settling is an optimisation: a failure must not stop the thread
                log.debug("settling a reply failed", exc_info=True)
            finally:
                with self._cond:
                    self._working = False
                    self._cond.notify_all()

    def _settle(self, job: _Job) -> None:
        lm = job.lm
        if lm.native.closed or not lm.queue.try_acquire(yielding=True):
            return  # unloaded, or a request has the model already: it evaluates its own prompt
        try:
            stop = lambda: self._closed or lm.queue.waiting > 0  # noqa: E731
            self.settled_tokens += predict.settle(lm, job.chat, job.reply, job.config, should_stop=stop)
        finally:
            lm.queue.release()
