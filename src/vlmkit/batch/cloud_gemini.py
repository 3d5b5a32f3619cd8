"""Gemini's Batch Mode (the Gemini API): ``POST {base}/v1beta/models/{model}:batchGenerateContent``
with the requests inline (``{"batch": {"inputConfig": {"requests": {"requests": [{"request",
"metadata": {"key"}}]}}}}``, each request the ``GenerateContentRequest`` :mod:`vlmkit.providers.gemini`
builds), polled at ``GET {base}/v1beta/batches/{id}`` until its ``state`` ends, the answers read from
``inlinedResponses`` by their ``key``. An inline job is at most 20 MB, so a larger batch is split
into several inline jobs (Gemini's file input, for one job over 20 MB, is not used).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from vlmkit.batch.cloud_api import Result
from vlmkit.errors import VlmkitError
from vlmkit.providers.base import ProviderConfig, WireRequest
from vlmkit.providers.gemini import model_path
from vlmkit.providers.jsonbody import dig, encode_json
from vlmkit.providers.status import provider_error

if TYPE_CHECKING:
    from vlmkit.batch.cloud_api import Http

ENDED = ("SUCCEEDED", "FAILED", "CANCELLED", "EXPIRED")


class GeminiBatch:
    max_requests = 100_000
    max_bytes = 20 * 1000 * 1000 - 1000  # the inline limit, less the envelope

    def __init__(self, cfg: ProviderConfig) -> None:
        self.provider = cfg.provider
        self.base = f"{cfg.api_base.rstrip('/')}/{cfg.options.get('api_version', 'v1beta')}"
        self.model = cfg.model

    def line(self, cid: str, wire: WireRequest) -> bytes:
        return encode_json({"request": wire.json, "metadata": {"key": cid}})

    async def submit(self, http: Http, lines: list[bytes]) -> str:
        body = (
            b'{"batch":{"displayName":"vlmkit batch","inputConfig":{"requests":{"requests":['
            + b",".join(lines)
            + b"]}}}}"
        )
        created = await http.json(
            "POST",
            f"{self.base}/models/{model_path(self.model)}:batchGenerateContent",
            content=body,
            headers={"Content-Type": "application/json"},
        )
        return str(created["name"])

    async def wait(self, http: Http, job: str, poll: float) -> dict[str, Any]:
        while True:
            batch: dict[str, Any] = await http.json("GET", f"{self.base}/{job}")
            if str(dig(batch, "metadata", "state") or "").endswith(ENDED):
                return batch
            await asyncio.sleep(poll)

    async def results(self, http: Http, job: dict[str, Any]) -> list[Result]:
        output = dig(job, "metadata", "output") or job.get("response") or {}
        out: list[Result] = []
        for item in dig(output, "inlinedResponses", "inlinedResponses") or []:
            cid = dig(item, "metadata", "key")
            if not isinstance(cid, str):
                continue
            if item.get("error"):
                error: VlmkitError = provider_error(self.provider, dig(item, "error", "code"), {"error": item["error"]})
                out.append((cid, error))
            else:
                out.append((cid, item.get("response")))
        return out

    def unanswered(self, job: dict[str, Any]) -> str:
        state = dig(job, "metadata", "state")
        return (
            f"Gemini batch {job.get('name')} ended {state} without answering this request; "
            "rerun with --retry-failed to send it again"
        )
