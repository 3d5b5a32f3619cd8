"""Requests-per-minute and tokens-per-minute limits for a batch's sends to a provider.

A provider's limits are per minute; a batch that ignores them is answered with 429s and spends its
retries waiting. :class:`RateLimiter` keeps the sends of the last 60 seconds and makes the next one
wait until it fits under both limits (a request's tokens are estimated before it is sent: the
image's documented token cost, the prompt's length, the answer's token limit). The transport's
retries with backoff on 429 and 5xx remain the second line.
"""

from __future__ import annotations

import asyncio
import collections
import time

WINDOW = 60.0


class RateLimiter:
    def __init__(self, rpm: int | None = None, tpm: int | None = None) -> None:
        for name, value in (("rpm", rpm), ("tpm", tpm)):
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1, not {value}")
        self.rpm = rpm
        self.tpm = tpm
        self._sent: collections.deque[tuple[float, int]] = collections.deque()
        self._tokens = 0
        self._lock = asyncio.Lock()

    @property
    def limited(self) -> bool:
        """Whether there is a limit to keep (else :meth:`acquire` returns at once, and a request's
        tokens need not be estimated)."""
        return self.rpm is not None or self.tpm is not None

    def wait_time(self, tokens: int, now: float) -> float:
        """Seconds until a request of ``tokens`` fits under the limits (0: now)."""
        while self._sent and self._sent[0][0] <= now - WINDOW:
            self._tokens -= self._sent.popleft()[1]
        waits = [0.0]
        if self.rpm is not None and len(self._sent) >= self.rpm:
            waits.append(self._sent[len(self._sent) - self.rpm][0] + WINDOW - now)
        if self.tpm is not None and self._sent and self._tokens + tokens > self.tpm:
            need, freed = self._tokens + tokens - self.tpm, 0
            for at, n in self._sent:  # a request larger than the whole limit goes once the window is empty
                freed += n
                if freed >= need:
                    waits.append(at + WINDOW - now)
                    break
        return max(waits)

    def record(self, tokens: int, now: float) -> None:
        self._sent.append((now, tokens))
        self._tokens += tokens

    async def acquire(self, tokens: int = 0) -> None:
        if not self.limited:
            return
        async with self._lock:  # one waiter at a time: sends go out in the order they asked
            while (wait := self.wait_time(tokens, time.monotonic())) > 0:
                await asyncio.sleep(wait)
            self.record(tokens, time.monotonic())
