"""The providers' transport over aiohttp's connection pool, for callers that keep many requests in flight.

The default transport sends through httpx, whose connection pool costs more than the rest of a
request once many are in flight: for every request it scans every pooled connection and polls each
idle socket, so at 16 to 64 concurrent requests httpx alone took most of a gateway's CPU (measured
with cProfile under ``bench/server.py``), and most of a batch's (``bench/batch.py``). Translation
stays in :mod:`vlmkit.providers.transport`: only the bytes on the wire move through aiohttp here,
behind httpx's own transport interface, so retries, error mapping and stream parsing are the
transport's unchanged. aiohttp comes with the ``server`` and ``batch`` extras; without it,
:func:`pooled_transport` gives the default transport.

Users: the gateway's upstream requests (:mod:`vlmkit.server.gateway`) and a batch's provider rows
(:mod:`vlmkit.batch.runner`).
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx

from vlmkit.providers.transport import RequestBody, Transport

_SKIP = frozenset({b"host", b"content-length", b"transfer-encoding", b"connection"})


def pooled_transport(*, limit: int = 512) -> Transport:
    """A transport whose async requests go through aiohttp (at most ``limit`` connections), or the
    default one where aiohttp is not installed."""
    try:
        import aiohttp  # noqa: F401
    except ImportError:  # pragma: no cover - aiohttp is there wherever the server or batch extra is installed
        return Transport()
    return PooledTransport(limit=limit)


class PooledTransport(Transport):
    """A providers :class:`Transport` whose async requests go through aiohttp (one pool per event loop).

    A request goes straight to the pool, not through an ``httpx.AsyncClient``: the client's request
    building (URL and cookie merging) and its cookie jar cost more than the pool itself, and a
    provider's API keeps no cookies. The request carries the client's default headers as before.
    """

    def __init__(self, *, limit: int = 512, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.limit = limit
        self._pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AiohttpTransport] = (
            weakref.WeakKeyDictionary()
        )
        # httpx's default headers (Accept, Accept-Encoding, User-Agent), as a client would send them
        self._headers = httpx.AsyncClient(transport=httpx.AsyncBaseTransport(), trust_env=False).headers
        self._urls: dict[str, httpx.URL] = {}  # parsed once: a caller sends to the same few URLs

    def _arequest(
        self, url: str, headers: Mapping[str, str], body: bytes, timeout: float
    ) -> tuple[httpx.Request, RequestBody]:
        sent = RequestBody(body)
        full = self._headers.copy()
        full.update(headers)
        full["Content-Length"] = str(len(body))
        extensions = {"timeout": httpx.Timeout(timeout).as_dict()}
        parsed = self._urls.get(url)
        if parsed is None:
            if len(self._urls) >= 64:
                self._urls.clear()
            parsed = self._urls[url] = httpx.URL(url)
        return httpx.Request("POST", parsed, headers=full, stream=sent, extensions=extensions), sent

    async def _asend(self, request: httpx.Request) -> httpx.Response:
        loop = asyncio.get_running_loop()
        pool = self._pools.get(loop)
        if pool is None:
            pool = self._pools[loop] = AiohttpTransport(limit=self.limit)
        return await pool.handle_async_request(request)

    async def aclose(self) -> None:
        pool = self._pools.pop(asyncio.get_running_loop(), None)
        if pool is not None:
            await pool.aclose()


class AiohttpTransport(httpx.AsyncBaseTransport):
    def __init__(self, *, limit: int = 512) -> None:
        self.limit = limit
        self._session: Any = None

    def _open(self) -> Any:
        import aiohttp

        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self.limit, limit_per_host=0, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(
                connector=connector, auto_decompress=False, skip_auto_headers=("User-Agent", "Accept-Encoding")
            )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        import aiohttp

        session = self._open()
        t = request.extensions.get("timeout", {})
        timeout = aiohttp.ClientTimeout(
            total=None, connect=t.get("connect"), sock_connect=t.get("connect"), sock_read=t.get("read")
        )
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw if k.lower() not in _SKIP]
        body = None
        if request.method not in ("GET", "HEAD"):
            body = b"".join([chunk async for chunk in request.stream])  # type: ignore[union-attr]
        try:
            response = await session.request(
                request.method, str(request.url), headers=headers, data=body, allow_redirects=False, timeout=timeout
            )
        except asyncio.TimeoutError as exc:
            raise httpx.ConnectTimeout(f"timed out connecting to {request.url.host}", request=request) from exc
        except aiohttp.ClientConnectorError as exc:
            raise httpx.ConnectError(str(exc), request=request) from exc
        except aiohttp.ClientError as exc:
            raise httpx.RemoteProtocolError(str(exc), request=request) from exc
        raw_headers = [(k, v) for k, v in response.raw_headers]
        return httpx.Response(
            response.status,
            headers=raw_headers,
            stream=_Body(response, request),
            request=request,
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": (response.reason or "").encode()},
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class _Body(httpx.AsyncByteStream):
    def __init__(self, response: Any, request: httpx.Request) -> None:
        self._response = response
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        import aiohttp

        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except asyncio.TimeoutError as exc:
            raise httpx.ReadTimeout("timed out reading the upstream's answer", request=self._request) from exc
        except aiohttp.ClientError as exc:
            raise httpx.ReadError(str(exc), request=self._request) from exc

    async def aclose(self) -> None:
        self._response.release()
