"""What the SDK needs from whatever runs the models: the :class:`Backend` protocol, and the local one.

The SDK (``Client``, ``AsyncClient``, model handles) only ever talks to a :class:`Backend`. Today
that is :class:`LocalBackend`, the embedded engine in this process. A remote vlmkit server and the
cloud providers slot in as further backends with the same methods, so ``Chat`` and ``respond``
work unchanged over them.

Backends are synchronous and thread-safe; the async client calls them from worker threads.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from vlmkit.chat import Chat
from vlmkit.errors import InvalidSettingError
from vlmkit.images import ImageHandle
from vlmkit.prediction import ModelInfo, PredictionConfig, PredictionFragment, PredictionResult

if TYPE_CHECKING:
    from vlmkit.engine import Engine, LoadOptions, ModelListing
    from vlmkit.images.fetch import FetchOptions

FragmentCallback = Callable[[PredictionFragment], None]


class CancelToken:
    """Cancel a prediction from any thread; backends hook their own stop onto it with :meth:`on_cancel`."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._hooks: list[Callable[[], None]] = []

    def cancel(self) -> None:
        with self._lock:
            if self._event.is_set():
                return
            self._event.set()
            hooks, self._hooks = self._hooks, []
        for hook in hooks:
            hook()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def on_cancel(self, hook: Callable[[], None]) -> None:
        """Call ``hook`` when cancelled (at once if that already happened)."""
        with self._lock:
            if not self._event.is_set():
                self._hooks.append(hook)
                return
        hook()


class Backend(Protocol):
    """Runs models for the SDK. Every method may block; all must be safe to call from several threads."""

    def load(self, key: str, *, ttl: float | None, options: LoadOptions | None) -> ModelInfo:
        """Make ``key`` ready (load it unless it already is) and describe it."""
        ...

    def get_info(self, key: str) -> ModelInfo: ...

    def unload(self, key: str) -> bool:
        """False when it was not loaded."""
        ...

    def list_loaded(self) -> list[ModelInfo]: ...

    def list_downloaded(self) -> list[ModelListing]: ...

    def register(self, key: str, model_path: str | Path, mmproj_path: str | Path | None) -> None:
        """Make local model files answer to ``key``."""
        ...

    def prepare_image(
        self, src: Any, name: str | None, *, format: str | None = None, fetch: FetchOptions | None = None
    ) -> ImageHandle:
        """An image handle the backend can use (a remote backend may upload it)."""
        ...

    def respond(
        self,
        key: str,
        chat: Chat,
        config: PredictionConfig,
        *,
        on_fragment: FragmentCallback,
        on_first_token: Callable[[], None],
        cancel: CancelToken,
    ) -> PredictionResult:
        """Answer ``chat``, streaming fragments to ``on_fragment``; stops early when ``cancel`` fires."""
        ...

    def close(self) -> None: ...


class LocalBackend:
    """The embedded engine, in this process. The engine (and llama.cpp) is imported on first use."""

    def __init__(self, *, models_dir: str | Path | None = None) -> None:
        self.models_dir = models_dir
        self._engine: Engine | None = None
        self._lock = threading.Lock()
        self._load_args: dict[str, tuple[float | None, LoadOptions | None]] = {}

    @property
    def engine(self) -> Engine:
        with self._lock:
            if self._engine is None:
                from vlmkit.engine import Engine

                self._engine = Engine(models_dir=self.models_dir)
            return self._engine

    def load(self, key: str, *, ttl: float | None, options: LoadOptions | None) -> ModelInfo:
        info = self.engine.load(key, ttl=ttl, options=options)
        self._load_args[key] = self._load_args[info.key] = (ttl, options)
        return info

    def get_info(self, key: str) -> ModelInfo:
        if self.engine.is_loaded(key):
            return self.engine.get_info(key)
        return self._reload(key)

    def unload(self, key: str) -> bool:
        return self.engine.unload(key)

    def list_loaded(self) -> list[ModelInfo]:
        return self.engine.list_loaded() if self._engine is not None else []

    def list_downloaded(self) -> list[ModelListing]:
        from vlmkit.engine import list_downloaded

        return list_downloaded(self.models_dir)

    def register(self, key: str, model_path: str | Path, mmproj_path: str | Path | None) -> None:
        self.engine.register(key, model_path, mmproj_path)

    def prepare_image(
        self, src: Any, name: str | None, *, format: str | None = None, fetch: FetchOptions | None = None
    ) -> ImageHandle:
        from vlmkit.images import prepare_image

        return prepare_image(src, name, format=format, fetch=fetch)

    def respond(
        self,
        key: str,
        chat: Chat,
        config: PredictionConfig,
        *,
        on_fragment: FragmentCallback,
        on_first_token: Callable[[], None],
        cancel: CancelToken,
    ) -> PredictionResult:
        from vlmkit.engine import CancelToken as EngineCancel

        engine = self.engine
        if not engine.is_loaded(key):  # unloaded after its TTL: load again as it was first loaded
            self._reload(key)
        stop = EngineCancel()
        cancel.on_cancel(stop.cancel)
        return engine.respond(key, chat, config, on_fragment=on_fragment, on_first_token=on_first_token, cancel=stop)

    def close(self) -> None:
        with self._lock:
            engine, self._engine = self._engine, None
        if engine is not None:
            engine.close()

    def _reload(self, key: str) -> ModelInfo:
        ttl, options = self._load_args.get(key, (self.engine.default_ttl, None))
        return self.engine.load(key, ttl=ttl, options=options)


class Router:
    """One backend made of two: ``provider/name`` keys (``openai/gpt-4o``) go to the providers, the
    rest (``local/KEY`` too, without its prefix) to the main backend: the engine, or a server."""

    def __init__(self, main: Backend, providers: Callable[[], Backend] | None = None) -> None:
        self.main = main
        self._make_providers = providers or _provider_backend
        self._providers: Backend | None = None
        self._lock = threading.Lock()

    def route(self, key: str) -> tuple[Backend, str]:
        from vlmkit.client.providers import is_provider_model

        if key.startswith("local/"):
            return self.main, key.removeprefix("local/")
        if not is_provider_model(key):
            return self.main, key
        with self._lock:
            if self._providers is None:
                self._providers = self._make_providers()
            return self._providers, key

    def load(self, key: str, *, ttl: float | None, options: LoadOptions | None) -> ModelInfo:
        backend, name = self.route(key)
        return backend.load(name, ttl=ttl, options=options)

    def get_info(self, key: str) -> ModelInfo:
        backend, name = self.route(key)
        return backend.get_info(name)

    def unload(self, key: str) -> bool:
        backend, name = self.route(key)
        return backend.unload(name)

    def list_loaded(self) -> list[ModelInfo]:
        extra = self._providers.list_loaded() if self._providers is not None else []
        return self.main.list_loaded() + extra

    def list_downloaded(self) -> list[ModelListing]:
        return self.main.list_downloaded()

    def register(self, key: str, model_path: str | Path, mmproj_path: str | Path | None) -> None:
        self.main.register(key, model_path, mmproj_path)

    def prepare_image(
        self, src: Any, name: str | None, *, format: str | None = None, fetch: FetchOptions | None = None
    ) -> ImageHandle:
        return self.main.prepare_image(src, name, format=format, fetch=fetch)

    def respond(
        self,
        key: str,
        chat: Chat,
        config: PredictionConfig,
        *,
        on_fragment: FragmentCallback,
        on_first_token: Callable[[], None],
        cancel: CancelToken,
    ) -> PredictionResult:
        backend, name = self.route(key)
        return backend.respond(
            name, chat, config, on_fragment=on_fragment, on_first_token=on_first_token, cancel=cancel
        )

    def close(self) -> None:
        self.main.close()
        if self._providers is not None:
            self._providers.close()


def _provider_backend() -> Backend:
    from vlmkit.client.providers import ProviderBackend

    return ProviderBackend()


def make_backend(host: str | None, *, models_dir: str | Path | None = None) -> Backend:
    """The backend for ``Client(host)``: with no host the engine and the providers, else that vlmkit server."""
    if host is None:
        return Router(LocalBackend(models_dir=models_dir))
    from vlmkit.client.remote import RemoteBackend

    return RemoteBackend(host)


def load_options(config: LoadOptions | Mapping[str, Any] | None) -> LoadOptions | None:
    """``LoadOptions`` from itself, a dict (snake_case or LM Studio's camelCase keys) or None."""
    if config is None:
        return None
    from vlmkit.engine import LoadOptions

    if isinstance(config, LoadOptions):
        return config
    if not isinstance(config, Mapping):
        raise InvalidSettingError(f"a load config must be LoadOptions or a dict, not {type(config).__name__}")
    import dataclasses

    names = {f.name for f in dataclasses.fields(LoadOptions)}
    kwargs: dict[str, Any] = {}
    for key, value in config.items():
        name = re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower()
        if name not in names:
            raise InvalidSettingError(f"unknown load setting {key!r}; known: {', '.join(sorted(names))}")
        kwargs[name] = value
    return LoadOptions(**kwargs)
