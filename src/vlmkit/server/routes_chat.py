"""``POST /v1/chat/completions``: a local model through the engine, or a gateway name through the providers.

Errors before the first token (unknown model, bad image, full queue) are HTTP errors with their own
status; an error after a stream has started is sent as an ``{"error": ...}`` event, which OpenAI's
clients raise as an exception.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import Response

from vlmkit.chat import Chat
from vlmkit.prediction import PredictionResult
from vlmkit.providers import ChatCompletion
from vlmkit.server.errors import body_of
from vlmkit.server.gateway import GatewayStream
from vlmkit.server.inputs import ChatRequest, parse_chat_request, parse_lifted
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
    if not req.stream:
        result = await answer(asked, chat, req.config)
        return Response(dumps(completion_body(result, req.model)), media_type="application/json")
    turn = await start(asked, chat, req.config)
    return EventStream(_local_events(turn, req), on_disconnect=turn.cancel)


async def _local_events(turn: Turn, req: ChatRequest) -> AsyncIterator[bytes]:
    chunks = ChunkWriter(req.model)
    yield event(chunks.start())
    try:
        async for item in turn:
            if isinstance(item, PredictionResult):
                yield event(chunks.finish(item))
                if req.include_usage:
                    yield event(chunks.usage(item.stats))
            else:
                yield event(chunks.text(item))
    except Exception as exc:
        yield event(body_of(exc))
        return
    yield DONE
