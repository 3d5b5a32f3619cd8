"""The asynchronous API: ``async with vk.AsyncClient() as client: await client.llm.model(...)``.

Every backend call (loading a model, reading an image file, predicting) runs on a worker thread,
so the event loop keeps serving other tasks, and predictions on different models run side by side.
"""

from __future__ import annotations

import asyncio
import os
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlmkit.client.backend import Backend, load_options, make_backend
from vlmkit.client.model import AsyncLLM, default_model_key
from vlmkit.client.stream import AsyncPredictionStream
from vlmkit.client.sync import DEFAULT_TTL, ModelKey
from vlmkit.errors import ClientClosedError, ModelNotFoundError
from vlmkit.images import ImageHandle
from vlmkit.prediction import ModelInfo

if TYPE_CHECKING:
    from collections.abc import Mapping

    from vlmkit.engine import LoadOptions, ModelListing
    from vlmkit.images.fetch import FetchOptions


class AsyncClient:
    """The async twin of :class:`~vlmkit.client.sync.Client` (same arguments, less ``timeout``:
    bound async calls with ``asyncio.timeout`` or ``asyncio.wait_for``)."""

    def __init__(
        self,
        host: str | None = None,
        *,
        models_dir: str | Path | None = None,
        backend: Backend | None = None,
    ) -> None:
        self.host = host
        self._backend = backend if backend is not None else make_backend(host, models_dir=models_dir)
        self._closed = False
        self._streams: weakref.WeakSet[AsyncPredictionStream] = weakref.WeakSet()
        self.llm = AsyncLlmNamespace(self)
        self.files = AsyncFilesNamespace(self)

    async def list_downloaded_models(self) -> list[ModelListing]:
        return await asyncio.to_thread(self._open_backend().list_downloaded)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        for stream in list(self._streams):
            await stream.cancel()
        await asyncio.to_thread(self._backend.close)

    @property
    def closed(self) -> bool:
        return self._closed

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"AsyncClient({self.host or 'in-process engine'}{', closed' if self._closed else ''})"

    def _open_backend(self) -> Backend:
        if self._closed:
            raise ClientClosedError("this client is closed; create a new vk.AsyncClient()")
        return self._backend


class AsyncLlmNamespace:
    """``client.llm`` of the async client."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def model(
        self,
        key: ModelKey | None = None,
        *,
        ttl: float | None = DEFAULT_TTL,
        config: LoadOptions | Mapping[str, Any] | None = None,
    ) -> AsyncLLM:
        """A handle to ``key``, loaded on demand (on a worker thread). See ``Client.llm.model``."""
        backend = self._client._open_backend()
        options = load_options(config)

        def load() -> ModelInfo:
            name = os.fspath(key) if key is not None else default_model_key(backend)
            return backend.load(name, ttl=ttl, options=options)

        return AsyncLLM(self._client, await asyncio.to_thread(load))

    async def list_loaded(self) -> list[AsyncLLM]:
        infos = await asyncio.to_thread(self._client._open_backend().list_loaded)
        return [AsyncLLM(self._client, info) for info in infos]

    async def list_downloaded(self) -> list[ModelListing]:
        return await asyncio.to_thread(self._client._open_backend().list_downloaded)

    async def unload(self, key: str) -> None:
        if not await asyncio.to_thread(self._client._open_backend().unload, key):
            raise ModelNotFoundError(f"model {key!r} is not loaded, so it cannot be unloaded")

    async def register(self, key: str, model_path: str | Path, mmproj_path: str | Path | None = None) -> None:
        await asyncio.to_thread(self._client._open_backend().register, key, model_path, mmproj_path)


class AsyncFilesNamespace:
    """``client.files`` of the async client: the file is read and checked off the event loop."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def prepare_image(
        self, src: Any, name: str | None = None, *, format: str | None = None, fetch: FetchOptions | None = None
    ) -> ImageHandle:
        backend = self._client._open_backend()
        return await asyncio.to_thread(lambda: backend.prepare_image(src, name, format=format, fetch=fetch))
