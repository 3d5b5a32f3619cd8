"""The asynchronous API: ``async with vk.AsyncClient() as client: await client.llm.model(...)``, and
its model handle :class:`AsyncLLM`.

Every backend call (loading a model, reading an image file, predicting) runs on a worker thread,
so the event loop keeps serving other tasks, and predictions on different models run side by side.
"""

from __future__ import annotations

import asyncio
import os
import weakref
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlmkit.chat import Chat
from vlmkit.client import act as agent
from vlmkit.client.backend import Backend, FragmentCallback
from vlmkit.client.backends.factory import make_backend
from vlmkit.client.common import (
    DEFAULT_TTL,
    ConfigInput,
    History,
    ModelKey,
    aread_history,
    default_model_key,
    load_options,
    prediction_work,
    prepare_work,
)
from vlmkit.errors import ClientClosedError, ModelNotFoundError
from vlmkit.images import ImageHandle
from vlmkit.prediction import Detail, ModelInfo, PredictionConfig, PredictionResult, PreparedImageInfo
from vlmkit.stream import AsyncPredictionStream

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
        api_key: str | None = None,
        models_dir: str | Path | None = None,
        backend: Backend | None = None,
        fetch: FetchOptions | None = None,
    ) -> None:
        self.host = host
        self.fetch = fetch
        self._backend = backend if backend is not None else make_backend(host, models_dir=models_dir, api_key=api_key)
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


class AsyncLLM:
    """A loaded model in the async API: ``await model.respond(chat)``."""

    def __init__(self, client: AsyncClient, info: ModelInfo) -> None:
        self._client = client
        self._info = info

    @property
    def identifier(self) -> str:
        return self._info.key

    def __repr__(self) -> str:
        return f"AsyncLLM({self.identifier!r})"

    async def respond(
        self,
        history: History,
        *,
        config: ConfigInput = None,
        response_format: Any = None,
        on_prediction_fragment: FragmentCallback | None = None,
        on_first_token: Callable[[], None] | None = None,
    ) -> PredictionResult:
        """Answer a chat without blocking the event loop. Cancelling the awaiting task stops it."""
        stream = await self.respond_stream(
            history,
            config=config,
            response_format=response_format,
            on_prediction_fragment=on_prediction_fragment,
            on_first_token=on_first_token,
        )
        return await stream.wait_for_result()

    async def act(
        self,
        history: History,
        tools: Iterable[Any],
        *,
        config: ConfigInput = None,
        on_message: agent.MessageCallback | None = None,
        on_prediction_fragment: FragmentCallback | None = None,
        max_prediction_rounds: int | None = None,
        max_parallel_tool_calls: int = agent.MAX_PARALLEL,
    ) -> agent.ActResult:
        """:meth:`LLM.act <vlmkit.client.sync.LLM.act>` without blocking the event loop (an ``async def``
        tool is awaited, a plain one runs on a worker thread; at most ``max_parallel_tool_calls`` run at
        once). Returns the chat with every turn, the rounds, and the last prediction.
        """
        chat = await aread_history(history, self._client.fetch)

        async def respond(current: Chat, cfg: PredictionConfig) -> PredictionResult:
            return await self.respond(current, config=cfg, on_prediction_fragment=on_prediction_fragment)

        async def to_image(value: Any) -> ImageHandle:
            return await asyncio.to_thread(self._client._open_backend().prepare_image, value, None)

        return await agent.aact(
            respond,
            chat,
            tools,
            config,
            to_image,
            on_message=on_message,
            max_prediction_rounds=max_prediction_rounds,
            max_parallel_tool_calls=max_parallel_tool_calls,
        )

    async def respond_stream(
        self,
        history: History,
        *,
        config: ConfigInput = None,
        response_format: Any = None,
        on_prediction_fragment: FragmentCallback | None = None,
        on_first_token: Callable[[], None] | None = None,
    ) -> AsyncPredictionStream:
        """Start answering; ``async for`` the stream, then ``stream.result()``. Callbacks run on the loop."""
        backend = self._client._open_backend()
        chat = await aread_history(history, self._client.fetch)  # images named in messages: read off the loop
        work = prediction_work(backend, self.identifier, chat, config, response_format)
        stream = AsyncPredictionStream(
            work,
            model=self.identifier,
            on_prediction_fragment=on_prediction_fragment,
            on_first_token=on_first_token,
        )
        self._client._streams.add(stream)  # closing the client cancels it
        return stream

    async def prepare(
        self,
        image: Any,
        *,
        detail: Detail | None = None,
        image_max_tokens: int | None = None,
        image_min_tokens: int | None = None,
    ) -> PreparedImageInfo:
        """:meth:`LLM.prepare <vlmkit.client.sync.LLM.prepare>`, with the image read and encoded off the event loop."""
        work = prepare_work(
            self._client._open_backend(),
            self.identifier,
            image,
            self._client.fetch,
            detail=detail,
            image_max_tokens=image_max_tokens,
            image_min_tokens=image_min_tokens,
        )
        return await asyncio.to_thread(work)

    async def get_info(self) -> ModelInfo:
        backend = self._client._open_backend()
        self._info = await asyncio.to_thread(backend.get_info, self.identifier)
        return self._info

    async def get_context_length(self) -> int:
        return (await self.get_info()).context_length

    async def unload(self) -> None:
        await self._client.llm.unload(self.identifier)
