"""The seam between a batch run and each provider's batch API (:class:`BatchAPI`, four steps), and
the HTTP client those steps share (:class:`Http`: the provider's headers, retries with backoff on
429 and 5xx, every failure a typed vlmkit error)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any, Protocol

import httpx

from vlmkit.errors import APIConnectionError
from vlmkit.providers.base import WireRequest
from vlmkit.providers.status import RETRY_STATUSES, decode_body, provider_error
from vlmkit.providers.transport import RetryPolicy, retry_after_seconds

Result = tuple[str, Any]
"""A result read back: the ``custom_id``, and the answer's JSON body or the :class:`VlmkitError` of its failure."""


class Http:
    """The requests of a batch API (uploads, polls, downloads), with the provider's headers, retries
    with backoff on 429 and 5xx, and every failure a typed vlmkit error."""

    def __init__(self, provider: str, headers: Mapping[str, str], retry: RetryPolicy | None = None) -> None:
        self.provider = provider
        self.headers = {k: v for k, v in headers.items() if k.lower() not in ("content-type", "accept")}
        self.retry = retry or RetryPolicy()
        self.client = httpx.AsyncClient(timeout=600.0)

    async def call(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        attempt = 0
        while True:
            headers = {**self.headers, **kwargs.pop("headers", {})}
            try:
                response = await self.client.request(method, url, headers=headers, **kwargs)
            except httpx.TransportError as exc:
                wait = self.retry.delay(attempt, None) if isinstance(exc, httpx.ConnectError) else None
                if wait is None:
                    raise APIConnectionError(
                        f"{self.provider}'s batch API at {url} could not be reached: {exc}", provider=self.provider
                    ) from None
            else:
                if response.status_code < 400:
                    return response
                wait = None
                if response.status_code in RETRY_STATUSES:
                    wait = self.retry.delay(attempt, retry_after_seconds(response.headers))
                if wait is None:
                    raise provider_error(self.provider, response.status_code, decode_body(response.content))
            await asyncio.sleep(wait)
            attempt += 1

    async def json(self, method: str, url: str, **kwargs: Any) -> Any:
        response = await self.call(method, url, **kwargs)
        try:
            return response.json()
        except ValueError:
            raise provider_error(
                self.provider, 502, {"error": {"message": f"{url} answered with no JSON: {response.text[:200]!r}"}}
            ) from None

    async def aclose(self) -> None:
        await self.client.aclose()


class BatchAPI(Protocol):
    max_requests: int
    max_bytes: int

    def line(self, cid: str, wire: WireRequest) -> bytes:
        """One request of the job as one JSON line (no newline)."""
        ...

    async def submit(self, http: Http, lines: list[bytes]) -> str:
        """Upload and create the job; its id."""
        ...

    async def wait(self, http: Http, job: str, poll: float) -> dict[str, Any]:
        """The job once it has ended, polled every ``poll`` seconds."""
        ...

    async def results(self, http: Http, job: dict[str, Any]) -> list[Result]:
        """Each answered request of an ended job."""
        ...

    def unanswered(self, job: dict[str, Any]) -> str:
        """Why the requests that have no result in ``job`` have none."""
        ...


def parse_jsonl(content: bytes) -> list[dict[str, Any]]:
    """The JSON objects of a results file, one a line."""
    return [json.loads(line) for line in content.splitlines() if line.strip()]
