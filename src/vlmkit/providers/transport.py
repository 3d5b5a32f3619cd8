"""The one HTTP transport every provider sends through (httpx, sync and async).

It keeps pooled connections, retries 429 and 5xx answers (and refused connections) a bounded number
of times with exponential backoff that honours ``Retry-After``, and turns every failure into a typed
vlmkit error: a provider's error body, a timeout, or an unreachable host never escapes as a raw
httpx exception.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import threading
import time
import weakref
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass

import httpx

from vlmkit.errors import APIConnectionError, APITimeoutError, ProviderError
from vlmkit.providers.status import RETRY_STATUSES, decode_body, provider_error

DEFAULT_TIMEOUT = 600.0


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry: attempt ``n`` (from 0) waits ``initial * 2**n`` seconds,
    jittered, at most ``max_backoff``; a ``Retry-After`` the provider sends is honoured up to
    ``max_retry_after`` (longer waits are not worth blocking for: the error is raised instead)."""

    max_retries: int = 2
    initial_backoff: float = 0.5
    max_backoff: float = 8.0
    max_retry_after: float = 60.0

    def delay(self, attempt: int, retry_after: float | None) -> float | None:
        """Seconds to wait before retry ``attempt`` (0-based), or None when no retry is left."""
        if attempt >= self.max_retries:
            return None
        if retry_after is not None:
            return retry_after if retry_after <= self.max_retry_after else None
        backoff = min(self.max_backoff, self.initial_backoff * 2.0**attempt)
        return backoff * (0.5 + random.random() / 2)


def retry_after_seconds(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """``Retry-After`` (seconds or an HTTP date), or OpenAI's ``retry-after-ms``, in seconds."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class Transport:
    """Pooled httpx clients (one sync, one async per event loop) with retries and error mapping."""

    def __init__(self, *, retry: RetryPolicy | None = None, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.retry = retry or RetryPolicy()
        self.timeout = timeout
        self._client: httpx.Client | None = None
        self._aclients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()

    @property
    def client(self) -> httpx.Client:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = httpx.Client(timeout=self.timeout, follow_redirects=False)
        return self._client

    @property
    def aclient(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        client = self._aclients.get(loop)
        if client is None:
            client = self._aclients[loop] = httpx.AsyncClient(timeout=self.timeout, follow_redirects=False)
        return client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    async def aclose(self) -> None:
        client = self._aclients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()

    # --- sending ---------------------------------------------------------------------------------

    def send(
        self,
        provider: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes,
        *,
        stream: bool = False,
        timeout: float | None = None,
        retry: RetryPolicy | None = None,
    ) -> httpx.Response:
        """POST ``body``; the response on success (for ``stream``, still open: close it when done)."""
        policy = retry or self.retry
        client = self.client
        attempt = 0
        while True:
            request, sent = _request(client, url, headers, body, timeout or self.timeout)
            try:
                response = client.send(request, stream=True)
            except httpx.TimeoutException as exc:
                raise _timeout(provider, url, exc) from None
            except httpx.TransportError as exc:
                wait = policy.delay(attempt, None) if isinstance(exc, httpx.ConnectError) else None
                if wait is None:
                    raise _unreachable(provider, url, exc) from None
                time.sleep(wait)
                attempt += 1
                continue
            finally:
                sent.release()
            if response.status_code < 400:
                if not stream:
                    _read(response, provider, url)
                return response
            error, wait = self._failed(provider, response, _read(response, provider, url), attempt, policy)
            if wait is None:
                raise error
            time.sleep(wait)
            attempt += 1

    async def asend(
        self,
        provider: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes,
        *,
        stream: bool = False,
        timeout: float | None = None,
        retry: RetryPolicy | None = None,
    ) -> httpx.Response:
        """:meth:`send` for async code."""
        policy = retry or self.retry
        attempt = 0
        while True:
            request, sent = self._arequest(url, headers, body, timeout or self.timeout)
            try:
                response = await self._asend(request)
            except httpx.TimeoutException as exc:
                raise _timeout(provider, url, exc) from None
            except httpx.TransportError as exc:
                wait = policy.delay(attempt, None) if isinstance(exc, httpx.ConnectError) else None
                if wait is None:
                    raise _unreachable(provider, url, exc) from None
                await asyncio.sleep(wait)
                attempt += 1
                continue
            finally:
                sent.release()
            if response.status_code < 400:
                if not stream:
                    await _aread(response, provider, url)
                return response
            error, wait = self._failed(provider, response, await _aread(response, provider, url), attempt, policy)
            if wait is None:
                raise error
            await asyncio.sleep(wait)
            attempt += 1

    def _arequest(
        self, url: str, headers: Mapping[str, str], body: bytes, timeout: float
    ) -> tuple[httpx.Request, RequestBody]:
        """The request :meth:`asend` sends (a subclass that sends another way may build it another way)."""
        return _request(self.aclient, url, headers, body, timeout)

    async def _asend(self, request: httpx.Request) -> httpx.Response:
        """Send one request; the response with its body still to read."""
        return await self.aclient.send(request, stream=True)

    @staticmethod
    def _failed(
        provider: str, response: httpx.Response, content: bytes, attempt: int, policy: RetryPolicy
    ) -> tuple[ProviderError, float | None]:
        status = response.status_code
        error = provider_error(provider, status, decode_body(content), kind=response.headers.get("x-amzn-errortype"))
        if status not in RETRY_STATUSES:
            return error, None
        return error, policy.delay(attempt, retry_after_seconds(response.headers))


class RequestBody(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A request body that lets go of its bytes once the answer has begun.

    httpx keeps a response and its request in a reference cycle, so a plain ``content=body`` lives
    until the garbage collector's next full pass: at a gateway's concurrency, dozens of image
    bodies (megabytes each) were alive at once long after their requests had ended.
    """

    def __init__(self, body: bytes) -> None:
        self._body = body

    def release(self) -> None:
        self._body = b""

    def __iter__(self) -> Iterator[bytes]:
        yield self._body

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self._body


def _request(
    client: httpx.Client | httpx.AsyncClient, url: str, headers: Mapping[str, str], body: bytes, timeout: float
) -> tuple[httpx.Request, RequestBody]:
    sent = RequestBody(body)
    full = httpx.Headers(headers)
    full["Content-Length"] = str(len(body))
    request = client.build_request("POST", url, headers=full, timeout=timeout)
    request.stream = sent  # set after building: httpx would wrap an iterable ``content`` as sync-only
    return request, sent


def _read(response: httpx.Response, provider: str, url: str) -> bytes:
    try:
        return response.read()
    except httpx.TimeoutException as exc:
        raise _timeout(provider, url, exc) from None
    except httpx.TransportError as exc:
        raise _unreachable(provider, url, exc) from None
    finally:
        response.close()


async def _aread(response: httpx.Response, provider: str, url: str) -> bytes:
    try:
        return await response.aread()
    except httpx.TimeoutException as exc:
        raise _timeout(provider, url, exc) from None
    except httpx.TransportError as exc:
        raise _unreachable(provider, url, exc) from None
    finally:
        await response.aclose()


def _where(url: str) -> str:
    return url.split("?", 1)[0]


def _timeout(provider: str, url: str, exc: Exception) -> APITimeoutError:
    return APITimeoutError(
        f"{provider} did not answer in time at {_where(url)} ({type(exc).__name__}); raise timeout= or try later",
        provider=provider,
    )


def _unreachable(provider: str, url: str, exc: Exception) -> APIConnectionError:
    return APIConnectionError(
        f"cannot reach {provider} at {_where(url)}: {exc or type(exc).__name__}; check api_base and the network",
        provider=provider,
    )


_default: Transport | None = None


def default_transport() -> Transport:
    """The process-wide transport (created on first use)."""
    global _default
    if _default is None:
        _default = Transport()
    return _default
