"""What the SDK needs from whatever runs the models: the :class:`Backend` protocol, and nothing else.

The SDK (``Client``, ``AsyncClient``, model handles) only ever talks to a :class:`Backend`: the
embedded engine in this process, a remote vlmkit server, the cloud providers, or a router over two of
them (:mod:`vlmkit.client.backends`, one file each), so ``Chat`` and ``respond`` work unchanged over
any of them. This file holds the seam alone; the two small types its methods take
(:data:`FragmentCallback`, :class:`CancelToken`) are the prediction's own (:mod:`vlmkit.stream`), so
the token a caller cancels is the one the engine watches. The implementations import the seam, never
the reverse.

Backends are synchronous and thread-safe; the async client calls them from worker threads.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from vlmkit.chat import Chat
from vlmkit.images import ImageHandle
from vlmkit.prediction import ModelInfo, PredictionConfig, PredictionResult, PreparedImageInfo
from vlmkit.stream import CancelToken, FragmentCallback

if TYPE_CHECKING:
    from vlmkit.engine import LoadOptions, ModelListing
    from vlmkit.images.fetch import FetchOptions

__all__ = ["Backend", "CancelToken", "FragmentCallback"]


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

    def prepare(self, key: str, image: ImageHandle, config: PredictionConfig) -> PreparedImageInfo:
        """Encode ``image`` for ``key`` at ``config``'s image budget without generating (see
        :meth:`vlmkit.engine.Engine.prepare`); a backend whose models encode elsewhere says it cannot."""
        ...

    def close(self) -> None: ...
