"""Fetch image bytes from ``http(s)://`` URLs, safely (sync and async).

Every hop (the URL and each redirect) is parsed, its host resolved once, and every address it
resolves to is checked against the address policy in :mod:`vlmkit.images.netcheck`; the connection
then goes to an address that was checked (a network backend pins it, so DNS cannot change between
check and connect), while the Host header, TLS SNI and certificate check use the URL's host name.
Redirects are followed by hand, the size cap is enforced while the body streams, and one deadline
covers resolution, every hop and the body. Requests go through httpcore, httpx's transport layer,
because its network backends are what let us pin the address and clamp every socket operation to
the deadline. Sync and async share every decision; they differ only in the lines that send.
"""

from __future__ import annotations

import concurrent.futures
import functools
import http
import ipaddress
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.to_thread
import httpcore
import httpx

from vlmkit._version import __version__
from vlmkit.errors import ImageFetchError
from vlmkit.images.netcheck import IPAddress, check_address, check_host_name

__all__ = ["FetchOptions", "FetchRemedies", "FetchedImage", "afetch_image", "check_address", "fetch_image"]

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_TIMEOUTS = (TimeoutError, concurrent.futures.TimeoutError, httpcore.TimeoutException)
_TRANSPORT_ERRORS = (httpcore.NetworkError, httpcore.ProtocolError, httpcore.UnsupportedProtocol)
_LOOKUP_ERRORS = (OSError, UnicodeError, ValueError, OverflowError)
Headers = list[tuple[bytes, bytes]]


def _default_user_agent() -> str:
    return f"vlmkit/{__version__}"


@dataclass(frozen=True)
class FetchRemedies:
    """How the person reading a refusal changes each fetch setting, in the words of the face they use.

    A refusal names the limit it hit and ends with the matching remedy, so the SDK says
    ``FetchOptions(allow_hosts=...)``, the server its YAML ``fetch:`` section and the command line its
    ``--allow-host``: whoever builds the :class:`FetchOptions` sets these. Each completes a sentence
    such as "to fetch larger images, ...".
    """

    allow_hosts: str = (
        "pass fetch=vlmkit.images.FetchOptions(allow_hosts={...}) (host names, addresses and CIDR networks)"
    )
    max_bytes: str = "pass fetch=vlmkit.images.FetchOptions(max_bytes=...) with a higher limit"
    timeout: str = "pass fetch=vlmkit.images.FetchOptions(timeout=...) with more seconds"
    max_redirects: str = "pass fetch=vlmkit.images.FetchOptions(max_redirects=...) with a higher limit"


@dataclass(frozen=True)
class FetchOptions:
    """How images are fetched.

    ``allow_hosts`` lists host names, addresses or CIDR networks (``"localhost"``, ``"127.0.0.1"``,
    ``"10.0.0.0/8"``) that may be fetched although they are private. ``timeout`` is the total for the
    whole fetch: resolution, every redirect and the body. ``remedies`` is what refusals tell the
    reader to change (see :class:`FetchRemedies`); it does not change what is fetched.
    """

    allow_hosts: frozenset[str] = frozenset()
    max_bytes: int = 20 * 1024 * 1024
    timeout: float = 10.0
    max_redirects: int = 5
    user_agent: str = field(default_factory=_default_user_agent)
    remedies: FetchRemedies = field(default=FetchRemedies(), compare=False)

    def __post_init__(self) -> None:
        hosts: object = self.allow_hosts  # a plain string would become a set of its letters
        if isinstance(hosts, str):
            raise TypeError("allow_hosts takes a set of host names, addresses or networks, not a string")
        object.__setattr__(self, "allow_hosts", frozenset(self.allow_hosts))
        if self.max_bytes < 1 or not self.timeout > 0 or self.max_redirects < 0:
            raise ValueError("FetchOptions needs max_bytes >= 1, timeout > 0 and max_redirects >= 0")


@dataclass(frozen=True)
class FetchedImage:
    """The bytes at a URL. ``content_type`` is what the server said: informational, never trusted."""

    data: bytes
    url: str  # the final URL, after redirects
    content_type: str | None


# --- decisions (pure) ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Target:
    url: httpx.URL
    asked: str  # the URL the caller asked for, for messages after redirects

    @property
    def host(self) -> str:  # ASCII (IDNA) form, IPv6 without brackets
        return self.url.raw_host.decode("ascii")

    @property
    def port(self) -> int:
        return self.url.port or (443 if self.url.scheme == "https" else 80)

    def shown(self) -> str:
        url = str(self.url)
        return url if url == self.asked else f"{url} (redirected from {self.asked})"


def _shown(url: str) -> str:
    return repr(url) if len(url) <= 200 else repr(url[:200]) + "…"


def _target(url: str, options: FetchOptions, asked: str | None = None) -> _Target:
    """Parse and vet a URL before anything touches the network."""
    try:
        parsed = httpx.URL(url)
        parsed.raw_host.decode("ascii")
    except (httpx.InvalidURL, ValueError, UnicodeError, TypeError) as exc:
        raise ImageFetchError(f"refused {_shown(url)}: it is not a valid URL ({exc})") from None
    where = _shown(url) if asked is None else f"{_shown(url)} (redirected from {asked})"
    if parsed.scheme not in ("http", "https"):
        raise ImageFetchError(f"refused {where}: only http:// and https:// URLs are fetched")
    if not parsed.raw_host:
        raise ImageFetchError(f"refused {where}: the URL has no host")
    if parsed.userinfo:
        raise ImageFetchError(f"refused {where}: URLs with a user name or password are not fetched")
    if parsed.port is not None and not 0 < parsed.port < 65536:
        raise ImageFetchError(f"refused {where}: port {parsed.port} is not a valid TCP port")
    target = _Target(parsed, url if asked is None else asked)
    try:
        check_host_name(target.host, options)
    except ImageFetchError as exc:
        raise ImageFetchError(f"refused {target.shown()}: {exc.message}") from None
    return target


def _checked(target: _Target, addresses: list[IPAddress], options: FetchOptions) -> list[str]:
    """Every address the host resolved to must pass; they are what we may connect to."""
    for ip in addresses:
        try:
            check_address(ip, target.host, options)
        except ImageFetchError as exc:
            raise ImageFetchError(f"refused {target.shown()}: {exc.message}") from None
    return [str(ip) for ip in addresses]


def _header(headers: Headers, name: bytes) -> str | None:
    return next((v.decode("latin-1") for k, v in headers if k.lower() == name), None)


def _follow(target: _Target, status: int, headers: Headers, redirects: int, opts: FetchOptions) -> _Target | None:
    """After a hop's status line: None to read this body, the next target to follow, or an error."""
    if 200 <= status < 300:
        return None
    where = target.shown()
    if status not in _REDIRECTS:
        try:
            status_line = f"{status} {http.HTTPStatus(status).phrase}"
        except ValueError:
            status_line = str(status)
        raise ImageFetchError(f"could not fetch {where}: the server answered {status_line}")
    location = _header(headers, b"location")
    if location is None:
        raise ImageFetchError(f"could not fetch {where}: the server answered {status} with no Location")
    if redirects >= opts.max_redirects:
        raise ImageFetchError(
            f"refused {where}: more than {opts.max_redirects} redirects; to follow more, {opts.remedies.max_redirects}"
        )
    try:
        next_url = str(target.url.join(location))
    except (httpx.InvalidURL, ValueError, UnicodeError) as exc:
        raise ImageFetchError(f"could not fetch {where}: bad redirect Location {location!r} ({exc})") from None
    following = _target(next_url, opts, asked=target.asked)
    if target.url.scheme == "https" and following.url.scheme == "http":
        raise ImageFetchError(
            f"refused {following.shown()}: a redirect from https to plain http (downgrade) is not followed"
        )
    return following


class _Body:
    """Collects a response body, refusing it as soon as it is over ``max_bytes``."""

    def __init__(self, target: _Target, headers: Headers, options: FetchOptions) -> None:
        self._target, self._headers, self._limit = target, headers, options.max_bytes
        self._remedy = options.remedies.max_bytes
        self._chunks: list[bytes] = []
        self._size = 0
        declared = _header(headers, b"content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > self._limit:
            raise self._too_large(f"the server says it is {int(declared)} bytes")

    def _too_large(self, what: str) -> ImageFetchError:
        return ImageFetchError(
            f"refused {self._target.shown()}: {what}, over the {self._limit}-byte limit; "
            f"to fetch larger images, {self._remedy}"
        )

    def add(self, chunk: bytes) -> None:
        self._size += len(chunk)
        if self._size > self._limit:
            raise self._too_large("the body grew past the limit")
        self._chunks.append(chunk)

    def image(self) -> FetchedImage:
        content_type = _header(self._headers, b"content-type")
        return FetchedImage(b"".join(self._chunks), str(self._target.url), content_type)


def _request(target: _Target, options: FetchOptions, deadline: float) -> dict[str, Any]:
    left = max(deadline - time.monotonic(), 0.001)
    url = httpcore.URL(
        scheme=target.url.scheme.encode(),
        host=target.url.raw_host,
        port=target.port,
        target=target.url.raw_path,
    )
    headers = [
        (b"Host", target.url.netloc),
        (b"User-Agent", options.user_agent.encode()),
        (b"Accept", b"image/*, */*;q=0.5"),
        (b"Accept-Encoding", b"identity"),
    ]
    timeouts = {"connect": left, "read": left, "write": left, "pool": left}
    return {"method": "GET", "url": url, "headers": headers, "extensions": {"timeout": timeouts}}


def _resolve(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to, in getaddrinfo's order (an address resolves to itself)."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))


def _lookup(target: _Target) -> list[IPAddress]:
    try:
        found = _resolve(target.host, target.port)
    except _LOOKUP_ERRORS as exc:
        raise ImageFetchError(f"could not fetch {target.shown()}: cannot resolve {target.host} ({exc})") from None
    if not found:
        raise ImageFetchError(f"could not fetch {target.shown()}: {target.host} has no addresses")
    return found


def _timeout_error(target: _Target, options: FetchOptions) -> ImageFetchError:
    return ImageFetchError(
        f"could not fetch {target.shown()}: no complete answer within the total timeout of "
        f"{options.timeout:g} s, which covers resolution, redirects and the body; to wait longer, "
        f"{options.remedies.timeout}"
    )


def _transport_error(target: _Target, exc: Exception, addresses: list[str] | None = None) -> ImageFetchError:
    to = f"cannot connect to {target.host} ({', '.join(addresses)})" if addresses else "the connection failed"
    return ImageFetchError(f"could not fetch {target.shown()}: {to}: {type(exc).__name__}: {exc}")


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    return httpx.create_ssl_context()


def _clamp(timeout: float | None, deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("the fetch deadline passed")
    return left if timeout is None else min(timeout, left)


# --- sync sending --------------------------------------------------------------------------------


class _DeadlineStream(httpcore.NetworkStream):
    """A socket stream no operation of which may run past the fetch's deadline (stops slow tricklers)."""

    def __init__(self, stream: httpcore.NetworkStream, deadline: float) -> None:
        self._stream, self._deadline = stream, deadline

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _clamp(timeout, self._deadline))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _clamp(timeout, self._deadline))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        tls = self._stream.start_tls(ssl_context, server_hostname, _clamp(timeout, self._deadline))
        return _DeadlineStream(tls, self._deadline)

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _PinnedBackend(httpcore.NetworkBackend):
    """Connects to the checked ``address`` whatever host it is asked for, within the deadline."""

    def __init__(self, address: str, deadline: float) -> None:
        self._address, self._deadline, self._inner = address, deadline, httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.NetworkStream:
        timeout = _clamp(timeout, self._deadline)
        stream = self._inner.connect_tcp(self._address, port, timeout, local_address, socket_options)
        return _DeadlineStream(stream, self._deadline)


def _lookup_in_time(target: _Target, deadline: float) -> list[IPAddress]:
    """getaddrinfo cannot be timed out, so it runs in a daemon thread that we stop waiting for."""
    future: concurrent.futures.Future[list[IPAddress]] = concurrent.futures.Future()

    def work() -> None:
        try:
            future.set_result(_lookup(target))
        except BaseException as exc:
            future.set_exception(exc)

    threading.Thread(target=work, name="vlmkit-resolve", daemon=True).start()
    return future.result(timeout=_clamp(None, deadline))


def _get(
    target: _Target, addresses: list[str], opts: FetchOptions, deadline: float, redirects: int
) -> FetchedImage | _Target:
    failure: Exception | None = None
    for address in addresses:  # next address only when connecting failed
        backend = _PinnedBackend(address, deadline)
        pool = httpcore.ConnectionPool(ssl_context=_ssl_context(), max_keepalive_connections=0, network_backend=backend)
        try:
            with pool, pool.stream(**_request(target, opts, deadline)) as response:
                following = _follow(target, response.status, response.headers, redirects, opts)
                if following is not None:
                    return following
                body = _Body(target, response.headers, opts)
                for chunk in response.iter_stream():
                    body.add(chunk)
                return body.image()
        except httpcore.ConnectError as exc:
            failure = exc
    raise _transport_error(target, failure or OSError("no address"), addresses)


def fetch_image(url: str, options: FetchOptions | None = None) -> FetchedImage:
    """Fetch the bytes at an ``http(s)://`` URL, refusing unsafe addresses; see :class:`FetchOptions`.

    Every failure or refusal is an :class:`~vlmkit.errors.ImageFetchError` that says why.
    """
    opts = options if options is not None else FetchOptions()
    deadline = time.monotonic() + opts.timeout
    target, redirects = _target(url, opts), 0
    try:
        while True:
            addresses = _checked(target, _lookup_in_time(target, deadline), opts)
            outcome = _get(target, addresses, opts, deadline, redirects)
            if isinstance(outcome, FetchedImage):
                return outcome
            target, redirects = outcome, redirects + 1
    except _TIMEOUTS:
        raise _timeout_error(target, opts) from None
    except _TRANSPORT_ERRORS as exc:
        raise _transport_error(target, exc) from None


# --- async sending -------------------------------------------------------------------------------


class _AsyncPinnedBackend(httpcore.AsyncNetworkBackend):
    """Connects to the checked ``address`` whatever host it is asked for (the deadline is a cancel scope)."""

    def __init__(self, address: str) -> None:
        self._address, self._inner = address, httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.AsyncNetworkStream:
        return await self._inner.connect_tcp(self._address, port, timeout, local_address, socket_options)


async def _aget(
    target: _Target, addresses: list[str], opts: FetchOptions, deadline: float, redirects: int
) -> FetchedImage | _Target:
    failure: Exception | None = None
    for address in addresses:
        backend = _AsyncPinnedBackend(address)
        pool = httpcore.AsyncConnectionPool(
            ssl_context=_ssl_context(), max_keepalive_connections=0, network_backend=backend
        )
        try:
            async with pool, pool.stream(**_request(target, opts, deadline)) as response:
                following = _follow(target, response.status, response.headers, redirects, opts)
                if following is not None:
                    return following
                body = _Body(target, response.headers, opts)
                async for chunk in response.aiter_stream():
                    body.add(chunk)
                return body.image()
        except httpcore.ConnectError as exc:
            failure = exc
    raise _transport_error(target, failure or OSError("no address"), addresses)


async def afetch_image(url: str, options: FetchOptions | None = None) -> FetchedImage:
    """Async :func:`fetch_image`: resolution runs in a worker thread, the deadline is a cancel scope."""
    opts = options if options is not None else FetchOptions()
    deadline = time.monotonic() + opts.timeout
    target, redirects = _target(url, opts), 0
    try:
        with anyio.fail_after(opts.timeout):
            while True:
                found = await anyio.to_thread.run_sync(_lookup, target, abandon_on_cancel=True)
                outcome = await _aget(target, _checked(target, found, opts), opts, deadline, redirects)
                if isinstance(outcome, FetchedImage):
                    return outcome
                target, redirects = outcome, redirects + 1
    except _TIMEOUTS:
        raise _timeout_error(target, opts) from None
    except _TRANSPORT_ERRORS as exc:
        raise _transport_error(target, exc) from None
