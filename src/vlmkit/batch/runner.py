"""Running a batch: every row read, keyed, sent once, and recorded, with resume, dedupe and limits.

The core is async (:func:`arun`); :func:`run` is it for sync code. Rows go through one pipeline:

1. a row the manifest has already recorded is skipped (a resume);
2. its image is read, ahead of the sends (files and bytes a chunk of rows at a time on a reader
   thread, :func:`read_local`; URLs fetched safely, :func:`read_image`), and its key made from the
   image's content hash, the prompt, model and settings; an image that cannot be read is the row's
   error record, and the run goes on;
3. a key answered before (in this run or an earlier one) is not sent again: the row's record is a
   copy of that answer naming the row it duplicates (``duplicate_of``);
4. the rest are sent: a ``provider/name`` key through :func:`vlmkit.providers.acompletion` (the
   provider's own request translation and image policy, the transport's retries with backoff on
   429 and 5xx, over the run's own pool of kept-alive connections, :mod:`vlmkit.providers.pooled`)
   at most ``concurrency`` at a time and within ``rpm`` / ``tpm``; a local key to the
   process's one engine (:mod:`vlmkit.engine.owner`), one prediction after another on the loaded
   model while the next rows' images are read beside it.

Each finished row is appended to the manifest at once (:mod:`vlmkit.batch.manifest`), so a killed
run loses only the rows it had in flight.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc

from vlmkit.batch.estimate import image_tokens, token_rule
from vlmkit.batch.inputs import Row, read_rows
from vlmkit.batch.job import DEFAULT_PROMPT, BatchJob, make_job
from vlmkit.batch.limits import RateLimiter
from vlmkit.batch.manifest import Manifest
from vlmkit.batch.output import journal_path, write_output
from vlmkit.batch.progress import Progress
from vlmkit.errors import BadRequestError, VlmkitError
from vlmkit.images import ImageHandle, ImagePolicy, aprepare_image, prepare_image
from vlmkit.images.render import needs_change, render_cache
from vlmkit.images.source import is_http
from vlmkit.prediction import PredictionConfig, PredictionResult, parse_structured
from vlmkit.wire.openai_chat import config_to_openai, finish_reason_of, stats_from_openai

if TYPE_CHECKING:
    from typing import TextIO

    from vlmkit.engine.owner import Lease
    from vlmkit.images.fetch import FetchOptions
    from vlmkit.providers.base import ProviderConfig
    from vlmkit.providers.response import ChatCompletion
    from vlmkit.providers.transport import RetryPolicy


@dataclass(frozen=True)
class BatchSummary:
    """What a run did: rows in the source, and how each ended."""

    output: Path
    rows: int
    done: int
    failed: int
    skipped: int
    duplicates: int
    seconds: float

    @property
    def rows_per_second(self) -> float:
        return (self.done + self.failed) / self.seconds if self.seconds > 0 else 0.0


# --- targets: where a row's question goes --------------------------------------------------------


@dataclass
class Answer:
    content: str
    parsed: Any
    usage: dict[str, int]
    finish: str
    sent: dict[str, Any] | None


class LocalTarget:
    """The process's one engine: predictions one after another on the loaded model."""

    def __init__(self, job: BatchJob, *, threads: int | None = None, models_dir: str | Path | None = None) -> None:
        from vlmkit.engine.model import LoadOptions
        from vlmkit.engine.owner import Lease

        self.job = job
        self.lease: Lease = Lease(models_dir=models_dir, options=LoadOptions(cpu_threads=threads) if threads else None)
        self._turn = anyio.Lock()

    async def start(self) -> None:
        """Load the model before the first row, so that a wrong key fails the run, not every row."""
        await anyio.to_thread.run_sync(lambda: self.lease.load(self.job.model_name))

    async def answer(self, image: ImageHandle, prompt: str) -> Answer:
        chat, config = self.job.chat(image, prompt), self.job.config
        async with self._turn:
            result = await anyio.to_thread.run_sync(lambda: self.lease.respond(self.job.model_name, chat, config))
        stats = result.stats
        sizes = stats.image_sizes
        return Answer(
            content=result.content,
            parsed=_parsed(result, config, self.job.model),
            usage={"prompt_tokens": stats.prompt_tokens, "completion_tokens": stats.predicted_tokens},
            finish=finish_reason_of(stats.stop_reason),  # OpenAI's word, as a provider's record has
            sent={"size": sizes[0], "image_tokens": stats.image_tokens} if sizes else None,
        )

    def estimate_tokens(self, image: ImageHandle, prompt: str) -> int:
        return 0

    async def aclose(self) -> None:
        self.lease.close()


class ProviderTarget:
    """A provider's API through :func:`vlmkit.providers.acompletion`, many requests in flight."""

    def __init__(
        self,
        job: BatchJob,
        *,
        api_base: str | None = None,
        api_key: str | None = None,
        max_retries: int | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        fetch: FetchOptions | None = None,
        concurrency: int = 8,
    ) -> None:
        from vlmkit.providers.pooled import pooled_transport
        from vlmkit.providers.registry import resolve

        self.params = provider_params(job)
        self.job = job
        self.rule = token_rule(job.model) or "openai"  # for the limiter, OpenAI's where none is published
        self.cfg: ProviderConfig = resolve(job.model, api_base=api_base, api_key=api_key)
        # Its own connection pool, one connection per request in flight: httpx's default pool scans
        # every connection per request and keeps only 20 alive, so at 32 in flight it reconnected.
        self.transport = pooled_transport(limit=concurrency)
        self.options: dict[str, Any] = {
            "api_base": api_base,
            "api_key": api_key,
            "max_retries": max_retries,
            "retry": retry,
            "timeout": timeout,
            "fetch": fetch,
            "transport": self.transport,
        }

    async def start(self) -> None:
        return None

    async def answer(self, image: ImageHandle, prompt: str) -> Answer:
        from vlmkit.providers import acompletion

        chat = self.job.chat(image, prompt)
        started = time.perf_counter()
        response = await acompletion(self.job.model, chat, **self.options, **self.params)
        seconds = time.perf_counter() - started
        return answer_of(response, self.job, await asent_as(image, self.cfg.policy), seconds)

    def estimate_tokens(self, image: ImageHandle, prompt: str) -> int:
        """Tokens the request may take, for a tokens-per-minute limit: image, prompt, and the answer's limit."""
        answer = self.job.config.max_tokens or 256
        return image_tokens(image, self.rule) + math.ceil(len(prompt) / 4) + answer

    async def aclose(self) -> None:
        await self.transport.aclose()


Target = LocalTarget | ProviderTarget


def provider_params(job: BatchJob) -> dict[str, Any]:
    """The job's settings as a provider request's OpenAI fields (the engine's image token bounds refused)."""
    from vlmkit.client.backends.providers import refuse_token_bounds

    refuse_token_bounds(job.config)
    return config_to_openai(job.config)


def answer_of(response: ChatCompletion, job: BatchJob, sent: dict[str, Any] | None, seconds: float = 0.0) -> Answer:
    """A provider's answer (in OpenAI's shape) as a row's answer, its structured reply parsed."""
    choice = response.choices[0]
    usage = response.usage
    prompt_tokens, completion_tokens = (usage.prompt_tokens, usage.completion_tokens) if usage else (0, 0)
    content = choice.message.content or ""
    stats = stats_from_openai(
        choice.finish_reason, prompt_tokens, completion_tokens, started=0.0, first_token=None, ended=seconds
    )
    result = PredictionResult(content=content, stats=stats)
    return Answer(
        content=content,
        parsed=_parsed(result, job.config, job.model),
        usage={"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens},
        finish=choice.finish_reason or "stop",
        sent=sent,
    )


def sent_as(image: ImageHandle, policy: ImagePolicy) -> dict[str, Any] | None:
    """What a provider is sent for ``image``: its rendering under the provider's policy (cached per
    policy: after the request was built, a lookup that needs no thread)."""
    if image.is_reference:
        return None
    rendered = image.render(policy)
    return {"size": f"{rendered.width}x{rendered.height}", "mime_type": rendered.mime_type, "bytes": len(rendered.data)}


async def asent_as(image: ImageHandle, policy: ImagePolicy) -> dict[str, Any] | None:
    """:func:`sent_as` without a thread where it is a lookup: the original bytes, or the rendering the
    request was built with (in the render cache); one evicted since is rendered again off the loop."""
    if image.is_reference or not needs_change(image, policy) or render_cache.get((image.identifier, policy)):
        return sent_as(image, policy)
    return await anyio.to_thread.run_sync(sent_as, image, policy)


def _parsed(result: PredictionResult, config: PredictionConfig, model: str) -> Any:
    if config.response_format is None:
        return None
    if result.parsed is not None:
        return result.parsed
    parsed = parse_structured(result, config.response_format, model)
    dump = getattr(parsed, "model_dump", None)
    return dump(mode="json") if callable(dump) else parsed


# --- the run --------------------------------------------------------------------------------------


def run(source: Any, output: str | Path, **options: Any) -> BatchSummary:
    """:func:`arun` for sync code (it starts an event loop: in async code, await :func:`arun`)."""
    return asyncio.run(arun(source, output, **options))


async def arun(
    source: Any,
    output: str | Path,
    *,
    model: str,
    prompt: str = DEFAULT_PROMPT,
    system: str | None = None,
    config: PredictionConfig | Mapping[str, Any] | None = None,
    response_format: Any = None,
    image_column: str | None = None,
    concurrency: int = 8,
    rpm: int | None = None,
    tpm: int | None = None,
    max_retries: int | None = None,
    retry: RetryPolicy | None = None,
    timeout: float | None = None,
    api_base: str | None = None,
    api_key: str | None = None,
    fetch: FetchOptions | None = None,
    threads: int | None = None,
    models_dir: str | Path | None = None,
    retry_failed: bool = False,
    progress: TextIO | None = None,
    progress_every: float = 10.0,
) -> BatchSummary:
    """Ask ``model`` about every image of ``source`` and record one answer per row in ``output``.

    ``source`` is a folder, a glob, a .txt/.csv/.jsonl/.parquet file or an iterable of rows
    (:mod:`vlmkit.batch.inputs`); ``output`` a ``.jsonl`` file (also the manifest a rerun resumes
    from) or a ``.parquet`` file (written at the end, its manifest beside it as ``.parquet.jsonl``).
    ``prompt`` may name row fields (``"Caption {name}"``). ``config`` holds the prediction settings
    (a :class:`~vlmkit.PredictionConfig` or a dict of them), ``response_format`` a JSON schema or
    pydantic class. ``max_retries`` / ``retry`` (a
    :class:`~vlmkit.providers.RetryPolicy`) govern the retries of 429 and 5xx answers, with backoff;
    ``concurrency`` bounds the requests in flight, ``rpm`` / ``tpm`` what a minute may send.
    ``retry_failed`` sends again the rows an earlier run recorded as errors.
    """
    job = make_job(model, prompt, system, config, response_format)
    if concurrency < 1:
        raise BadRequestError(f"concurrency must be at least 1, not {concurrency}")
    limiter = RateLimiter(rpm, tpm)
    rows = list(read_rows(source, image_column=image_column))
    if rows:
        job.prompt_for(rows[0])  # a template naming a field the rows lack fails the run, not every row
    target: Target = (
        LocalTarget(job, threads=threads, models_dir=models_dir)
        if job.local
        else ProviderTarget(
            job,
            api_base=api_base,
            api_key=api_key,
            max_retries=max_retries,
            retry=retry,
            timeout=timeout,
            fetch=fetch,
            concurrency=concurrency,
        )
    )
    out = Path(output)
    started = time.monotonic()
    bar = Progress(total=len(rows), stream=progress, every=progress_every)
    try:
        with Manifest(journal_path(out)) as manifest:
            runner = Runner(job, target, manifest, limiter, bar, fetch, retry_failed)
            todo = [row for row in rows if not runner.recorded(row)]
            bar.add(skipped=len(rows) - len(todo))
            if todo:
                await target.start()
                await runner.run_all(todo, concurrency)
            records = manifest.records()
        write_output(out, records)
    finally:
        bar.close()
        await target.aclose()
    c = bar.counts
    return BatchSummary(out, len(rows), c.done, c.failed, c.skipped, c.duplicates, time.monotonic() - started)


READ_AHEAD = 8
"""Rows read and keyed ahead of those being sent."""
READ_CHUNK = 8
"""Local images read in one trip to a reader thread."""
READERS = 2
"""Threads reading local images (see :func:`read_image`)."""


@dataclass
class Keyed:
    """A row whose image is read and whose key is made: work to send."""

    row: Row
    base: dict[str, Any]
    image: ImageHandle
    prompt: str
    key: str


class Runner:
    """The pipeline of rows (see the module's docstring) over one target, manifest and progress."""

    def __init__(
        self,
        job: BatchJob,
        target: Target | None,
        manifest: Manifest,
        limiter: RateLimiter,
        progress: Progress,
        fetch: FetchOptions | None,
        retry_failed: bool,
    ) -> None:
        self.job, self.target, self.manifest = job, target, manifest
        self.limiter, self.progress, self.fetch = limiter, progress, fetch
        self.retry_failed = retry_failed
        self.pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.readers = anyio.CapacityLimiter(READERS)
        self.sending = asyncio.Semaphore(8)  # run_all sets its own

    def recorded(self, row: Row) -> bool:
        record = self.manifest.rows.get(row.index)
        if record is None or record.get("input") != row.ref:
            return False
        return not (self.retry_failed and "error" in record)

    async def run_all(self, rows: list[Row], concurrency: int) -> None:
        """Every row, at most ``concurrency`` of them sent at once; up to :data:`READ_AHEAD` more are
        read and keyed meanwhile, so that a request never waits for its image to be read. Local
        images are read :data:`READ_CHUNK` at a time, in one trip to a reader thread."""
        slots = asyncio.Semaphore(concurrency + READ_AHEAD)
        self.sending = asyncio.Semaphore(concurrency)

        async def one(row: Row, read: Read) -> None:
            try:
                await self.row(row, read)
            finally:
                slots.release()

        chunks = iter([rows[i : i + READ_CHUNK] for i in range(0, len(rows), READ_CHUNK)])
        reading: collections.deque[tuple[list[Row], asyncio.Future[list[Read]]]] = collections.deque()

        def read_ahead() -> None:  # each reader thread has a chunk to read while rows wait for their slots
            while len(reading) < READERS and (chunk := next(chunks, None)) is not None:
                reading.append((chunk, asyncio.ensure_future(read_local(chunk, self.readers))))

        try:
            async with task_group() as tg:
                read_ahead()
                while reading:
                    chunk, read = reading.popleft()
                    reads = await read
                    read_ahead()
                    for row, image in zip(chunk, reads, strict=True):
                        await slots.acquire()
                        tg.start_soon(one, row, image)
        finally:
            for _, read in reading:
                read.cancel()

    async def keyed(self, row: Row, read: Read = None) -> Keyed | None:
        """The row read (or ``read`` already, by :func:`read_local`) and keyed, or None when it is
        finished already: its image unreadable (an error record), or its key answered before (a
        record naming the row it duplicates)."""
        base: dict[str, Any] = {"row": row.index, "input": row.ref, "model": self.job.model}
        try:
            prompt = self.job.prompt_for(row)
            if isinstance(read, VlmkitError):
                raise read
            image = read or await read_image(row, self.fetch, self.readers)
        except VlmkitError as exc:
            self.write({**base, "key": None, "image": None, "error": error_of(exc)})
            return None
        key = self.job.key(image, prompt)
        base.update(key=key, image=image.identifier)
        earlier = self.manifest.answers.get(key)
        if earlier is not None and not (self.retry_failed and "error" in earlier):
            self.write(duplicate(base, earlier))
            return None
        return Keyed(row, base, image, prompt, key)

    async def row(self, row: Row, read: Read = None) -> None:
        k = await self.keyed(row, read)
        if k is None:
            return
        waiting = self.pending.get(k.key)
        if waiting is not None:
            return self.write(duplicate(k.base, await waiting))
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.pending[k.key] = future
        began = time.perf_counter()
        assert self.target is not None, "a runner without a target only reads and keys rows"
        try:
            async with self.sending:
                if self.limiter.limited:
                    await self.limiter.acquire(self.target.estimate_tokens(k.image, k.prompt))
                answer = await self.target.answer(k.image, k.prompt)
        except VlmkitError as exc:
            record = {**k.base, "error": error_of(exc)}
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: the row that waits on it re-raises it itself
            raise
        else:
            record = answered(k.base, answer, time.perf_counter() - began)
        future.set_result(record)
        self.pending.pop(k.key, None)
        self.write(record)

    def write(self, record: dict[str, Any]) -> None:
        self.manifest.append(record)
        if "error" in record:
            self.progress.add(failed=1, duplicates=int("duplicate_of" in record))
        else:
            self.progress.add(done=1, duplicates=int("duplicate_of" in record))


@contextlib.asynccontextmanager
async def task_group() -> AsyncIterator[anyio.abc.TaskGroup]:
    """anyio's task group, whose one failure comes out as itself (a ``VlmkitError`` the command line
    reports in one line) rather than inside an exception group."""
    try:
        async with anyio.create_task_group() as tg:
            yield tg
    except Exception as exc:
        inner: BaseException = exc
        while isinstance(getattr(inner, "exceptions", None), tuple) and len(inner.exceptions) == 1:  # type: ignore[attr-defined]
            inner = inner.exceptions[0]  # type: ignore[attr-defined]
        if inner is not exc and isinstance(inner, VlmkitError):
            raise inner from exc
        raise


async def read_image(row: Row, fetch: FetchOptions | None, readers: anyio.CapacityLimiter | None = None) -> ImageHandle:
    """The row's image, read, validated and hashed off the event loop (URLs fetched safely with ``fetch``).

    A local image (a path, bytes) is read by one of ``readers``' threads: a few threads keep up with
    any number of requests in flight, where a thread per row had dozens contending for the GIL
    with the event loop that sends and receives.
    """
    if row.image is None:
        raise BadRequestError(f"row {row.index} ({row.ref}) names no image: its image column is empty")
    if _is_url(row.image):
        image = await aprepare_image(row.image, fetch=fetch)
        await anyio.to_thread.run_sync(lambda: image.identifier, limiter=readers)
        return image
    return await anyio.to_thread.run_sync(_prepared, row.image, limiter=readers)


Read = ImageHandle | VlmkitError | None
"""A row's image as :func:`read_local` read it: the image, the error that made it unreadable, or
None when it was not read there (a URL, or no image: the row reads it, or fails, itself)."""


async def read_local(rows: Sequence[Row], readers: anyio.CapacityLimiter | None = None) -> list[Read]:
    """The local images of ``rows`` (paths, bytes) read, validated and hashed in one trip to a reader
    thread: a trip per row cost as much as the reading of a small image."""
    local = [i for i, row in enumerate(rows) if row.image is not None and not _is_url(row.image)]
    out: list[Read] = [None] * len(rows)
    if local:
        reads = await anyio.to_thread.run_sync(_read_all, [rows[i].image for i in local], limiter=readers)
        for i, read in zip(local, reads, strict=True):
            out[i] = read
    return out


def _is_url(source: Any) -> bool:
    return isinstance(source, str) and is_http(source)


def _read_all(sources: list[Any]) -> list[Read]:
    out: list[Read] = []
    for source in sources:
        try:
            out.append(_prepared(source))
        except VlmkitError as exc:
            out.append(exc)
    return out


def _prepared(source: Any) -> ImageHandle:
    image = prepare_image(source)
    image.identifier  # noqa: B018  (the content hash, for the row's key: computed here, not on the event loop)
    return image


def answered(base: dict[str, Any], answer: Answer, seconds: float) -> dict[str, Any]:
    return {
        **base,
        "answer": answer.content,
        "parsed": answer.parsed,
        "finish": answer.finish,
        "usage": answer.usage,
        "sent": answer.sent,
        "seconds": round(seconds, 4),
    }


def duplicate(base: dict[str, Any], earlier: Mapping[str, Any]) -> dict[str, Any]:
    copied = {k: v for k, v in earlier.items() if k in ("answer", "parsed", "finish", "usage", "sent", "error")}
    return {**base, **copied, "duplicate_of": earlier.get("duplicate_of", earlier["row"])}


def error_of(exc: VlmkitError) -> dict[str, Any]:
    """A row's structured error: the error's type, its message, and the HTTP status vlmkit gives it."""
    return {"type": type(exc).__name__, "message": str(exc), "status_code": getattr(exc, "status_code", None)}
