"""One turn of a chat on a served model, whichever protocol asked for it.

Every chat-like route (OpenAI's chat completions and Responses, Anthropic's Messages, Ollama's chat
and generate) reads its body with its :mod:`vlmkit.wire` module into a :class:`~vlmkit.chat.Chat`
and a :class:`~vlmkit.prediction.PredictionConfig`, then comes here: :func:`admit` answers an
unknown model (and refuses local-only settings for a gateway name) and admits the request's key
(its allowed models and limits, :mod:`vlmkit.server.accounts`); :func:`resolve` reads the images
with the server's sources and limits; :func:`answer` or :func:`start` runs the turn on the local
engine or through the gateway (with the fleet's session affinity) and records its usage. Both give
vlmkit's values back (a :class:`~vlmkit.prediction.PredictionResult`, or text fragments then the
result), so each route only writes them in its protocol. A stream's first item is awaited before
the route answers, so a full queue or a bad request is still an HTTP error and not an event.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from vlmkit.chat import Chat
from vlmkit.prediction import PredictionConfig, PredictionFragment, PredictionResult
from vlmkit.providers import ChatCompletion
from vlmkit.server.accounts import Meter
from vlmkit.server.auth import key_of
from vlmkit.server.errors import APIError
from vlmkit.server.fleet import SESSION_HEADER, RequestCost, request_cost
from vlmkit.server.gateway import GatewayStream
from vlmkit.server.inputs import resolve_images
from vlmkit.server.lifted import Lifted
from vlmkit.server.sse import until_disconnect
from vlmkit.server.state import ServerState
from vlmkit.stream import CancelToken
from vlmkit.wire.openai_chat import config_to_openai, stats_from_openai

__all__ = ["Admitted", "Turn", "admit", "answer", "gateway_params", "resolve", "start"]

Item = str | PredictionResult
"""What a streamed turn gives: text fragments, then the result."""


@dataclass
class Admitted:
    """A request whose model exists and whose key may use it: where it goes, and its meter."""

    request: Request
    state: ServerState
    model: str
    gateway: bool
    meter: Meter
    cost: RequestCost | None = None
    """The request's estimate (tokens, images, bytes), made once its images are read (:func:`resolve`)."""

    @property
    def session(self) -> str | None:
        return self.request.headers.get(SESSION_HEADER)


def admit(request: Request, state: ServerState, model: str, config: PredictionConfig) -> Admitted:
    """``model`` checked (an unknown one is a 404; settings only a local model reads are refused for a
    gateway name), then the request's key admitted for it."""
    gateway = state.gateway.has(model)
    if not gateway and state.local.find(model) is None:
        raise state.unknown_model(model)
    meter = state.accounts.admit(key_of(request), model)
    if gateway and config.detail is not None:
        raise APIError(
            "'detail' as an image token cap applies to local models; for a gateway model set "
            "'detail': 'low' | 'high' | 'auto' on each image_url",
            400,
            param="detail",
        )
    for name in ("image_max_tokens", "image_min_tokens"):
        if gateway and getattr(config, name) is not None:
            raise APIError(f"{name!r} applies to local models; for a gateway model leave it out", 400, param=name)
    return Admitted(request, state, model, gateway, meter)


async def resolve(asked: Admitted, chat: Chat, lifted: Lifted | None = None) -> Chat:
    """``chat`` with its images read: the server's sources (uploads, lifted data URLs, safe fetching) and
    limits; http(s) URLs are left to a gateway model whose deployments forward them. Counted in the meter
    and the metrics."""
    state, s = asked.state, asked.state.settings
    chat = await resolve_images(
        chat,
        state.files,
        fetch=s.fetch,
        max_pixels=s.max_pixels,
        max_images=s.max_images_per_request,
        lifted=lifted,
        keep_urls=asked.gateway and state.gateway.forwards_urls(asked.model),
    )
    asked.cost = cost = request_cost(chat)
    asked.meter.saw(cost)
    state.metrics.chat_images(asked.model, cost)
    return chat


def gateway_params(config: PredictionConfig, user: str | None) -> dict[str, Any]:
    """The settings of a turn as the gateway's (OpenAI's) request fields."""
    params = config_to_openai(config)
    if user is not None:
        params["user"] = user
    return params


async def gateway_complete(
    asked: Admitted, chat: Chat, config: PredictionConfig, user: str | None, *, stream: bool
) -> ChatCompletion | GatewayStream:
    """The gateway's answer or stream, its usage recorded in the meter when it ends."""
    meter = asked.meter
    return await asked.state.gateway.complete(
        asked.model,
        chat,
        gateway_params(config, user),
        stream=stream,
        session=asked.session if asked.state.gateway.sticks_to_sessions(asked.model) else None,
        done=lambda served: meter.done(served.prompt_tokens, served.completion_tokens),
        cost=asked.cost,
    )


async def answer(asked: Admitted, chat: Chat, config: PredictionConfig, user: str | None = None) -> PredictionResult:
    """The whole reply; a client that goes away cancels a local prediction."""
    if asked.gateway:
        started = time.perf_counter()
        completion = await gateway_complete(asked, chat, config, user, stream=False)
        assert isinstance(completion, ChatCompletion)
        ended = time.perf_counter()
        finish = completion.choices[0].finish_reason if completion.choices else None
        usage = completion.usage
        stats = stats_from_openai(
            finish, usage.prompt_tokens, usage.completion_tokens, started=started, first_token=ended, ended=ended
        )
        return PredictionResult(content=completion.content, stats=stats)
    token = CancelToken()
    state = asked.state
    result = await until_disconnect(
        asked.request.receive, state.local.respond(asked.model, chat, config, token), token.cancel
    )
    asked.meter.done(result.stats.prompt_tokens, result.stats.predicted_tokens)
    return result


@dataclass
class Turn:
    """A started stream: iterate it for text fragments and then the result; ``cancel`` stops it."""

    items: AsyncIterator[Item]
    cancel: Callable[[], None]

    def __aiter__(self) -> AsyncIterator[Item]:
        return self.items


async def start(asked: Admitted, chat: Chat, config: PredictionConfig, user: str | None = None) -> Turn:
    """A streamed reply, its first item already awaited (so its errors are still the route's to answer)."""
    if asked.gateway:
        started = time.perf_counter()
        stream = await gateway_complete(asked, chat, config, user, stream=True)
        assert isinstance(stream, GatewayStream)
        items = _gateway_items(stream, started)
        first = await anext(items)
        return Turn(_chain(first, items), lambda: None)
    token = CancelToken()
    local = asked.state.local.stream(asked.model, chat, config, token)
    first_local = await until_disconnect(asked.request.receive, anext(local), token.cancel)
    return Turn(_local_items(first_local, local, asked.meter), token.cancel)


async def _chain(first: Item, rest: AsyncIterator[Item]) -> AsyncIterator[Item]:
    try:
        yield first
        async for item in rest:
            yield item
    finally:
        aclose = getattr(rest, "aclose", None)
        if aclose is not None:
            await aclose()


async def _local_items(
    first: PredictionFragment | PredictionResult,
    rest: AsyncIterator[PredictionFragment | PredictionResult],
    meter: Meter,
) -> AsyncIterator[Item]:
    item = first
    try:
        while True:
            if isinstance(item, PredictionResult):
                meter.done(item.stats.prompt_tokens, item.stats.predicted_tokens)
                yield item
                return
            if item.content:
                yield item.content
            item = await anext(rest)
    finally:
        aclose = getattr(rest, "aclose", None)
        if aclose is not None:
            await aclose()


async def _gateway_items(stream: GatewayStream, started: float) -> AsyncIterator[Item]:
    parts: list[str] = []
    finish: str | None = None
    prompt = completion = None
    first: float | None = None
    try:
        async for chunk in stream:
            if chunk.usage is not None:
                prompt, completion = chunk.usage.prompt_tokens, chunk.usage.completion_tokens
            for choice in chunk.choices:
                if choice.finish_reason:
                    finish = choice.finish_reason
                if choice.delta.content:
                    first = first if first is not None else time.perf_counter()
                    parts.append(choice.delta.content)
                    yield choice.delta.content
    finally:
        await stream.aclose()
    stats = stats_from_openai(finish, prompt, completion, started=started, first_token=first, ended=time.perf_counter())
    yield PredictionResult(content="".join(parts), stats=stats)
