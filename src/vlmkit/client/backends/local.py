"""The embedded engine as a :class:`~vlmkit.client.backend.Backend`: models run in this process.

The engine is the process's one (:mod:`vlmkit.engine.owner`), shared with ``completion("local/...")``
and a server in the same process: a client holds what it loads through a lease, and closing the client
lets go of it. The engine (and llama.cpp with it) is imported on first use, so ``import vlmkit`` stays light.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlmkit.chat import Chat
from vlmkit.client.backend import CancelToken, FragmentCallback
from vlmkit.images import ImageHandle
from vlmkit.prediction import ModelInfo, PredictionConfig, PredictionResult, PreparedImageInfo

if TYPE_CHECKING:
    from vlmkit.engine import LoadOptions, ModelListing
    from vlmkit.engine.owner import Lease
    from vlmkit.images.fetch import FetchOptions


class LocalBackend:
    """The embedded engine, in this process. The engine (and llama.cpp) is imported on first use."""

    def __init__(self, *, models_dir: str | Path | None = None) -> None:
        self.models_dir = models_dir
        self._lease: Lease | None = None
        self._lock = threading.Lock()

    @property
    def lease(self) -> Lease:
        """This client's hold on the process's engine."""
        with self._lock:
            if self._lease is None:
                from vlmkit.engine.owner import Lease

                self._lease = Lease(models_dir=self.models_dir)
            return self._lease

    def load(self, key: str, *, ttl: float | None, options: LoadOptions | None) -> ModelInfo:
        return self.lease.load(key, ttl=ttl, options=options)

    def get_info(self, key: str) -> ModelInfo:
        return self.lease.get_info(key)

    def unload(self, key: str) -> bool:
        return self.lease.unload(key)

    def list_loaded(self) -> list[ModelInfo]:
        return self._lease.list_loaded() if self._lease is not None else []

    def list_downloaded(self) -> list[ModelListing]:
        from vlmkit.engine import list_downloaded

        return list_downloaded(self.models_dir)

    def register(self, key: str, model_path: str | Path, mmproj_path: str | Path | None) -> None:
        self.lease.register(key, model_path, mmproj_path)

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
        return self.lease.respond(
            key, chat, config, on_fragment=on_fragment, on_first_token=on_first_token, cancel=cancel
        )

    def prepare(self, key: str, image: ImageHandle, config: PredictionConfig) -> PreparedImageInfo:
        return self.lease.prepare(key, image, config)

    def close(self) -> None:
        with self._lock:
            lease, self._lease = self._lease, None
        if lease is not None:
            lease.close()
