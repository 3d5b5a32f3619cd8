"""The one embedded engine of this process, shared by everything here that runs local models.

``vk.Client()``'s local backend, ``completion("local/KEY")`` and ``vlmkit serve``'s local models all
run on :func:`engine`, so a model that two of them use is in memory once, loaded once. The engine is
made on first use (llama.cpp loads with the first model) and lasts as long as the process.

What loads models and later lets them go (a client, a server) does so through a :class:`Lease`: a
model it loads stays held until it unloads it or closes, and a model unloads when the last lease
holding it lets go, or before that when it has sat idle for its TTL (the next prediction loads it
again, as it was loaded). A lease keeps its own defaults (models directory, TTL, queue bound), so a
server keeps its limits on a model it shares. ``completion("local/KEY")`` takes no lease: what it
loads stays for the engine's idle TTL.

Asking about models (:func:`has_vision`, :func:`loaded`, :func:`load_count`) reads the model store
and the GGUF headers: it loads nothing, makes no engine and starts no thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from types import EllipsisType

from vlmkit.engine.engine import ChatInput, Engine
from vlmkit.engine.gguf_meta import has_vision_encoder
from vlmkit.engine.model import LoadOptions
from vlmkit.engine.resolve import ModelFiles, resolve_model
from vlmkit.errors import ModelNotFoundError
from vlmkit.images import ImageHandle
from vlmkit.prediction import ModelInfo, PredictionConfig, PredictionResult, PreparedImageInfo
from vlmkit.stream import CancelToken, FragmentCallback

_lock = threading.Lock()
_engine: Engine | None = None
_holders: dict[str, set[Lease]] = {}
"""Each loaded name, and the leases holding it."""


def engine() -> Engine:
    """The engine of this process, made on first use."""
    global _engine
    with _lock:
        if _engine is None:
            _engine = Engine()
        return _engine


def loaded() -> list[ModelInfo]:
    """Every model in memory in this process, whoever loaded it."""
    return _engine.list_loaded() if _engine is not None else []


def load_count() -> int:
    """How many times this process has loaded a model (a model already in memory is not loaded again)."""
    return _engine.load_count if _engine is not None else 0


def model_files(key: str, models_dir: str | Path | None = None) -> ModelFiles:
    """The files ``key`` names here (a registered key, a downloaded model, a path), found without loading."""
    if _engine is not None:
        return _engine.resolve(key, models_dir=models_dir)
    return resolve_model(key, models_dir=models_dir)


def has_vision(key: str, models_dir: str | Path | None = None) -> bool:
    """Whether local model ``key`` takes images: a model in memory says so; else its projector's metadata.

    Raises :class:`~vlmkit.errors.ModelNotFoundError` (or ``ModelLoadError``) for a key that names no model.
    """
    if _engine is not None and _engine.is_loaded(key):
        return _engine.get_info(key).vision
    return has_vision_encoder(model_files(key, models_dir).mmproj)


class Lease:
    """A hold on this process's engine, for one user of it (a client, a server).

    ``models_dir`` is where its keys are found (default ``$VLMKIT_HOME/models``), ``ttl`` the idle
    time before a model it loads unloads (``...``: the engine's, one hour), ``max_queue`` how many of
    its callers may wait for a busy model (``None``: the engine's bound), ``options`` how its models
    load when neither the load nor the key's registration says (``None``: the engine's). Thread-safe.
    """

    def __init__(
        self,
        *,
        models_dir: str | Path | None = None,
        ttl: float | EllipsisType | None = ...,
        max_queue: int | None = None,
        options: LoadOptions | None = None,
    ) -> None:
        self.models_dir = models_dir
        self.ttl = ttl
        self.max_queue = max_queue
        self.options = options
        self._names: dict[str, str] = {}  # what a caller named (an alias, a path) -> the name it loaded as

    @property
    def engine(self) -> Engine:
        return engine()

    def register(
        self,
        key: str,
        model_path: str | Path,
        mmproj_path: str | Path | None = None,
        *,
        options: LoadOptions | None = None,
    ) -> None:
        """Make local files answer to ``key`` (loading with ``options`` unless a load says), for
        everything in this process."""
        self.engine.register(key, model_path, mmproj_path, options=options)

    def load(
        self,
        model: str | Path,
        *,
        mmproj: str | Path | None = None,
        key: str | None = None,
        ttl: float | EllipsisType | None = ...,
        options: LoadOptions | None = None,
    ) -> ModelInfo:
        """Load ``model`` unless it is in memory already (then that one is shared), and hold it."""
        info = self.engine.load(
            model,
            mmproj=mmproj,
            key=key,
            ttl=self.ttl if ttl is ... else ttl,
            options=options,
            models_dir=self.models_dir,
            default_options=self.options,
        )
        self._names[str(model)] = info.key
        with _lock:
            _holders.setdefault(info.key, set()).add(self)
        return info

    def unload(self, key: str) -> bool:
        """Let go of ``key``; it unloads unless another lease holds it. False when it was neither held
        here nor in memory."""
        name = self._name(key)
        with _lock:
            holders = _holders.get(name, set())
            held = self in holders
            holders.discard(self)
            last = not holders
            if last:
                _holders.pop(name, None)
        if not last:
            return held
        return (_engine is not None and _engine.unload(name)) or held

    def list_loaded(self) -> list[ModelInfo]:
        """The models this lease holds that are in memory."""
        if _engine is None:
            return []
        with _lock:
            names = [name for name, holders in _holders.items() if self in holders]
        infos = []
        for name in names:
            try:
                infos.append(_engine.get_info(name))
            except ModelNotFoundError:  # unloaded after its TTL: it loads again when asked for
                continue
        return infos

    def is_loaded(self, key: str) -> bool:
        name = self._name(key)
        return self._holds(name) and _engine is not None and _engine.is_loaded(name)

    def get_info(self, key: str) -> ModelInfo:
        """``key``'s info; a model held here that has unloaded since (its TTL) loads again as it was."""
        name = self._name(key)
        if self._holds(name):
            return self.engine.ensure_loaded(name)
        return self.load(key)

    def respond(
        self,
        model: str,
        chat: ChatInput,
        config: PredictionConfig | None = None,
        *,
        on_fragment: FragmentCallback | None = None,
        on_first_token: Callable[[], None] | None = None,
        cancel: CancelToken | None = None,
        queue_timeout: float | None = None,
    ) -> PredictionResult:
        """:meth:`Engine.respond <vlmkit.engine.Engine.respond>` on ``model``, loading and holding it
        first unless this lease holds it, with this lease's queue bound."""
        name = self._name(model)
        if not self._holds(name):
            name = self.load(model).key
        return self.engine.respond(
            name,
            chat,
            config,
            on_fragment=on_fragment,
            on_first_token=on_first_token,
            cancel=cancel,
            queue_timeout=queue_timeout,
            max_queue=self.max_queue,
        )

    def prepare(self, model: str, image: ImageHandle, config: PredictionConfig | None = None) -> PreparedImageInfo:
        """:meth:`Engine.prepare <vlmkit.engine.Engine.prepare>` on ``model``, loading and holding it
        first unless this lease holds it."""
        name = self._name(model)
        if not self._holds(name):
            name = self.load(model).key
        return self.engine.prepare(name, image, config, max_queue=self.max_queue)

    def tokenize(self, model: str, text: str) -> list[int]:
        """:meth:`Engine.tokenize <vlmkit.engine.Engine.tokenize>` on ``model``, held as :meth:`respond` holds it."""
        name = self._name(model)
        if not self._holds(name):
            name = self.load(model).key
        return self.engine.tokenize(name, text, max_queue=self.max_queue)

    def format_prompt(self, model: str, chat: ChatInput) -> str:
        """:meth:`Engine.format_prompt <vlmkit.engine.Engine.format_prompt>` on ``model``, held as
        :meth:`respond` holds it."""
        name = self._name(model)
        if not self._holds(name):
            name = self.load(model).key
        return self.engine.format_prompt(name, chat, max_queue=self.max_queue)

    def close(self) -> None:
        """Let go of every model held here; each that no other lease holds unloads (after its running prediction)."""
        with _lock:
            last = []
            for name, holders in list(_holders.items()):
                if self in holders:
                    holders.discard(self)
                    if not holders:
                        del _holders[name]
                        last.append(name)
        if _engine is not None:
            for name in last:
                _engine.unload(name)

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _name(self, key: str) -> str:
        return self._names.get(key, key)

    def _holds(self, name: str) -> bool:
        with _lock:
            return self in _holders.get(name, ())
