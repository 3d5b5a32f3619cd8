"""OpenAI's Responses API: ``POST /v1/responses``.

The body is read by :mod:`vlmkit.wire.openai_responses` (large data URLs lifted out first, as for
chat completions); the turn runs on the local engine or through the gateway
(:mod:`vlmkit.server.turn`), with the same image sources, keys and limits. A stored response's
conversation (:mod:`vlmkit.server.responses_store`) comes first when ``previous_response_id`` names
it, its images already read. Errors are in OpenAI's shape; one after a stream has started is an
``error`` event.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from vlmkit.chat import Chat
from vlmkit.errors import InvalidSettingError
from vlmkit.prediction import PredictionResult
from vlmkit.server.errors import APIError, body_of
from vlmkit.server.inputs import parse_lifted
from vlmkit.server.jsonutil import dumps
from vlmkit.server.lifted import lift
from vlmkit.server.sse import EventStream, named_event
from vlmkit.server.state import ServerState, endpoint, image_slot
from vlmkit.server.turn import Turn, admit, answer, resolve, start
from vlmkit.wire import openai_responses as wire


@endpoint
async def create(request: Request, state: ServerState) -> Response:
    raw = await request.body()
    async with image_slot(state, len(raw)):
        lifted = lift(raw)
        try:
            req = wire.read_request(parse_lifted(lifted))
        except InvalidSettingError as exc:
            raise APIError(exc.message, 422, code="invalid_request", param=exc.location) from None
        asked = admit(request, state, req.model, req.config)
        history = None
        if req.previous_response_id is not None:
            history = await state.responses.get(req.previous_response_id)
            if history is None:
                raise APIError(
                    f"previous_response_id: no stored response has the id {req.previous_response_id!r} (it was "
                    "made with store: false, forgotten, or made by another server); send the whole conversation "
                    "as input instead",
                    400,
                    code="previous_response_not_found",
                    param="previous_response_id",
                )
        chat = await resolve(asked, wire.to_chat_of(req, history), lifted)
        if not req.stream:
            result = await answer(asked, chat, req.config, req.user)
            writer = wire.EventWriter(req)
            await _store(state, req, writer.id, chat, result)
            return Response(dumps(writer.body(result)), media_type="application/json")
        turn = await start(asked, chat, req.config, req.user)
        return EventStream(_events(turn, wire.EventWriter(req), state, req, chat), on_disconnect=turn.cancel)


async def _store(
    state: ServerState, req: wire.ResponsesRequest, response_id: str, chat: Chat, result: PredictionResult
) -> None:
    if req.store:
        chat.add_assistant_response(result.content)
        await state.responses.put(response_id, chat)


async def _events(
    turn: Turn, writer: wire.EventWriter, state: ServerState, req: wire.ResponsesRequest, chat: Chat
) -> AsyncIterator[bytes]:
    for kind, data in writer.start():
        yield named_event(kind, data)
    try:
        async for item in turn:
            if isinstance(item, PredictionResult):
                await _store(state, req, writer.id, chat, item)
                for kind, data in writer.finish(item):
                    yield named_event(kind, data)
            else:
                yield named_event(*writer.text(item))
    except Exception as exc:
        error = body_of(exc)["error"]
        yield named_event(*writer.error(error["message"], error["code"], error["param"]))


ROUTES = [Route("/v1/responses", create, methods=["POST"])]
