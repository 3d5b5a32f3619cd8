"""The embedded engine behind the server: which local models are served, and predictions off the loop.

The engine is the process's one (:mod:`vlmkit.engine.owner`): the server holds what it loads through
a lease that carries the server's own limits (its models directory, idle TTL and queue bound), and
an SDK client in the same process shares the models with it. Only names the server knows are handed
to the engine (configured models and downloaded ones), never a client's path. Each prediction runs on
its own thread (:mod:`vlmkit.stream`), so a full model queue is answered at once (the engine raises
``QueueFullError``: 429) instead of waiting for a pool thread. Every running prediction has a
:class:`~vlmkit.stream.CancelToken`: a client that goes away, or a shutdown, cancels it, and the
engine stops at the next token.

An image uploaded for a local model (``POST /v1/files`` with a ``model``) is prepared in the
background (:meth:`LocalModels.prepare_later`): one worker thread, which waits until no prediction
is running before it takes a model's turn, so that a warm-up never holds up a question.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from types import EllipsisType

from vlmkit.chat import Chat
from vlmkit.engine import LoadOptions, list_downloaded
from vlmkit.engine.gguf_meta import has_vision_encoder, read_model_meta
from vlmkit.engine.owner import Lease
from vlmkit.engine.resolve import resolve_model
from vlmkit.errors import ModelLoadError, ModelNotFoundError, VlmkitError
from vlmkit.images import ImageHandle
from vlmkit.prediction import ModelInfo, PredictionConfig, PredictionFragment, PredictionResult, StopReason
from vlmkit.server.config import ConfigError, ServerSettings
from vlmkit.stream import AsyncPredictionStream, CancelToken, FragmentCallback, call_in_thread

log = logging.getLogger("vlmkit.server")


@dataclass(frozen=True)
class LocalEntry:
    name: str
    vision: bool
    source: str  # "config" or "downloaded"
    size_bytes: int
    path: str
    architecture: str = "unknown"
    context_length: int | None = None


class LocalModels:
    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.lease = Lease(
            models_dir=settings.models_dir,
            ttl=settings.model_ttl,
            max_queue=settings.max_queue,
            options=LoadOptions(gpu=settings.gpu),
        )
        self._configured: dict[str, LocalEntry] = {}
        for m in settings.local.values():
            try:
                files = resolve_model(m.path, mmproj=m.mmproj, models_dir=settings.models_dir)
            except (ModelNotFoundError, ModelLoadError) as exc:
                entry = "mmproj" if m.mmproj is not None and not Path(m.mmproj).expanduser().is_file() else "path"
                raise ConfigError(f"the config entry models.{m.name}.{entry}: {exc.detail}") from None
            self.lease.register(
                m.name,
                files.model,
                files.mmproj,
                options=LoadOptions(gpu=settings.gpu if m.gpu is None else m.gpu, cpu_threads=m.threads),
            )
            vision = has_vision_encoder(files.mmproj)
            size = sum(p.stat().st_size for p in (files.model, files.mmproj) if p is not None)
            meta = read_model_meta(files.model)
            self._configured[m.name] = LocalEntry(
                m.name, vision, "config", size, str(files.model), meta.architecture, meta.context_length
            )
        self._downloaded: dict[str, LocalEntry] = {}
        self._downloaded_at = -1e9
        self.on_result: Callable[[str, PredictionResult], None] | None = None
        """Told of every finished prediction (from its worker thread): the server's metrics."""
        self._inflight: set[CancelToken] = set()
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._preparing: queue.Queue[tuple[str, str, ImageHandle] | None] = queue.Queue()
        self._preparer: threading.Thread | None = None
        self._prepared: dict[tuple[str, str], str] = {}
        self.closing = False

    # --- which models --------------------------------------------------------------------------

    def entries(self, *, refresh: bool = False) -> dict[str, LocalEntry]:
        if refresh or time.monotonic() - self._downloaded_at > 2.0:
            found: dict[str, LocalEntry] = {}
            for listing in list_downloaded(self.settings.models_dir):
                found[listing.key] = LocalEntry(
                    listing.key,
                    listing.vision,
                    "downloaded",
                    listing.size_bytes,
                    listing.path,
                    listing.architecture,
                    listing.context_length,
                )
            self._downloaded, self._downloaded_at = found, time.monotonic()
        return {**self._downloaded, **self._configured}

    def find(self, name: str) -> LocalEntry | None:
        entry = self._configured.get(name) or self._downloaded.get(name)
        if entry is None and not name.startswith(("/", ".", "~")):
            entry = self.entries(refresh=True).get(name)
        return entry

    def loaded(self) -> list[ModelInfo]:
        return self.lease.list_loaded()

    def is_loaded(self, name: str) -> bool:
        return self.lease.is_loaded(name)

    async def load(self, name: str, *, ttl: float | EllipsisType | None = ...) -> ModelInfo:
        return await call_in_thread(lambda: self.lease.load(name, ttl=ttl), name="vlmkit-server-load")

    async def unload(self, name: str) -> bool:
        return await call_in_thread(lambda: self.lease.unload(name), name="vlmkit-server-unload")

    # --- predictions ---------------------------------------------------------------------------

    async def respond(self, name: str, chat: Chat, config: PredictionConfig, token: CancelToken) -> PredictionResult:
        stream = self.open_stream(name, chat, config, token)
        return await stream.wait_for_result()  # cancelling the request's task cancels the token

    async def stream(
        self, name: str, chat: Chat, config: PredictionConfig, token: CancelToken
    ) -> AsyncIterator[PredictionFragment | PredictionResult]:
        """Fragments as they come, then the :class:`PredictionResult` as the last item."""
        stream = self.open_stream(name, chat, config, token)
        try:
            async for fragment in stream:
                yield fragment
            yield stream.result()
        finally:
            token.cancel()  # a no-op when it finished; stops it when the consumer went away

    def open_stream(self, name: str, chat: Chat, config: PredictionConfig, token: CancelToken) -> AsyncPredictionStream:
        """The prediction, started, as a stream read on the loop (for a reader that paces itself with
        :meth:`~vlmkit.stream.AsyncPredictionStream.next_within`); a reader that stops early cancels ``token``."""
        self._start(token)

        def work(
            on_fragment: FragmentCallback, on_first_token: Callable[[], None], cancel: CancelToken
        ) -> PredictionResult:
            try:
                result = self.lease.respond(name, chat, config, on_fragment=on_fragment, cancel=cancel)
                if self.on_result is not None:
                    self.on_result(name, result)
            finally:
                self._end(cancel)
            if result.stats.stop_reason is StopReason.USER_STOPPED:
                log.info(
                    "%s: generation stopped after %d tokens (its client went away, or the server is stopping)",
                    name,
                    result.stats.predicted_tokens,
                )
            return result

        return AsyncPredictionStream(work, model=name, cancel=token)

    def _start(self, token: CancelToken) -> None:
        if self.closing:
            raise ServerClosingError("the server is shutting down; retry on another instance")
        with self._lock:
            self._inflight.add(token)

    def _end(self, token: CancelToken) -> None:
        with self._lock:
            self._inflight.discard(token)
            if not self._inflight:
                self._idle.notify_all()

    # --- images prepared ahead -----------------------------------------------------------------

    def prepare_later(self, file_id: str, name: str, image: ImageHandle) -> None:
        """Encode ``image`` (the upload ``file_id``) for the local model ``name`` in the background,
        at the default budget, once no prediction is running."""
        with self._lock:
            self._prepared[(file_id, name)] = "queued"
            if self._preparer is None:
                self._preparer = threading.Thread(target=self._prepare_loop, name="vlmkit-server-prepare", daemon=True)
                self._preparer.start()
        self._preparing.put((file_id, name, image))

    def preparation(self, file_id: str) -> dict[str, str]:
        """Where the background preparations of ``file_id`` stand, by model: queued, done, or failed: why."""
        with self._lock:
            return {name: status for (fid, name), status in self._prepared.items() if fid == file_id}

    def forget_preparations(self, file_id: str) -> None:
        with self._lock:
            for key in [k for k in self._prepared if k[0] == file_id]:
                del self._prepared[key]

    def _prepare_loop(self) -> None:
        while (job := self._preparing.get()) is not None:
            file_id, name, image = job
            with self._idle:  # low priority: never ahead of, or beside, a running prediction
                self._idle.wait_for(lambda: not self._inflight or self.closing)
            if self.closing:
                return
            try:
                self.lease.prepare(name, image, PredictionConfig())
                status = "done"
            except VlmkitError as exc:
                log.warning("preparing the upload %s for %s failed: %s", file_id, name, exc)
                status = f"failed: {exc}"
            with self._lock:
                if (file_id, name) in self._prepared:  # not deleted meanwhile
                    self._prepared[(file_id, name)] = status

    # --- lifetime ------------------------------------------------------------------------------

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    def cancel_all(self) -> None:
        with self._lock:
            tokens = list(self._inflight)
        for token in tokens:
            token.cancel()

    def close(self) -> None:
        """Cancel what still runs and unload every model (each after its running prediction stops)."""
        self.closing = True
        self.cancel_all()
        with self._idle:
            self._idle.notify_all()
        self._preparing.put(None)
        if self._preparer is not None:
            self._preparer.join()
        self.lease.close()


class ServerClosingError(VlmkitError):
    status_code = 503
