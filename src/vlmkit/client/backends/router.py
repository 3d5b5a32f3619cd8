"""One backend made of two: ``provider/name`` keys to the providers, every other key to the main backend."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlmkit.chat import Chat
from vlmkit.client.backend import Backend, CancelToken, FragmentCallback
from vlmkit.client.backends.providers import ProviderBackend, is_provider_model
from vlmkit.images import ImageHandle
from vlmkit.prediction import ModelInfo, PredictionConfig, PredictionResult, PreparedImageInfo

if TYPE_CHECKING:
    from vlmkit.engine import LoadOptions, ModelListing
    from vlmkit.images.fetch import FetchOptions


class Router:
    """One backend made of two: ``provider/name`` keys (``openai/gpt-4o``) go to the providers, the
    rest (``local/KEY`` too, without its prefix) to the main backend: the engine, or a server."""

    def __init__(self, main: Backend, providers: Callable[[], Backend] | None = None) -> None:
        self.main = main
        self._make_providers = providers or ProviderBackend
        self._providers: Backend | None = None
        self._lock = threading.Lock()

    def route(self, key: str) -> tuple[Backend, str]:
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

    def prepare(self, key: str, image: ImageHandle, config: PredictionConfig) -> PreparedImageInfo:
        backend, name = self.route(key)
        return backend.prepare(name, image, config)

    def close(self) -> None:
        self.main.close()
        if self._providers is not None:
            self._providers.close()
