"""Incremental decoders for the three stream framings providers use.

- Server-sent events (OpenAI, Anthropic, Gemini with ``alt=sse``): ``event:``/``data:`` lines, a
  blank line ends an event; ``data: [DONE]`` ends OpenAI's streams.
- NDJSON (Ollama): one JSON object per line.
- AWS event-stream (Bedrock ConverseStream): binary frames (prelude with lengths and CRC, headers,
  payload, CRC), decoded with botocore's own parser.

Each decoder is fed text lines or byte chunks and returns whole :class:`Event` objects, so the sync
and async loops that drive them are a few lines each.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from vlmkit.errors import APIConnectionError, APITimeoutError
from vlmkit.providers.base import Event, StreamParser
from vlmkit.providers.response import ChatCompletionChunk
from vlmkit.providers.status import provider_error

DONE = object()
"""The data of OpenAI's ``data: [DONE]`` event."""


def _json(text: str, provider: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        raise APIConnectionError(
            f"{provider} sent a stream event that is not JSON: {text[:200]!r}", provider=provider
        ) from None


class SSEDecoder:
    def __init__(self, provider: str) -> None:
        self.provider = provider
        self._event: str | None = None
        self._data: list[str] = []

    def feed_line(self, line: str) -> Event | None:
        line = line.rstrip("\r\n")
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        return None

    def close(self) -> Event | None:
        return self._dispatch()

    def _dispatch(self) -> Event | None:
        if not self._data:
            self._event = None
            return None
        text = "\n".join(self._data)
        event = Event(self._event, DONE if text.strip() == "[DONE]" else _json(text, self.provider))
        self._event, self._data = None, []
        return event


class NDJSONDecoder:
    def __init__(self, provider: str) -> None:
        self.provider = provider

    def feed_line(self, line: str) -> Event | None:
        line = line.strip()
        return Event(None, _json(line, self.provider)) if line else None

    def close(self) -> Event | None:
        return None


class EventStreamDecoder:
    """AWS event-stream frames; an ``exception``/``error`` message raises the typed provider error."""

    def __init__(self, provider: str) -> None:
        from botocore.eventstream import EventStreamBuffer

        self.provider = provider
        self._buffer = EventStreamBuffer()

    def feed_bytes(self, data: bytes) -> list[Event]:
        from botocore.eventstream import ParserError

        self._buffer.add_data(data)
        events = []
        try:
            for message in self._buffer:
                events.append(self._event(message.headers, message.payload))
        except ParserError as exc:
            raise APIConnectionError(
                f"{self.provider} sent a broken event-stream frame: {exc}", provider=self.provider
            ) from None
        return events

    def _event(self, headers: dict[str, Any], payload: bytes) -> Event:
        kind = headers.get(":message-type", "event")
        text = payload.decode("utf-8", "replace")
        if kind == "event":
            return Event(headers.get(":event-type"), _json(text, self.provider) if text.strip() else {})
        body = _json(text, self.provider) if text.strip().startswith("{") else {"message": text}
        name = headers.get(":exception-type") or headers.get(":error-code")
        raise provider_error(self.provider, None, body, kind=str(name) if name else None)


# --- iterating a response ------------------------------------------------------------------------


def _decoder(fmt: str, provider: str) -> SSEDecoder | NDJSONDecoder | EventStreamDecoder:
    if fmt == "eventstream":
        return EventStreamDecoder(provider)
    return NDJSONDecoder(provider) if fmt == "ndjson" else SSEDecoder(provider)


class CompletionStream:
    """The chunks of a streamed completion (``for chunk in stream``); close it, or use ``with``, to stop early."""

    def __init__(self, response: httpx.Response, parser: StreamParser, fmt: str, provider: str) -> None:
        self.response = response
        self._parser = parser
        self._fmt = fmt
        self.provider = provider

    def __iter__(self) -> Iterator[ChatCompletionChunk]:
        decoder = _decoder(self._fmt, self.provider)
        try:
            with _mapped(self.provider):
                if isinstance(decoder, EventStreamDecoder):
                    for data in self.response.iter_bytes():
                        for event in decoder.feed_bytes(data):
                            yield from self._parser.feed(event)
                else:
                    for line in self.response.iter_lines():
                        line_event = decoder.feed_line(line)
                        if line_event is not None:
                            yield from self._parser.feed(line_event)
                    last = decoder.close()
                    if last is not None:
                        yield from self._parser.feed(last)
            yield from self._parser.close()
        finally:
            self.response.close()

    def close(self) -> None:
        self.response.close()

    def __enter__(self) -> CompletionStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncCompletionStream:
    """:class:`CompletionStream` for async code (``async for chunk in stream``)."""

    def __init__(self, response: httpx.Response, parser: StreamParser, fmt: str, provider: str) -> None:
        self.response = response
        self._parser = parser
        self._fmt = fmt
        self.provider = provider

    async def __aiter__(self) -> AsyncIterator[ChatCompletionChunk]:
        decoder = _decoder(self._fmt, self.provider)
        try:
            with _mapped(self.provider):
                if isinstance(decoder, EventStreamDecoder):
                    async for data in self.response.aiter_bytes():
                        for event in decoder.feed_bytes(data):
                            for chunk in self._parser.feed(event):
                                yield chunk
                else:
                    async for line in self.response.aiter_lines():
                        line_event = decoder.feed_line(line)
                        if line_event is not None:
                            for chunk in self._parser.feed(line_event):
                                yield chunk
                    last = decoder.close()
                    if last is not None:
                        for chunk in self._parser.feed(last):
                            yield chunk
            for chunk in self._parser.close():
                yield chunk
        finally:
            await self.response.aclose()

    async def aclose(self) -> None:
        await self.response.aclose()

    async def __aenter__(self) -> AsyncCompletionStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class RepeatedStream:
    """The streams of one request asked ``n`` times (for ``n`` choices where the provider takes no
    ``n``), read one after the other, each one's choice numbered by its place (0, 1, ...)."""

    def __init__(self, streams: list[Any]) -> None:
        self.streams = streams
        self.provider = getattr(streams[0], "provider", None)

    def __iter__(self) -> Iterator[ChatCompletionChunk]:
        try:
            for index, stream in enumerate(self.streams):
                for chunk in stream:
                    yield _numbered(chunk, index)
        finally:
            self.close()

    def close(self) -> None:
        for stream in self.streams:
            close = getattr(stream, "close", None)
            if close is not None:
                close()

    def __enter__(self) -> RepeatedStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncRepeatedStream:
    """:class:`RepeatedStream` for async code."""

    def __init__(self, streams: list[Any]) -> None:
        self.streams = streams
        self.provider = getattr(streams[0], "provider", None)

    async def __aiter__(self) -> AsyncIterator[ChatCompletionChunk]:
        try:
            for index, stream in enumerate(self.streams):
                async for chunk in stream:
                    yield _numbered(chunk, index)
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        for stream in self.streams:
            close = getattr(stream, "aclose", None)
            if close is not None:
                await close()

    async def __aenter__(self) -> AsyncRepeatedStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _numbered(chunk: ChatCompletionChunk, index: int) -> ChatCompletionChunk:
    for choice in chunk.choices:
        choice.index = index
    return chunk


@contextmanager
def _mapped(provider: str) -> Iterator[None]:
    """httpx failures while reading a stream, as vlmkit errors."""
    try:
        yield
    except httpx.TimeoutException:
        raise APITimeoutError(f"{provider} stopped sending the stream (timed out)", provider=provider) from None
    except httpx.TransportError as exc:
        raise APIConnectionError(
            f"{provider}'s stream broke off: {exc or type(exc).__name__}", provider=provider
        ) from None
