"""Server-sent events in OpenAI's streaming shape, and noticing a client that went away.

:class:`EventStream` sends ``data: {chunk}\\n\\n`` events and ends with ``data: [DONE]``. It listens
for the client's disconnect while it streams; when the client goes, ``on_disconnect`` runs at once
(it cancels the generation) and the event source is closed, so no token is computed for nobody.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import anyio
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from vlmkit.server.jsonutil import dumps

DONE = b"data: [DONE]\n\n"
T = TypeVar("T")


def event(obj: Any) -> bytes:
    return b"data: " + dumps(obj) + b"\n\n"


def named_event(name: str, obj: Any) -> bytes:
    """An event with an ``event:`` line, as Anthropic's and OpenAI's Responses streams send them."""
    return b"event: " + name.encode() + b"\ndata: " + dumps(obj) + b"\n\n"


class EventStream(Response):
    media_type = "text/event-stream"

    def __init__(
        self,
        events: AsyncIterator[bytes],
        *,
        on_disconnect: Callable[[], None] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(None, 200, {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **(headers or {})})
        self.raw_headers = [(k, v) for k, v in self.raw_headers if k != b"content-length"]  # a stream has none
        self.events = events
        self.on_disconnect = on_disconnect

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        gone = False
        async with anyio.create_task_group() as tg:

            async def listen() -> None:
                nonlocal gone
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        gone = True
                        if self.on_disconnect is not None:
                            self.on_disconnect()
                        tg.cancel_scope.cancel()
                        return

            tg.start_soon(listen)
            try:
                async for data in self.events:
                    await send({"type": "http.response.body", "body": data, "more_body": True})
            finally:
                aclose = getattr(self.events, "aclose", None)
                if aclose is not None:
                    with anyio.CancelScope(shield=True):
                        await aclose()
            if not gone:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            tg.cancel_scope.cancel()


async def until_disconnect(receive: Receive, work: Awaitable[T], on_disconnect: Callable[[], None]) -> T:
    """Await ``work`` (a request whose body was read); if the client goes first, call ``on_disconnect``.

    ``work`` is awaited to its end either way (``on_disconnect`` makes it end soon); its exceptions
    come through as they are.
    """

    async def listen() -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                on_disconnect()
                return

    listener = asyncio.ensure_future(listen())
    try:
        return await work
    finally:
        listener.cancel()
