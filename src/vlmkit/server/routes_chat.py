"""``POST /v1/chat/completions``: a local model through the engine, or a gateway name through the providers.

Errors before the first token (unknown model, bad image, full queue) are HTTP errors with their own
status; an error after a stream has started is sent as an ``{"error": ...}`` event, which OpenAI's
clients raise as an exception.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

from vlmkit.chat import Chat
from vlmkit.prediction import PredictionResult
from vlmkit.providers import ChatCompletion
from vlmkit.server.errors import body_of
from vlmkit.server.gateway import GatewayStream
from vlmkit.server.inputs import ChatRequest, media_blamed, parse_chat_request, parse_lifted
from vlmkit.server.jsonutil import dumps
from vlmkit.server.lifted import lift
from vlmkit.server.sse import DONE, EventStream, event
from vlmkit.server.state import ServerState, endpoint, image_slot
from vlmkit.server.turn import Admitted, Turn, admit, answer, gateway_complete, resolve, start
from vlmkit.wire.openai_chat import ChunkWriter, completion_body, to_chat


@endpoint
async def chat_completions(request: Request, state: ServerState) -> Response:
    raw = await request.body()  # under the body limits, and holding no slot while it arrives
    async with image_slot(state, len(raw)):
        return await _chat_completions(request, state, raw)


async def _chat_completions(request: Request, state: ServerState, raw: bytes) -> Response:
    body = lift(raw)
    req = parse_chat_request(parse_lifted(body))
    asked = admit(request, state, req.model, req.config)
    chat = await resolve(asked, to_chat(req.messages), body)
    with media_blamed(chat):  # a context overflow names the PDF or video that brought the most images
        if asked.gateway:
            return await _gateway(asked, req, chat)
        return await _local(asked, req, chat)


# --- the gateway ---------------------------------------------------------------------------------


async def _gateway(asked: Admitted, req: ChatRequest, chat: Chat) -> Response:
    """The upstream's answer as it came (with its tool calls and usage), under the name asked for."""
    result = await gateway_complete(asked, chat, req.config, req.user, stream=req.stream)
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


async def _local(asked: Admitted, req: ChatRequest, chat: Chat) -> Response:
    """A local model's answer; ``n`` choices are ``n`` predictions, one after the other (the engine
    makes one choice per prediction), streamed each in turn; a client that goes away cancels the one
    running."""
    config = dataclasses.replace(req.config, n=None)
    choices = req.config.n or 1
    if not req.stream:
        results = [await answer(asked, chat, config) for _ in range(choices)]
        body = completion_body(results[0], req.model, more=results[1:])
        return Response(dumps(body), media_type="application/json")
    turns = [await start(asked, chat, config)]  # the first awaited: a full queue is still an HTTP error

    async def next_turn() -> Turn:
        turns.append(await start(asked, chat, config))
        return turns[-1]

    events = _local_events(turns[0], next_turn, req, choices)
    return EventStream(events, on_disconnect=lambda: turns[-1].cancel())


async def _local_events(
    turn: Turn, next_turn: Callable[[], Awaitable[Turn]], req: ChatRequest, choices: int
) -> AsyncIterator[bytes]:
    chunks = ChunkWriter(req.model)
    results: list[PredictionResult] = []
    try:
        for index in range(choices):
            chunks.index = index
            if index:
                turn = await next_turn()
            yield event(chunks.start())
            async for item in turn:
                if isinstance(item, PredictionResult):
                    if item.tool_calls:
                        yield event(chunks.tool_calls(item.tool_calls))
                    yield event(chunks.finish(item))
                    results.append(item)
                else:
                    yield event(chunks.text(item))
        if req.include_usage:
            usage = completion_body(results[0], req.model, more=results[1:])["usage"]
            yield event({**chunks.usage(results[0].stats), "usage": usage})
    except Exception as exc:
        yield event(body_of(exc))
        return
    yield DONE
