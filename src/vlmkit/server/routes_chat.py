"""``POST /v1/chat/completions``: a local model through the engine, or a gateway name through the providers.

Errors before the first token (unknown model, bad image, full queue) are HTTP errors with their own
status; an error after a stream has started is sent as an ``{"error": ...}`` event, which OpenAI's
clients raise as an exception.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from vlmkit.chat import Chat
from vlmkit.prediction import PredictionFragment, PredictionResult
from vlmkit.providers import ChatCompletion
from vlmkit.server.accounts import Meter
from vlmkit.server.auth import key_of
from vlmkit.server.errors import APIError, body_of
from vlmkit.server.fleet import SESSION_HEADER, request_cost
from vlmkit.server.gateway import GatewayStream
from vlmkit.server.inputs import ChatRequest, parse_chat_request, parse_lifted, resolve_chat
from vlmkit.server.jsonutil import dumps
from vlmkit.server.lifted import lift
from vlmkit.server.sse import DONE, EventStream, event, until_disconnect
from vlmkit.server.state import ServerState, endpoint, image_slot
from vlmkit.stream import CancelToken
from vlmkit.wire.openai_chat import ChunkWriter, completion_body, config_to_openai


@endpoint
async def chat_completions(request: Request, state: ServerState) -> Response:
    raw = await request.body()  # under the body limits, and holding no slot while it arrives
    async with image_slot(state, len(raw)):
        return await _chat_completions(request, state, raw)


async def _chat_completions(request: Request, state: ServerState, raw: bytes) -> Response:
    body = lift(raw)
    req = parse_chat_request(parse_lifted(body))
    gateway = state.gateway.has(req.model)
    if not gateway and state.local.find(req.model) is None:
        raise state.unknown_model(req.model)
    meter = state.accounts.admit(key_of(request), req.model)
    if gateway and req.config.detail is not None:
        raise APIError(
            "'detail' as an image token cap applies to local models; for a gateway model set "
            "'detail': 'low' | 'high' | 'auto' on each image_url",
            400,
            param="detail",
        )
    for name in ("image_max_tokens", "image_min_tokens"):
        if gateway and getattr(req.config, name) is not None:
            raise APIError(f"{name!r} applies to local models; for a gateway model leave it out", 400, param=name)
    s = state.settings
    chat = await resolve_chat(
        req.messages,
        state.files,
        fetch=s.fetch,
        max_pixels=s.max_pixels,
        max_images=s.max_images_per_request,
        lifted=body,
        keep_urls=gateway and state.gateway.forwards_urls(req.model),
    )
    meter.saw(chat)
    if state.metrics.enabled and chat.images:
        state.metrics.chat_images(req.model, chat, request_cost(chat, images_only=True))
    if gateway:
        return await _gateway(state, req, chat, request.headers.get(SESSION_HEADER), meter)
    return await _local(request, state, req, chat, meter)


# --- the gateway ---------------------------------------------------------------------------------


async def _gateway(state: ServerState, req: ChatRequest, chat: Chat, session: str | None, meter: Meter) -> Response:
    params = config_to_openai(req.config)
    if req.user is not None:
        params["user"] = req.user
    result = await state.gateway.complete(
        req.model,
        chat,
        params,
        stream=req.stream,
        session=session,
        done=lambda served: meter.done(served.prompt_tokens, served.completion_tokens),
    )
    if isinstance(result, ChatCompletion):
        body = result.to_dict()
        body["model"] = req.model
        return Response(dumps(body), media_type="application/json")
    return EventStream(_relay(result, req.model))


async def _relay(stream: GatewayStream, model: str) -> AsyncIterator[bytes]:
    try:
        async for chunk in stream:
            data = chunk.to_dict()
            data["model"] = model
            yield event(data)
    except Exception as exc:
        yield event(body_of(exc))
        return
    finally:
        await stream.aclose()
    yield DONE


# --- the local engine ----------------------------------------------------------------------------


async def _local(request: Request, state: ServerState, req: ChatRequest, chat: Chat, meter: Meter) -> Response:
    """A local model's answer; ``n`` choices are ``n`` predictions, one after the other (the engine
    makes one choice per prediction), streamed each in turn; each has its own cancel token, and the
    request's token cancels the one running."""
    config = dataclasses.replace(req.config, n=None)
    choices = req.config.n or 1
    token = CancelToken()
    if not req.stream:
        results = []
        for _ in range(choices):
            predicted = state.local.respond(req.model, chat, config, _child(token))
            results.append(await until_disconnect(request.receive, predicted, token.cancel))
        body = completion_body(results[0], req.model, more=results[1:])
        meter.done(body["usage"]["prompt_tokens"], body["usage"]["completion_tokens"])
        return Response(dumps(body), media_type="application/json")
    items = state.local.stream(req.model, chat, config, _child(token))
    # wait for the first fragment so that a full queue or a bad request is still an HTTP error
    first = await until_disconnect(request.receive, anext(items), token.cancel)

    def again() -> AsyncIterator[PredictionFragment | PredictionResult]:
        return state.local.stream(req.model, chat, config, _child(token))

    return EventStream(_local_events(items, first, req, meter, again, choices), on_disconnect=token.cancel)


def _child(parent: CancelToken) -> CancelToken:
    child = CancelToken()
    parent.on_cancel(child.cancel)
    return child


async def _local_events(
    items: AsyncIterator[PredictionFragment | PredictionResult],
    first: Any,
    req: ChatRequest,
    meter: Meter,
    again: Callable[[], AsyncIterator[PredictionFragment | PredictionResult]],
    choices: int,
) -> AsyncIterator[bytes]:
    chunks = ChunkWriter(req.model)
    item = first
    results: list[PredictionResult] = []
    try:
        for index in range(choices):
            chunks.index = index
            yield event(chunks.start())
            if index:
                await items.aclose()  # type: ignore[attr-defined]  # the last choice's stream, finished
                items = again()
                item = await anext(items)
            while True:
                if isinstance(item, PredictionResult):
                    if item.tool_calls:
                        yield event(chunks.tool_calls(item.tool_calls))
                    yield event(chunks.finish(item))
                    results.append(item)
                    break
                if item.content:
                    yield event(chunks.text(item.content))
                item = await anext(items)
        usage = completion_body(results[0], req.model, more=results[1:])["usage"]
        meter.done(usage["prompt_tokens"], usage["completion_tokens"])
        if req.include_usage:
            yield event({**chunks.usage(results[0].stats), "usage": usage})
    except Exception as exc:
        yield event(body_of(exc))
        return
    finally:
        aclose = getattr(items, "aclose", None)
        if aclose is not None:
            await aclose()
    yield DONE
