"""``local/KEY``: the embedded llama.cpp engine, through the same call as the cloud providers.

The engine lives in :mod:`vlmkit.engine` and is imported only when a ``local/`` model is used, so the
providers layer works (and imports fast) without it. The request becomes a :class:`vlmkit.Chat` whose
images are handles (the engine renders them for llama.cpp itself), the settings a
``PredictionConfig``, and the engine's result an OpenAI-shaped completion or chunk stream.
``set_engine`` lets the SDK hand over the engine it owns; otherwise one is created on first use.
The async calls read the engine's worker thread through :mod:`vlmkit.stream`'s bridge: one wake-up
of the loop per batch of fragments.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from vlmkit.chat import Chat, ChatMessage, ImagePart, Part, TextPart
from vlmkit.errors import BadRequestError, NotFoundError
from vlmkit.prediction import PredictionResult
from vlmkit.providers.base import ProviderConfig
from vlmkit.providers.request import CompletionRequest, TextInput
from vlmkit.providers.response import (
    ChatCompletion,
    ChatCompletionChunk,
    ChunkMaker,
    Usage,
    completion_of,
)
from vlmkit.stream import AsyncPredictionStream, CancelToken, FragmentCallback, PredictionStream, Work
from vlmkit.wire.openai_chat import finish_reason_of

_engine: Any = None
_lock = threading.Lock()


def set_engine(engine: Any) -> None:
    """Use ``engine`` (a ``vlmkit.engine.Engine``) for ``local/`` models."""
    global _engine
    _engine = engine


def _module(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise NotFoundError(
            f"local models need vlmkit's embedded engine, which cannot be imported here ({exc})", provider="local"
        ) from None


def engine() -> Any:
    global _engine
    with _lock:
        if _engine is None:
            _engine = _module("vlmkit.engine").Engine()
        return _engine


def _work(cfg: ProviderConfig, chat: Chat, config: Any) -> Work:
    """The prediction on the engine, to run on a worker thread (which makes the engine if need be)."""

    def work(
        on_fragment: FragmentCallback, on_first_token: Callable[[], None], cancel: CancelToken
    ) -> PredictionResult:
        result: PredictionResult = engine().respond(
            cfg.model, chat, config, on_fragment=on_fragment, on_first_token=on_first_token, cancel=cancel
        )
        return result

    return work


def to_chat(req: CompletionRequest) -> Chat:
    chat = Chat()
    for m in req.messages:
        parts: list[Part] = []
        for p in m.content:
            if isinstance(p, TextInput):
                parts.append(TextPart(p.text))
            elif p.handle is None or p.handle.is_reference:
                exc = BadRequestError(
                    f"the local engine reads image bytes, not {p.url or (p.handle and p.handle.source)!r}"
                )
                exc.add_location(p.location)
                raise exc
            else:
                parts.append(ImagePart(p.handle, p.detail))
        chat.append(ChatMessage(m.role, parts))
    return chat


def _config(req: CompletionRequest) -> Any:
    p = req.params
    details = {img.detail for img in req.images if img.detail}
    return _module("vlmkit.prediction").PredictionConfig(
        temperature=p.temperature,
        max_tokens=p.max_tokens,
        top_p=p.top_p,
        stop=tuple(p.stop or ()),
        seed=p.seed,
        detail=("high" if "high" in details else "low") if details else None,
        response_format=p.response_format,
    )


def _result(result: Any, cfg: ProviderConfig) -> ChatCompletion:
    stats = result.stats
    return completion_of(
        result.content,
        cfg.model,
        finish_reason=finish_reason_of(stats.stop_reason),
        usage=Usage.of(stats.prompt_tokens, stats.predicted_tokens),
        provider="local",
    )


def _last(maker: ChunkMaker, result: PredictionResult) -> ChatCompletionChunk:
    stats = result.stats
    return maker.finish(finish_reason_of(stats.stop_reason), Usage.of(stats.prompt_tokens, stats.predicted_tokens))


def _chunks(stream: PredictionStream, cfg: ProviderConfig) -> Iterator[ChatCompletionChunk]:
    maker = ChunkMaker(cfg.model)
    with stream:  # a reader that stops early cancels the prediction
        for fragment in stream:
            if fragment.content:
                yield maker.text(fragment.content)
    yield _last(maker, stream.result())


def completion(req: CompletionRequest, cfg: ProviderConfig) -> ChatCompletion | Iterator[ChatCompletionChunk]:
    chat, config = to_chat(req), _config(req)
    if req.stream:
        return _chunks(PredictionStream(_work(cfg, chat, config), model=cfg.model), cfg)
    return _result(engine().respond(cfg.model, chat, config), cfg)


async def acompletion(
    req: CompletionRequest, cfg: ProviderConfig
) -> ChatCompletion | AsyncIterator[ChatCompletionChunk]:
    chat, config = to_chat(req), _config(req)
    stream = AsyncPredictionStream(_work(cfg, chat, config), model=cfg.model)
    if req.stream:
        return _achunks(stream, cfg)
    return _result(await stream.wait_for_result(), cfg)


async def _achunks(stream: AsyncPredictionStream, cfg: ProviderConfig) -> AsyncIterator[ChatCompletionChunk]:
    maker = ChunkMaker(cfg.model)
    async with stream:  # a reader that stops early (or is cancelled) cancels the prediction
        async for fragment in stream:
            if fragment.content:
                yield maker.text(fragment.content)
    yield _last(maker, stream.result())
