"""How a request body may arrive: its size (413), its deadline and its rate (408), checked as it comes.

A ``Content-Length`` over the size limit is refused before a byte is read; a chunked body is counted
as it streams in and refused the moment it passes the limit, so a client can never make the server
buffer more than ``max_body_bytes``.

Time is counted only while the application waits for the client's next bytes, so a busy server never
blames its client. The whole body must arrive within ``body_timeout`` seconds, and after a grace
period it must keep up ``min_body_rate`` bytes a second on average: a client trickling a body, or
stalling halfway, is answered 408 and its connection closed, instead of holding a request open for
as long as it likes. No slot of image work is held while a body arrives (see
:func:`vlmkit.server.state.image_slot`), so slow senders cost their socket and the bytes they sent,
and the server's image work goes on for everyone else.

What a large body may cost in memory is bounded as a whole by a :class:`BodyBudget`: a request
over :data:`LARGE_BODY` takes its ``Content-Length`` from the budget before its body is read (a
chunked body takes its bytes as they come) and gives them back when it is answered. A request that
finds the budget spent waits unread in its socket, where the kernel and TCP hold its bytes, instead
of in the server's memory; the wait is not counted against its body's deadline.

A client that goes away while sending its body ends its request with one line in the log at info
level (:class:`~vlmkit.server.errors.ClientGone`): there is nobody left to answer, and nothing broke.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vlmkit.server.errors import APIError, ClientGone, error_response, shape_for

LARGE_BODY = 256 * 1024
"""Bodies up to this size (text chats) take nothing from the budget nor a slot of image work."""


class BodyBudget:
    """The bytes of large request bodies the server holds at once, arriving or being worked on."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.free = total
        self._given_back = asyncio.Condition()

    async def take(self, wanted: int, held: int = 0) -> int:
        """Wait until ``wanted`` bytes are free and take them; a request that already ``held`` some
        takes at most what the budget has beyond them (a body larger than the whole budget runs alone)."""
        n = max(0, min(wanted, self.total - held))
        if n:
            async with self._given_back:
                await self._given_back.wait_for(lambda: self.free >= n)
                self.free -= n
        return n

    async def give(self, n: int) -> None:
        if n:
            async with self._given_back:
                self.free += n
                self._given_back.notify_all()


@dataclass(frozen=True)
class BodyLimits:
    max_bytes: int
    timeout: float
    """Seconds of waiting for the client that a whole body may take."""
    min_rate: float
    """Bytes a second a body must keep up after ``grace`` seconds (0: no minimum)."""
    grace: float


def too_large(limit: int) -> APIError:
    return APIError(
        f"the request body is larger than this server's limit of {limit:,} bytes; "
        "upload large images once through /v1/files and refer to them by id",
        413,
        code="request_too_large",
    )


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, limits: BodyLimits, budget: BodyBudget) -> None:
        self.app = app
        self.limits = limits
        self.budget = budget

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared: int | None = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = None
                if declared is not None and declared > self.limits.max_bytes:
                    exc = too_large(self.limits.max_bytes)
                    shape = shape_for(scope["path"])
                    await error_response(exc.message, 413, code=exc.code, shape=shape)(scope, receive, send)
                    return
                break
        body = _Arriving(receive, self.limits, declared, f"{scope['method']} {scope['path']}", self.budget)
        if declared is not None and declared > LARGE_BODY:
            body.held = await self.budget.take(declared)
        try:
            await self.app(scope, body.receive, send)
        finally:
            await self.budget.give(body.held)


class _Arriving:
    """One request's body as it arrives: counted and timed, refused when it breaks a limit."""

    def __init__(
        self, receive: Receive, limits: BodyLimits, declared: int | None, request: str, budget: BodyBudget
    ) -> None:
        self._receive = receive
        self.limits = limits
        self.declared = declared
        self.request = request
        self.budget = budget
        self.held = 0
        """Bytes this body holds of the budget."""
        self.seen = 0
        self.waited = 0.0
        self.done = False

    async def receive(self) -> Message:
        if self.done:  # the body is in: what is left to hear (a disconnect) is not timed
            return await self._receive()
        allowed = self._allowed() - self.waited
        started = time.monotonic()
        with anyio.move_on_after(max(allowed, 0.0)) as waiting:
            message = await self._receive()
        self.waited += time.monotonic() - started
        if waiting.cancelled_caught:
            raise self._too_slow()
        if message["type"] == "http.request":
            self.seen += len(message.get("body", b""))
            if self.seen > self.limits.max_bytes:
                raise too_large(self.limits.max_bytes)
            self.done = not message.get("more_body", False)
            if self.declared is None and self.seen > LARGE_BODY and not self.done:
                # a chunked body takes its bytes as they come; the wait is the server's, not the client's
                self.held += await self.budget.take(self.seen - self.held, self.held)
        elif message["type"] == "http.disconnect":
            raise ClientGone(self.request, self.seen, self.declared)
        return message

    def _allowed(self) -> float:
        """The seconds of waiting the bytes seen so far have earned: never more than the deadline."""
        limits = self.limits
        if limits.min_rate <= 0:
            return limits.timeout
        return min(limits.timeout, limits.grace + self.seen / limits.min_rate)

    def _too_slow(self) -> APIError:
        limits = self.limits
        of = f" of {self.declared:,}" if self.declared is not None else ""
        if self._allowed() >= limits.timeout:
            message = (
                f"the request body did not arrive within this server's limit of {limits.timeout:g} s "
                f"({self.seen:,}{of} bytes received); send it over a faster connection, or upload large "
                "images once through /v1/files and refer to them by id"
            )
        else:
            message = (
                f"the request body arrived too slowly: {self.seen:,}{of} bytes in {self.waited:.1f} s, under "
                f"this server's minimum of {limits.min_rate / 1024:g} KB/s; send it without pauses"
            )
        return APIError(message, 408, code="request_timeout", headers={"Connection": "close"})
