"""The embedded engine as a :class:`~vlmkit.client.backend.Backend`: models run in this process.

The engine (and llama.cpp with it) is imported on first use, so ``import vlmkit`` stays light.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlmkit.chat import Chat
from vlmkit.client.backend import CancelToken, FragmentCallback
from vlmkit.images import ImageHandle
from vlmkit.prediction import ModelInfo, PredictionConfig, PredictionResult

if TYPE_CHECKING:
    from vlmkit.engine import Engine, LoadOptions, ModelListing
    from vlmkit.images.fetch import FetchOptions


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
        engine = self.engine
        if not engine.is_loaded(key):  # unloaded after its TTL: load again as it was first loaded
            self._reload(key)
        return engine.respond(key, chat, config, on_fragment=on_fragment, on_first_token=on_first_token, cancel=cancel)

    def close(self) -> None:
        with self._lock:
            engine, self._engine = self._engine, None
        if engine is not None:
            engine.close()

    def _reload(self, key: str) -> ModelInfo:
        ttl, options = self._load_args.get(key, (self.engine.default_ttl, None))
        return self.engine.load(key, ttl=ttl, options=options)
