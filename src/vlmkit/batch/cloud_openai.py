"""OpenAI's Batch API: a JSONL file of requests uploaded (``POST /files``, purpose ``batch``), a job
created on it (``POST /batches``), polled (``GET /batches/{id}``) until it ends, and its output and
error files read back (``GET /files/{id}/content``). A file holds at most 50 000 requests and 200 MB.
A request line is ``{"custom_id", "method": "POST", "url": "/v1/chat/completions", "body"}``, the
body the one :mod:`vlmkit.providers.openai` builds; ``vllm run-batch`` reads the same lines.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vlmkit.batch.cloud_api import parse_jsonl
from vlmkit.errors import VlmkitError
from vlmkit.providers.base import ProviderConfig, WireRequest
from vlmkit.providers.jsonbody import encode_json
from vlmkit.providers.status import provider_error

if TYPE_CHECKING:
    from vlmkit.batch.cloud_api import Http, Result

ENDED = frozenset({"completed", "failed", "expired", "cancelled"})
ENDPOINT = "/v1/chat/completions"


class OpenAIBatch:
    max_requests = 50_000
    max_bytes = 200 * 1000 * 1000

    def __init__(self, cfg: ProviderConfig) -> None:
        self.provider = cfg.provider
        self.base = cfg.api_base.rstrip("/")

    def line(self, cid: str, wire: WireRequest) -> bytes:
        return encode_json({"custom_id": cid, "method": "POST", "url": ENDPOINT, "body": wire.json})

    async def submit(self, http: Http, lines: list[bytes]) -> str:
        content = b"\n".join(lines) + b"\n"
        uploaded = await http.json(
            "POST",
            f"{self.base}/files",
            data={"purpose": "batch"},
            files={"file": ("vlmkit-batch.jsonl", content, "application/jsonl")},
        )
        created = await http.json(
            "POST",
            f"{self.base}/batches",
            json={
                "input_file_id": uploaded["id"],
                "endpoint": ENDPOINT,
                "completion_window": "24h",
                "metadata": {"created_by": "vlmkit batch"},
            },
        )
        return str(created["id"])

    async def wait(self, http: Http, job: str, poll: float) -> dict[str, Any]:
        import asyncio

        while True:
            batch: dict[str, Any] = await http.json("GET", f"{self.base}/batches/{job}")
            if batch.get("status") in ENDED:
                return batch
            await asyncio.sleep(poll)

    async def results(self, http: Http, job: dict[str, Any]) -> list[Result]:
        out: list[Result] = []
        for file_id in (job.get("output_file_id"), job.get("error_file_id")):
            if not file_id:
                continue
            content = (await http.call("GET", f"{self.base}/files/{file_id}/content")).content
            for item in parse_jsonl(content):
                response = item.get("response") or {}
                status = response.get("status_code")
                body: Any = response.get("body")
                if status == 200 and body is not None:
                    out.append((item["custom_id"], body))
                else:
                    error: VlmkitError = provider_error(self.provider, status or 500, body or item.get("error"))
                    out.append((item["custom_id"], error))
        return out

    def unanswered(self, job: dict[str, Any]) -> str:
        errors = "; ".join(str(e.get("message")) for e in (job.get("errors") or {}).get("data") or [])
        return (
            f"OpenAI batch {job.get('id')} ended {job.get('status')} without answering this request"
            + (f" ({errors})" if errors else "")
            + "; rerun with --retry-failed to send it again"
        )
