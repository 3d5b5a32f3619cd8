"""Model handles: :class:`LLM` (sync) and :class:`AsyncLLM`: respond, respond_stream, get_info.

A handle names a model its client has loaded. It holds no engine state of its own, so a handle
stays valid when the model is unloaded after its idle TTL: the next call loads it again.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from vlmkit.chat import Chat
from vlmkit.client.backend import Backend, CancelToken, FragmentCallback
from vlmkit.client.stream import AsyncPredictionStream, PredictionStream, Work
from vlmkit.errors import ModelNotFoundError
from vlmkit.prediction import ModelInfo, PredictionConfig, PredictionResult

if TYPE_CHECKING:
    from vlmkit.client.aio import AsyncClient
    from vlmkit.client.sync import Client

History = Chat | str | Mapping[str, Any] | list[Any]
"""What ``respond`` takes: a Chat, a user prompt, ``{"messages": [...]}`` or OpenAI-style messages."""

ConfigInput = PredictionConfig | Mapping[str, Any] | None


class LLM:
    """A loaded model, from ``vk.llm(...)`` or ``client.llm.model(...)``."""

    def __init__(self, client: Client, info: ModelInfo) -> None:
        self._client = client
        self._info = info

    @property
    def identifier(self) -> str:
        """The key the model answers to."""
        return self._info.key

    def __repr__(self) -> str:
        return f"LLM({self.identifier!r})"

    def respond(
        self,
        history: History,
        *,
        config: ConfigInput = None,
        response_format: Any = None,
        on_prediction_fragment: FragmentCallback | None = None,
        on_first_token: Callable[[], None] | None = None,
    ) -> PredictionResult:
        """Answer a chat (or a prompt). Blocks; fragments also go to ``on_prediction_fragment``.

        ``response_format`` (a JSON schema or a pydantic model class) constrains the reply to that
        schema; the result's ``parsed`` then holds it parsed (a pydantic instance for a class).
        """
        stream = self.respond_stream(
            history,
            config=config,
            response_format=response_format,
            on_prediction_fragment=on_prediction_fragment,
            on_first_token=on_first_token,
        )
        return stream.result()

    def respond_stream(
        self,
        history: History,
        *,
        config: ConfigInput = None,
        response_format: Any = None,
        on_prediction_fragment: FragmentCallback | None = None,
        on_first_token: Callable[[], None] | None = None,
    ) -> PredictionStream:
        """Start answering; iterate the stream for fragments, then ``stream.result()``."""
        work = _work(self._client._open_backend(), self.identifier, history, config, response_format)
        stream = PredictionStream(
            work,
            model=self.identifier,
            timeout=self._client.timeout,
            on_prediction_fragment=on_prediction_fragment,
            on_first_token=on_first_token,
        )
        self._client._streams.add(stream)  # closing the client cancels it
        return stream

    def get_info(self) -> ModelInfo:
        """Architecture, context length, size, and whether it takes images (``vision``)."""
        self._info = self._client._open_backend().get_info(self.identifier)
        return self._info

    def get_context_length(self) -> int:
        return self.get_info().context_length

    def unload(self) -> None:
        self._client.llm.unload(self.identifier)


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
        work = _work(self._client._open_backend(), self.identifier, history, config, response_format)
        stream = AsyncPredictionStream(
            work,
            model=self.identifier,
            on_prediction_fragment=on_prediction_fragment,
            on_first_token=on_first_token,
        )
        self._client._streams.add(stream)  # closing the client cancels it
        return stream

    async def get_info(self) -> ModelInfo:
        backend = self._client._open_backend()
        self._info = await asyncio.to_thread(backend.get_info, self.identifier)
        return self._info

    async def get_context_length(self) -> int:
        return (await self.get_info()).context_length

    async def unload(self) -> None:
        await self._client.llm.unload(self.identifier)


# --- shared -------------------------------------------------------------------------------------


def as_chat(history: Any) -> Chat:
    """A private copy of the chat to answer (so later edits by the caller cannot race the backend)."""
    return Chat.from_history(history)


def prediction_config(config: ConfigInput, response_format: Any) -> PredictionConfig:
    if config is None:
        cfg = PredictionConfig()
    elif isinstance(config, PredictionConfig):
        cfg = config
    elif isinstance(config, Mapping):
        cfg = PredictionConfig.from_dict(config)
    else:
        raise TypeError(f"config must be a PredictionConfig or a dict, not {type(config).__name__}")
    if response_format is not None:
        cfg = dataclasses.replace(cfg, response_format=response_format)
    if cfg.response_format is not None:
        cfg.json_schema()  # a bad response_format fails here, in the caller's thread
    return cfg


def _work(backend: Backend, key: str, history: History, config: ConfigInput, response_format: Any) -> Work:
    chat = as_chat(history)
    cfg = prediction_config(config, response_format)

    def work(on_fragment: FragmentCallback, first_token: Callable[[], None], cancel: CancelToken) -> PredictionResult:
        return backend.respond(key, chat, cfg, on_fragment=on_fragment, on_first_token=first_token, cancel=cancel)

    return work


def default_model_key(backend: Backend) -> str:
    """The model ``vk.llm()`` means with no key: the first loaded one, else the first downloaded vision model."""
    loaded = backend.list_loaded()
    if loaded:
        return loaded[0].key
    downloaded = [m for m in backend.list_downloaded() if m.vision]
    if downloaded:
        return downloaded[0].key
    raise ModelNotFoundError(
        "no model is loaded or downloaded, so there is no default model; pass a key or a path to a .gguf "
        "file, or download one first (`vlmkit get smolvlm-256m`)"
    )
