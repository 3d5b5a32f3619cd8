"""A batch through a provider's batch API (``--mode batch``): half the price, answers within a day.

The rows go through the same pipeline as a direct run up to the send (:class:`~vlmkit.batch.runner.Runner`:
skip what is recorded, read and key the image, answer a key answered before from that answer); then
each distinct request is built by the provider's own translation (:func:`vlmkit.providers.call.request_for`
and the module's ``build_request``, images rendered once per the provider's policy) and written as
one line of a request file under a ``custom_id`` derived from its key. A file is split where the
provider's limits say (OpenAI: 50 000 requests, 200 MB; Gemini inline: 20 MB), each part
uploaded and submitted as a batch job, whose id is recorded at once (``NAME.batches``, beside the
manifest) so that a rerun after a crash waits for the jobs already paid for instead of sending
their rows again. Then the jobs are polled until they end, their results read back, and each
result recorded for its row (and for the rows that asked the same) by its ``custom_id``; a
request the job did not answer (failed, expired, cancelled) is an error record, which
``--retry-failed`` sends again.

Each API is one class with four steps (:class:`BatchAPI`): the line of a request, submit, wait,
results (:mod:`~vlmkit.batch.cloud_api`). :func:`awrite_requests` writes the request lines
alone, for ``vllm run-batch``.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from vlmkit.batch.cloud_api import BatchAPI, Http
from vlmkit.batch.inputs import read_rows
from vlmkit.batch.job import DEFAULT_PROMPT, BatchJob, make_job
from vlmkit.batch.limits import RateLimiter
from vlmkit.batch.manifest import JsonLines, Manifest, custom_id
from vlmkit.batch.output import journal_path, write_output
from vlmkit.batch.progress import Progress
from vlmkit.batch.runner import (
    BatchSummary,
    Keyed,
    Runner,
    answer_of,
    answered,
    duplicate,
    error_of,
    read_image,
    sent_as,
)
from vlmkit.errors import BadRequestError, BatchJobError, VlmkitError
from vlmkit.prediction import PredictionConfig
from vlmkit.providers.base import ProviderConfig, ProviderModule, WireRequest
from vlmkit.providers.call import request_for
from vlmkit.providers.request import CompletionRequest
from vlmkit.providers.transport import RetryPolicy

if TYPE_CHECKING:
    from typing import TextIO

    from vlmkit.images.fetch import FetchOptions

DEFAULT_POLL = 30.0
"""Seconds between two looks at a job in progress."""


def api_for(cfg: ProviderConfig) -> BatchAPI:
    from vlmkit.batch.cloud_anthropic import AnthropicBatch
    from vlmkit.batch.cloud_gemini import GeminiBatch
    from vlmkit.batch.cloud_openai import OpenAIBatch

    if cfg.provider == "openai":
        return OpenAIBatch(cfg)
    if cfg.provider == "anthropic":
        return AnthropicBatch(cfg)
    if cfg.provider == "gemini":
        return GeminiBatch(cfg)
    raise BadRequestError(
        f"--mode batch sends to OpenAI's, Anthropic's or Gemini's batch API, not {cfg.provider}'s; "
        f"run {cfg.provider}/... without --mode batch (requests are then sent directly, many at a time)"
    )


class Submitted(JsonLines):
    """The jobs a batch output has submitted: ``{"job", "ids"}`` lines, written as each is created."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__(path)
        self.jobs: list[tuple[str, list[str]]] = []

    def remember(self, record: dict[str, Any], number: int | None) -> None:
        self.jobs.append((str(record["job"]), list(record["ids"])))


@dataclass
class _Sending:
    """The request file being filled, and what waits on each of its custom ids."""

    api: BatchAPI
    http: Http
    submitted: Submitted
    lines: list[bytes] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    size: int = 0
    jobs: list[str] = field(default_factory=list)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def add(self, cid: str, line: bytes) -> None:
        if len(line) + 1 > self.api.max_bytes:
            raise BadRequestError(
                f"the request is {len(line):,} bytes, more than a batch file may hold ({self.api.max_bytes:,}); "
                "send it without --mode batch"
            )
        async with self.lock:
            if len(self.lines) >= self.api.max_requests or self.size + len(line) + 1 > self.api.max_bytes:
                await self._submit()
            self.lines.append(line)
            self.ids.append(cid)
            self.size += len(line) + 1

    async def flush(self) -> None:
        async with self.lock:
            if self.lines:
                await self._submit()

    async def _submit(self) -> None:
        job = await self.api.submit(self.http, self.lines)
        self.submitted.append({"job": job, "ids": self.ids})
        self.jobs.append(job)
        self.lines, self.ids, self.size = [], [], 0


def run_cloud(source: Any, output: str | Path, **options: Any) -> BatchSummary:
    """:func:`arun_cloud` for sync code."""
    return asyncio.run(arun_cloud(source, output, **options))


async def arun_cloud(
    source: Any,
    output: str | Path,
    *,
    model: str,
    prompt: str = DEFAULT_PROMPT,
    system: str | None = None,
    config: PredictionConfig | Mapping[str, Any] | None = None,
    response_format: Any = None,
    image_column: str | None = None,
    api_base: str | None = None,
    api_key: str | None = None,
    fetch: FetchOptions | None = None,
    retry: RetryPolicy | None = None,
    poll: float = DEFAULT_POLL,
    max_requests: int | None = None,
    max_bytes: int | None = None,
    concurrency: int = 8,
    retry_failed: bool = False,
    progress: TextIO | None = None,
    progress_every: float = 10.0,
) -> BatchSummary:
    """:func:`vlmkit.batch.arun` through the provider's batch API: the same rows, keys and records.

    ``max_requests`` / ``max_bytes`` split the request files below the provider's own limits;
    ``poll`` is the seconds between looks at a job in progress.
    """
    job = make_job(model, prompt, system, config, response_format)
    if job.local:
        raise BadRequestError(
            f"--mode batch sends to a provider's batch API; {model} is a local model, whose rows run "
            "directly: drop --mode batch"
        )
    rows = list(read_rows(source, image_column=image_column))
    if rows:
        job.prompt_for(rows[0])
    cfg, probe, mod = request_for(
        job.model, [{"role": "user", "content": "."}], api_base=api_base, api_key=api_key, fetch=fetch
    )
    api = api_for(cfg)
    api.max_requests = min(api.max_requests, max_requests or api.max_requests)
    api.max_bytes = min(api.max_bytes, max_bytes or api.max_bytes)
    params = _params(job)
    out = Path(output)
    manifest_path = journal_path(out)
    started = time.monotonic()
    bar = Progress(total=len(rows), stream=progress, every=progress_every)
    http = Http(cfg.provider, mod.build_request(probe, cfg).headers, retry)
    try:
        with Manifest(manifest_path) as manifest, Submitted(f"{manifest_path}.batches") as submitted:
            runner = Runner(job, None, manifest, RateLimiter(), bar, fetch, retry_failed)
            todo = [row for row in rows if not runner.recorded(row)]
            bar.add(skipped=len(rows) - len(todo))
            recorded = {custom_id(k) for k in manifest.answers}  # errors too: their job has ended
            earlier = [j for j, ids in submitted.jobs if not set(ids) <= recorded]
            in_flight = {cid for j, ids in submitted.jobs if j in earlier for cid in ids}
            waiting: dict[str, list[Keyed]] = {}
            sent: dict[str, dict[str, Any] | None] = {}
            sending = _Sending(api, http, submitted)
            slots = asyncio.Semaphore(concurrency)

            async def one(row: Any) -> None:
                async with slots:
                    k = await runner.keyed(row)
                    if k is None:
                        return
                    cid = custom_id(k.key)
                    if cid in waiting:
                        waiting[cid].append(k)
                        return
                    waiting[cid] = [k]
                    if cid in in_flight:
                        return
                    try:
                        line, sent[cid] = await anyio.to_thread.run_sync(_line, api, job, k, params, api_base, api_key)
                        await sending.add(cid, line)
                    except VlmkitError as exc:
                        _finish(runner, waiting.pop(cid), {**k.base, "error": error_of(exc)})

            async with anyio.create_task_group() as tg:
                for row in todo:
                    tg.start_soon(one, row)
            await sending.flush()

            async def collect(job_id: str) -> None:
                ended = await api.wait(http, job_id, poll)
                answered_ids = set()
                for cid, body in await api.results(http, ended):
                    answered_ids.add(cid)
                    keyed = waiting.pop(cid, None)
                    if keyed:
                        _finish(runner, keyed, _record(keyed[0], body, mod, probe, cfg, job, sent.get(cid)))
                ids = next(ids for j, ids in submitted.jobs if j == job_id)
                why = api.unanswered(ended)
                for cid in ids:
                    keyed = waiting.pop(cid, None)
                    if keyed and cid not in answered_ids:
                        error = BatchJobError(why, provider=cfg.provider)
                        _finish(runner, keyed, {**keyed[0].base, "error": error_of(error)})

            async with anyio.create_task_group() as tg:
                for job_id in [*earlier, *sending.jobs]:
                    tg.start_soon(collect, job_id)
            records = manifest.records()
        write_output(out, records)
    finally:
        bar.close()
        await http.aclose()
    c = bar.counts
    return BatchSummary(out, len(rows), c.done, c.failed, c.skipped, c.duplicates, time.monotonic() - started)


def _params(job: BatchJob) -> dict[str, Any]:
    from vlmkit.client.backends.providers import refuse_token_bounds
    from vlmkit.wire.openai_chat import config_to_openai

    refuse_token_bounds(job.config)
    return config_to_openai(job.config)


def _wire(
    job: BatchJob, k: Keyed, params: Mapping[str, Any], api_base: str | None, api_key: str | None
) -> tuple[ProviderConfig, CompletionRequest, ProviderModule, WireRequest]:
    cfg, req, mod = request_for(job.model, job.chat(k.image, k.prompt), api_base=api_base, api_key=api_key, **params)
    return cfg, req, mod, mod.build_request(req, cfg)


def _line(
    api: BatchAPI, job: BatchJob, k: Keyed, params: Mapping[str, Any], api_base: str | None, api_key: str | None
) -> tuple[bytes, dict[str, Any] | None]:
    """The request line of a keyed row (the image rendered per the provider's policy: in a worker thread)."""
    cfg, _, _, wire = _wire(job, k, params, api_base, api_key)
    return api.line(custom_id(k.key), wire), sent_as(k.image, cfg.policy)


def _record(
    first: Keyed,
    body: Any,
    mod: ProviderModule,
    probe: CompletionRequest,
    cfg: ProviderConfig,
    job: BatchJob,
    sent: dict[str, Any] | None,
) -> dict[str, Any]:
    if isinstance(body, VlmkitError):
        return {**first.base, "error": error_of(body)}
    try:
        return answered(first.base, answer_of(mod.parse_response(body, probe, cfg), job, sent), 0.0)
    except VlmkitError as exc:
        return {**first.base, "error": error_of(exc)}


def _finish(runner: Runner, keyed: list[Keyed], record: dict[str, Any]) -> None:
    runner.write(record)
    for other in keyed[1:]:
        runner.write(duplicate(other.base, record))


async def awrite_requests(
    source: Any,
    output: str | Path,
    *,
    model: str,
    prompt: str = DEFAULT_PROMPT,
    system: str | None = None,
    config: PredictionConfig | Mapping[str, Any] | None = None,
    response_format: Any = None,
    image_column: str | None = None,
    fetch: FetchOptions | None = None,
) -> tuple[int, int]:
    """Write an OpenAI batch request file (what ``vllm run-batch -i`` reads), one line per distinct
    (image, prompt), the images as data URLs rendered per the OpenAI policy, nothing sent. ``model``
    is the served name (``hosted_vllm/NAME`` or ``openai/NAME``). Returns (lines written, rows unreadable)."""
    from vlmkit.batch.cloud_openai import OpenAIBatch

    job = make_job(model if "/" in model else f"hosted_vllm/{model}", prompt, system, config, response_format)
    params = _params(job)
    base, key = "http://127.0.0.1:8000/v1", "unused"  # placeholders: nothing is sent
    cfg = request_for(job.model, [{"role": "user", "content": "."}], api_base=base, api_key=key)[0]
    api: BatchAPI = OpenAIBatch(cfg)
    seen: set[str] = set()
    written = unreadable = 0
    out = Path(output)
    with tempfile.NamedTemporaryFile("wb", dir=out.parent, prefix=f".{out.name}.", delete=False) as f:
        for row in read_rows(source, image_column=image_column):
            try:
                image = await read_image(row, fetch)
            except VlmkitError:
                unreadable += 1
                continue
            k = Keyed(row, {}, image, job.prompt_for(row), job.key(image, job.prompt_for(row)))
            if k.key in seen:
                continue
            seen.add(k.key)
            line, _ = await anyio.to_thread.run_sync(_line, api, job, k, params, base, key)
            f.write(line + b"\n")
            written += 1
    os.replace(f.name, out)
    return written, unreadable
