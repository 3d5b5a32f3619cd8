"""Anthropic's Message Batches: ``POST /v1/messages/batches`` with ``{"requests": [{"custom_id",
"params"}]}`` (the params the Messages body :mod:`vlmkit.providers.anthropic` builds), polled at
``GET /v1/messages/batches/{id}`` until ``processing_status`` is ``ended``, its results read as
JSONL from ``results_url``. A batch holds at most 100 000 requests and 256 MB.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from vlmkit.batch.cloud_api import parse_jsonl
from vlmkit.errors import BatchJobError, VlmkitError
from vlmkit.providers.base import ProviderConfig, WireRequest
from vlmkit.providers.jsonbody import encode_json
from vlmkit.providers.status import provider_error

if TYPE_CHECKING:
    from vlmkit.batch.cloud_api import Http, Result


class AnthropicBatch:
    max_requests = 100_000
    max_bytes = 256 * 1000 * 1000

    def __init__(self, cfg: ProviderConfig) -> None:
        self.provider = cfg.provider
        self.base = cfg.api_base.rstrip("/")

    def line(self, cid: str, wire: WireRequest) -> bytes:
        return encode_json({"custom_id": cid, "params": wire.json})

    async def submit(self, http: Http, lines: list[bytes]) -> str:
        body = b'{"requests":[' + b",".join(lines) + b"]}"
        created = await http.json(
            "POST", f"{self.base}/v1/messages/batches", content=body, headers={"Content-Type": "application/json"}
        )
        return str(created["id"])

    async def wait(self, http: Http, job: str, poll: float) -> dict[str, Any]:
        while True:
            batch: dict[str, Any] = await http.json("GET", f"{self.base}/v1/messages/batches/{job}")
            if batch.get("processing_status") == "ended":
                return batch
            await asyncio.sleep(poll)

    async def results(self, http: Http, job: dict[str, Any]) -> list[Result]:
        url = job.get("results_url")
        if not url:
            return []
        out: list[Result] = []
        for item in parse_jsonl((await http.call("GET", url)).content):
            result = item.get("result") or {}
            kind = result.get("type")
            if kind == "succeeded":
                out.append((item["custom_id"], result.get("message")))
                continue
            error: VlmkitError
            if kind == "errored":
                error = provider_error(self.provider, None, result.get("error"))
            else:
                error = BatchJobError(
                    f"Anthropic batch {job.get('id')}: this request was {kind} before it ran; "
                    "rerun with --retry-failed to send it again",
                    provider=self.provider,
                )
            out.append((item["custom_id"], error))
        return out

    def unanswered(self, job: dict[str, Any]) -> str:
        return (
            f"Anthropic batch {job.get('id')} ended without a result for this request; "
            "rerun with --retry-failed to send it again"
        )
