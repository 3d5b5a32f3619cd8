"""Anthropic's Messages API: ``POST /v1/messages`` and ``POST /v1/messages/count_tokens``.

The body is read by :mod:`vlmkit.wire.anthropic_messages`; the turn runs on the local engine or
through the gateway as a chat completion does (:mod:`vlmkit.server.turn`), with the same image
sources, keys (``x-api-key`` as well as a bearer key) and limits. Errors are in Anthropic's shape
(the server's error table, :func:`~vlmkit.server.errors.shape_for`); one after a stream has started
is an ``error`` event, which Anthropic's clients raise.

count_tokens is an estimate, not the model's own count: text at four characters a token, and each
image at Anthropic's documented cost for its size (:func:`vlmkit.images.estimate_image_tokens`).
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from vlmkit.chat import Chat, ImagePart, TextPart
from vlmkit.errors import VlmkitError
from vlmkit.images import estimate_image_tokens
from vlmkit.prediction import PredictionConfig, PredictionResult
from vlmkit.server.errors import body_of
from vlmkit.server.inputs import parse_lifted
from vlmkit.server.jsonutil import dumps
from vlmkit.server.lifted import Lifted, lift
from vlmkit.server.sse import EventStream, named_event
from vlmkit.server.state import ServerState, endpoint, image_slot
from vlmkit.server.turn import Admitted, Turn, admit, answer, resolve, start
from vlmkit.wire import anthropic_messages as wire


@endpoint
async def messages(request: Request, state: ServerState) -> Response:
    raw = await request.body()
    async with image_slot(state, len(raw)):
        lifted = lift(raw)  # large base64 sources decoded straight from the body (see lifted.py)
        req = wire.read_request(parse_lifted(lifted))
        asked = admit(request, state, req.model, req.config)
        chat = await _chat(asked, req, lifted)
        if not req.stream:
            result = await answer(asked, chat, req.config, req.user)
            body = wire.message_body(result, req.model, req.config)
            return Response(dumps(body), media_type="application/json")
        turn = await start(asked, chat, req.config, req.user)
        return EventStream(_events(turn, wire.EventWriter(req.model, req.config)), on_disconnect=turn.cancel)


@endpoint
async def count_tokens(request: Request, state: ServerState) -> Response:
    raw = await request.body()
    async with image_slot(state, len(raw)):
        lifted = lift(raw)
        req = wire.read_request(parse_lifted(lifted), count_only=True)
        asked = admit(request, state, req.model, PredictionConfig())
        chat = await _chat(asked, req, lifted)
        return Response(dumps(wire.count_body(_estimate(chat))), media_type="application/json")


async def _chat(asked: Admitted, req: wire.MessagesRequest, lifted: Lifted) -> Chat:
    try:
        return await resolve(asked, wire.to_chat(req.messages, req.system), lifted)
    except VlmkitError as exc:
        raise wire.restate(exc) from None


def _estimate(chat: Chat) -> int:
    tokens = 0
    for message in chat.messages:
        tokens += 4  # the turn's own markers
        for part in message.content:
            if isinstance(part, TextPart):
                tokens += math.ceil(len(part.text) / 4)
            elif isinstance(part, ImagePart):
                tokens += estimate_image_tokens(part.image, "anthropic")
    return tokens


async def _events(turn: Turn, writer: wire.EventWriter) -> AsyncIterator[bytes]:
    for name, data in writer.start():
        yield named_event(name, data)
    try:
        async for item in turn:
            if isinstance(item, PredictionResult):
                for name, data in writer.finish(item):
                    yield named_event(name, data)
            else:
                yield named_event(*writer.text(item))
    except Exception as exc:
        yield named_event(*writer.error(body_of(exc, wire.error_body)))


ROUTES = [
    Route("/v1/messages", messages, methods=["POST"]),
    Route("/v1/messages/count_tokens", count_tokens, methods=["POST"]),
]
