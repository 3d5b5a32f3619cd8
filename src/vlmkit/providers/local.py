"""``local/KEY``: the embedded llama.cpp engine, through the same call as the cloud providers.

The engine is the process's one (:mod:`vlmkit.engine.owner`), shared with the SDK and the server, so
a model they have loaded answers here without loading again; one that is not loaded loads on demand
and stays for the engine's idle TTL. The engine is imported when a ``local/`` model is first used,
so the providers layer imports fast. The request becomes a :class:`vlmkit.Chat` whose images are
handles (the engine renders them for llama.cpp itself), the settings a ``PredictionConfig``, and the
engine's result an OpenAI-shaped completion or chunk stream. The async calls read the engine's
worker thread through :mod:`vlmkit.stream`'s bridge: one wake-up of the loop per batch of fragments.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator

from vlmkit.chat import Chat, ChatMessage, ImagePart, MediaPart, Part, TextPart
from vlmkit.errors import BadRequestError
from vlmkit.prediction import PredictionConfig, PredictionResult
from vlmkit.providers.base import ProviderConfig
from vlmkit.providers.request import CompletionRequest, MediaInput, TextInput
from vlmkit.providers.response import (
    ChatCompletion,
    ChatCompletionChunk,
    ChunkMaker,
    Usage,
    completion_of,
)
from vlmkit.stream import AsyncPredictionStream, CancelToken, FragmentCallback, PredictionStream, Work
from vlmkit.wire.openai_chat import finish_reason_of


def _work(cfg: ProviderConfig, chat: Chat, config: PredictionConfig) -> Work:
    """The prediction on the process's engine, to run on a worker thread (which imports the engine)."""

    def work(
        on_fragment: FragmentCallback, on_first_token: Callable[[], None], cancel: CancelToken
    ) -> PredictionResult:
        from vlmkit.engine.owner import engine

        return engine().respond(
            cfg.model, chat, config, on_fragment=on_fragment, on_first_token=on_first_token, cancel=cancel
        )

    return work


def to_chat(req: CompletionRequest) -> Chat:
    chat = Chat()
    for m in req.messages:
        parts: list[Part] = []
        for p in m.content:
            if isinstance(p, TextInput):
                parts.append(TextPart(p.text))
            elif isinstance(p, MediaInput):
                parts.append(MediaPart(p.media))
            elif p.handle is None or p.handle.is_reference:
                exc = BadRequestError(
                    f"the local engine reads image bytes, not {p.url or (p.handle and p.handle.source)!r}"
                )
                exc.add_location(p.location)
                raise exc
            else:
                parts.append(ImagePart(p.handle, p.detail))
        chat.append(ChatMessage(m.role, parts, list(m.tool_calls), m.tool_call_id))
    return chat


def _config(req: CompletionRequest) -> PredictionConfig:
    p = req.params
    details = {img.detail for img in req.images if img.detail}
    return PredictionConfig(
        temperature=p.temperature,
        max_tokens=p.max_tokens,
        top_p=p.top_p,
        stop=tuple(p.stop or ()),
        seed=p.seed,
        detail=("high" if "high" in details else "low") if details else None,
        response_format=p.response_format,
        tools=req.tools,
        tool_choice=req.tool_choice,
        parallel_tool_calls=req.parallel_tool_calls,
    )


def _result(result: PredictionResult, cfg: ProviderConfig) -> ChatCompletion:
    stats = result.stats
    return completion_of(
        result.content,
        cfg.model,
        finish_reason=finish_reason_of(stats.stop_reason),
        usage=Usage.of(stats.prompt_tokens, stats.predicted_tokens),
        provider="local",
        tool_calls=result.tool_calls,
    )


def _last(maker: ChunkMaker, result: PredictionResult) -> list[ChatCompletionChunk]:
    """The calls (each whole, in one chunk), then the finish."""
    stats = result.stats
    calls = [maker.tool_call(i, c.id, c.name, c.arguments) for i, c in enumerate(result.tool_calls)]
    return [
        *calls,
        maker.finish(finish_reason_of(stats.stop_reason), Usage.of(stats.prompt_tokens, stats.predicted_tokens)),
    ]


def _chunks(stream: PredictionStream, cfg: ProviderConfig) -> Iterator[ChatCompletionChunk]:
    maker = ChunkMaker(cfg.model)
    with stream:  # a reader that stops early cancels the prediction
        for fragment in stream:
            if fragment.content:
                yield maker.text(fragment.content)
    yield from _last(maker, stream.result())


def completion(req: CompletionRequest, cfg: ProviderConfig) -> ChatCompletion | Iterator[ChatCompletionChunk]:
    chat, config = to_chat(req), _config(req)
    if req.stream:
        return _chunks(PredictionStream(_work(cfg, chat, config), model=cfg.model), cfg)
    from vlmkit.engine.owner import engine

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
    for chunk in _last(maker, stream.result()):
        yield chunk
