"""The embedded engine: loads vision-language models in-process and answers chats about images.

>>> engine = Engine()
>>> engine.load("smolvlm-256m")                       # a downloaded catalog key, or a .gguf path
>>> result = engine.respond("smolvlm-256m", chat, PredictionConfig(max_tokens=64))

One loaded model serves one prediction at a time; concurrent callers queue in order (bounded).
Models unload after an idle TTL (default one hour); a model asked for again loads again as it was
loaded (the same files, TTL and options). A model runs on the GPU when llama.cpp was built with one
(:mod:`vlmkit.engine.gpu`). A follow-up turn reuses the evaluated prefix and does no image work at
all (:mod:`vlmkit.engine.prepared`), and finds the previous reply evaluated already, as the template
writes it (:mod:`vlmkit.engine.settle`); a new chat about a known image reuses its embeddings, in this
process or, from the encoder cache on disk, in the next one (:mod:`vlmkit.engine.reuse`,
:mod:`vlmkit.engine.encoder_cache`).

An :class:`Engine` may be made on its own (the tests make several); everything else in vlmkit shares
the one of :mod:`vlmkit.engine.owner`, so that a model is in memory once per process.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlmkit.chat import Chat, ChatMessage
from vlmkit.engine import predict
from vlmkit.engine.loaded import LoadedModel
from vlmkit.engine.model import LoadOptions
from vlmkit.engine.resolve import ModelFiles, resolve_model
from vlmkit.engine.reuse import DEFAULT_EMBEDDING_CACHE_BYTES
from vlmkit.engine.settle import Settler
from vlmkit.errors import ModelLoadError, ModelNotFoundError
from vlmkit.images import ImageHandle
from vlmkit.prediction import ModelInfo, PredictionConfig, PredictionFragment, PredictionResult, PreparedImageInfo
from vlmkit.stream import CancelToken, FragmentCallback, PredictionStream

DEFAULT_TTL = 3600.0
DEFAULT_MAX_QUEUE = 16

ChatInput = Chat | Sequence[ChatMessage] | str


@dataclass(frozen=True)
class _LoadedAs:
    """How a model was loaded, so that it loads again the same way after an unload."""

    files: ModelFiles
    ttl: float | None
    options: LoadOptions


class Engine:
    """Loads models and runs predictions. Thread-safe; one prediction at a time per model."""

    def __init__(
        self,
        *,
        models_dir: str | Path | None = None,
        default_ttl: float | None = DEFAULT_TTL,
        max_queue: int = DEFAULT_MAX_QUEUE,
        embedding_cache_bytes: int = DEFAULT_EMBEDDING_CACHE_BYTES,
        load_options: LoadOptions | None = None,
        settle_replies: bool = True,
    ) -> None:
        """``settle_replies``: after each reply, while the model is idle, evaluate the chat with the
        reply as its template writes it, so a follow-up evaluates only its own message
        (:mod:`vlmkit.engine.settle`)."""
        self.load_options = load_options or LoadOptions()
        self.settle_replies = settle_replies
        self._settler = Settler()
        self.models_dir = Path(models_dir) if models_dir is not None else None
        self.default_ttl = default_ttl
        self.max_queue = max_queue
        self.embedding_cache_bytes = embedding_cache_bytes
        self._loaded: dict[str, LoadedModel] = {}
        self._loaded_as: dict[str, _LoadedAs] = {}
        self.load_count = 0
        """How many times a model has been loaded (a model in memory already is not loaded again)."""
        self._registered: dict[str, ModelFiles] = {}
        self._registered_options: dict[str, LoadOptions] = {}
        self._lock = threading.RLock()
        self._load_locks: dict[str, threading.Lock] = {}
        self._janitor_wake = threading.Event()
        self._closed = False
        self._janitor = threading.Thread(target=self._janitor_loop, name="vlmkit-engine-ttl", daemon=True)
        self._janitor.start()

    # --- models ---------------------------------------------------------------------------------

    def register(
        self,
        key: str,
        model_path: str | Path,
        mmproj_path: str | Path | None = None,
        *,
        options: LoadOptions | None = None,
    ) -> None:
        """Make local files answer to ``key`` (e.g. a generated test model standing in for a real one).

        ``options``: how it loads when a load does not say (default: the engine's ``load_options``).
        """
        files = resolve_model(str(model_path), mmproj=mmproj_path, models_dir=self.models_dir)
        self._registered[key] = ModelFiles(key=key, model=files.model, mmproj=files.mmproj)
        if options is not None:
            self._registered_options[key] = options

    def load(
        self,
        model: str | Path,
        *,
        mmproj: str | Path | None = None,
        key: str | None = None,
        ttl: float | Any | None = ...,
        options: LoadOptions | None = None,
        models_dir: str | Path | None = None,
        default_options: LoadOptions | None = None,
    ) -> ModelInfo:
        """Load ``model`` (a key, ``repo/name``, a .gguf path or a directory) unless it already is.

        ``ttl`` is the idle time in seconds before it unloads (``None``: never; default: the engine's).
        ``options``, else those ``model`` was registered with, else ``default_options`` (a caller's
        own default), else the engine's say how it loads. ``models_dir`` is where to find a downloaded
        key (default: the engine's). A model already loaded under that key from other files is an
        error, not a silent stand-in.
        """
        files = self.resolve(str(model), mmproj, models_dir=models_dir)
        name = key or files.key
        chosen = options or self._registered_options.get(name) or default_options or self.load_options
        return self._load(name, _LoadedAs(files, self.default_ttl if ttl is ... else ttl, chosen))

    def ensure_loaded(self, model: str) -> ModelInfo:
        """``model``'s info, loading it unless it is loaded (as it was loaded before, if it was)."""
        return self._get(model).info

    def resolve(
        self, model: str, mmproj: str | Path | None = None, *, models_dir: str | Path | None = None
    ) -> ModelFiles:
        """The files ``model`` names (a registered key first), found without loading anything."""
        if mmproj is None and model in self._registered:
            return self._registered[model]
        return resolve_model(model, mmproj=mmproj, models_dir=models_dir if models_dir is not None else self.models_dir)

    def unload(self, key: str) -> bool:
        """Unload a model (after its running prediction, if any). False if it was not loaded."""
        with self._lock:
            lm = self._loaded.get(key)
        if lm is None:
            return False
        lm.queue.acquire(what=f"model {key!r}")
        try:
            with self._lock:
                if self._loaded.get(key) is lm:
                    del self._loaded[key]
            lm.close()
        finally:
            lm.queue.release()
        return True

    def unload_all(self) -> None:
        for key in list(self._loaded):
            self.unload(key)

    def list_loaded(self) -> list[ModelInfo]:
        with self._lock:
            return [lm.info for lm in self._loaded.values()]

    def is_loaded(self, key: str) -> bool:
        return key in self._loaded

    def get_info(self, key: str) -> ModelInfo:
        lm = self._loaded.get(key)
        if lm is None:
            raise ModelNotFoundError(f"model {key!r} is not loaded; loaded: {', '.join(self._loaded) or 'none'}")
        return lm.info

    # --- predictions ----------------------------------------------------------------------------

    def respond(
        self,
        model: str,
        chat: ChatInput,
        config: PredictionConfig | None = None,
        *,
        on_fragment: Callable[[PredictionFragment], None] | None = None,
        on_first_token: Callable[[], None] | None = None,
        cancel: CancelToken | None = None,
        queue_timeout: float | None = None,
        max_queue: int | None = None,
    ) -> PredictionResult:
        """Answer ``chat`` with ``model`` (loaded on demand). Blocks; fragments go to ``on_fragment``.

        A cancelled prediction returns what it had, with stop reason ``userStopped``; one cancelled
        while still queued raises :class:`~vlmkit.errors.PredictionCancelledError`. ``max_queue``
        bounds the callers waiting for this model, for this call (default: the engine's bound).
        """
        token = cancel or CancelToken()
        messages = _as_chat(chat)
        with self._turn(model, token, queue_timeout, max_queue) as lm:
            result = predict.run(
                lm,
                messages,
                config,
                emit=on_fragment,
                on_first_token=on_first_token,
                should_stop=lambda: token.cancelled,
            )
        if self.settle_replies:
            self._settler.submit(lm, messages, result, config)
        return result

    def wait_settled(self, timeout: float | None = None) -> bool:
        """Wait until the latest replies are settled (see ``settle_replies``); False on timeout."""
        return self._settler.wait_idle(timeout)

    def prepare(
        self,
        model: str,
        image: ImageHandle,
        config: PredictionConfig | None = None,
        *,
        queue_timeout: float | None = None,
        max_queue: int | None = None,
    ) -> PreparedImageInfo:
        """Encode ``image`` for ``model`` at ``config``'s image budget (``detail``, ``image_max_tokens``,
        ``image_min_tokens``) without generating, so that a prompt about it encodes nothing.

        Takes the model's turn like a prediction (queued behind the running one).
        """
        with self._turn(model, CancelToken(), queue_timeout, max_queue) as lm:
            return predict.prepare(lm, image, config)

    def tokenize(self, model: str, text: str, *, max_queue: int | None = None) -> list[int]:
        """``text`` in ``model``'s tokens (special tokens read as such), in the model's turn."""
        with self._turn(model, CancelToken(), None, max_queue) as lm:
            return lm.native.tokenize(text)

    def format_prompt(self, model: str, chat: ChatInput, *, max_queue: int | None = None) -> str:
        """The prompt ``model``'s chat template makes of ``chat``, up to where the reply starts; each
        image is the model's media marker. The chat's images must have been read."""
        with self._turn(model, CancelToken(), None, max_queue) as lm:
            return lm.template.render(_as_chat(chat), lm.native.marker).text

    def respond_stream(
        self,
        model: str,
        chat: ChatInput,
        config: PredictionConfig | None = None,
        *,
        queue_timeout: float | None = None,
        cancel: CancelToken | None = None,
    ) -> PredictionStream:
        """Like :meth:`respond`, but returns a stream of fragments (the work runs on a thread)."""

        def work(
            on_fragment: FragmentCallback, on_first_token: Callable[[], None], token: CancelToken
        ) -> PredictionResult:
            return self.respond(
                model,
                chat,
                config,
                on_fragment=on_fragment,
                on_first_token=on_first_token,
                cancel=token,
                queue_timeout=queue_timeout,
            )

        return PredictionStream(work, model=model, cancel=cancel)

    # --- lifetime -------------------------------------------------------------------------------

    def close(self) -> None:
        self._closed = True
        self._settler.close()
        self._janitor_wake.set()
        self.unload_all()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- internals ------------------------------------------------------------------------------

    def _load(self, name: str, how: _LoadedAs) -> ModelInfo:
        with self._lock:
            lm = self._loaded.get(name)
            if lm is None:
                load_lock = self._load_locks.setdefault(name, threading.Lock())
        if lm is not None:
            return _same_files(name, lm, how.files)
        with load_lock:  # two callers loading one model: the second waits and reuses it
            with self._lock:
                lm = self._loaded.get(name)
            if lm is not None:
                return _same_files(name, lm, how.files)
            lm = LoadedModel.load(
                name,
                how.files.model,
                how.files.mmproj,
                how.options,
                ttl=how.ttl,
                max_queue=self.max_queue,
                embedding_cache_bytes=self.embedding_cache_bytes,
            )
            with self._lock:
                self._loaded[name] = lm
                self._loaded_as[name] = how
                self.load_count += 1
        self._janitor_wake.set()
        return lm.info

    @contextlib.contextmanager
    def _turn(
        self, model: str, token: CancelToken, queue_timeout: float | None, max_queue: int | None
    ) -> Iterator[LoadedModel]:
        """``model`` (loaded on demand) while this caller holds its turn."""
        while True:
            lm = self._get(model)
            lm.queue.acquire(
                timeout=queue_timeout,
                should_stop=lambda: token.cancelled,
                what=f"model {lm.key!r}",
                max_waiting=max_queue,
            )
            if not lm.native.closed:
                break
            lm.queue.release()  # it was unloaded while we waited: load it again
        try:
            lm.touch()
            yield lm
        finally:
            lm.touch()
            lm.queue.release()

    def _get(self, model: str) -> LoadedModel:
        lm = self._loaded.get(model)
        if lm is None:
            how = self._loaded_as.get(model)
            if how is not None:  # unloaded since: load again as it was
                self._load(model, how)
            else:
                self.load(model)
            lm = self._loaded.get(model)
            if lm is None:
                for candidate in self._loaded.values():  # loaded under a resolved name
                    if candidate.key == self.resolve(model).key:
                        return candidate
                raise ModelNotFoundError(f"model {model!r} could not be loaded")
        return lm

    def _janitor_loop(self) -> None:
        while not self._closed:
            wait = 60.0
            for key, lm in list(self._loaded.items()):
                if lm.ttl is None:
                    continue
                left = lm.ttl - lm.idle_for()
                if left <= 0 and lm.queue.try_acquire():
                    try:
                        with self._lock:
                            if self._loaded.get(key) is lm:
                                del self._loaded[key]
                        lm.close()
                    finally:
                        lm.queue.release()
                else:
                    wait = min(wait, max(0.05, left))
            self._janitor_wake.wait(wait)
            self._janitor_wake.clear()


def _same_files(name: str, lm: LoadedModel, files: ModelFiles) -> ModelInfo:
    """The info of ``lm``, loaded as ``name``, when it was loaded from ``files``; else a clear error."""
    if _real(lm.info.path) != _real(files.model) or _real(lm.info.mmproj_path) != _real(files.mmproj):
        raise ModelLoadError(
            f"model {name!r} is already loaded in this process from {lm.info.path}, not from {files.model}; "
            "unload it first, or load this one under another key"
        )
    return lm.info


def _real(path: str | Path | None) -> Path | None:
    return Path(path).resolve() if path is not None else None


def _as_chat(chat: ChatInput) -> Chat | Sequence[ChatMessage]:
    if isinstance(chat, str):
        c = Chat()
        c.add_user_message(chat)
        return c
    return chat
