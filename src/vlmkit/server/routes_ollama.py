"""Ollama's API: ``/api/chat``, ``/api/generate``, ``/api/tags``, ``/api/show``, ``/api/ps``,
``/api/pull`` and ``/api/version``, so tools that speak only Ollama's API can use vlmkit's models.

Bodies are read by :mod:`vlmkit.wire.ollama_api`; a turn runs on the local engine or through the
gateway (:mod:`vlmkit.server.turn`), with the same image sources (an http(s) URL in ``images`` is
fetched with the safe fetcher), keys and limits as chat completions. Streams are NDJSON, as
Ollama's. ``keep_alive`` sets a local model's idle TTL (0: unloaded after the request). A pull
starts the server's download job for the name (:mod:`vlmkit.server.downloads`, the engine's
``vlmkit get``) and streams its progress. Errors are ``{"error": "..."}``
(:func:`~vlmkit.server.errors.shape_for`); one after a stream has started is such a line.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from vlmkit._version import __version__
from vlmkit.prediction import PredictionResult
from vlmkit.server.errors import APIError, body_of
from vlmkit.server.inputs import parse_json
from vlmkit.server.jsonutil import dumps
from vlmkit.server.sse import EventStream
from vlmkit.server.state import ServerState, endpoint, image_slot
from vlmkit.server.turn import Turn, admit, answer, resolve, start
from vlmkit.wire import ollama_api as wire

PULL_POLL = 0.25
"""Seconds between two progress lines of a pull."""


class LineStream(EventStream):
    """NDJSON lines, streamed as :class:`~vlmkit.server.sse.EventStream` streams events."""

    media_type = "application/x-ndjson"


def _line(obj: Any) -> bytes:
    return dumps(obj) + b"\n"


def _json(obj: Any, status: int = 200) -> Response:
    return Response(dumps(obj), status_code=status, media_type="application/json")


# --- chat and generate ---------------------------------------------------------------------------


@endpoint
async def chat(request: Request, state: ServerState) -> Response:
    raw = await request.body()
    async with image_slot(state, len(raw)):
        return await _turn(request, state, wire.read_chat(parse_json(raw)))


@endpoint
async def generate(request: Request, state: ServerState) -> Response:
    raw = await request.body()
    async with image_slot(state, len(raw)):
        return await _turn(request, state, wire.read_generate(parse_json(raw)))


async def _turn(request: Request, state: ServerState, req: wire.OllamaRequest) -> Response:
    asked = admit(request, state, req.model, req.config)
    local = not asked.gateway
    if local and req.keep_alive_given and req.keep_alive != 0:
        await state.local.load(req.model, ttl=req.keep_alive)
    if req.empty:  # Ollama's way to load a model, or (keep_alive 0) to unload it
        reason = "load"
        if local and req.keep_alive == 0:
            await state.local.unload(req.model)
            reason = "unload"
        elif local and not req.keep_alive_given:  # loaded above with its keep_alive otherwise
            await state.local.load(req.model)
        return _json(wire.answer_line(req.kind, req.model, None, text="", reason=reason))
    conversation = await resolve(asked, wire.to_chat(req))
    if not req.stream:
        try:
            result = await answer(asked, conversation, req.config)
        finally:
            await _after(state, req, local)
        return _json(wire.answer_line(req.kind, req.model, result, text=result.content))
    turn = await start(asked, conversation, req.config)
    return LineStream(_lines(turn, req, state, local), on_disconnect=turn.cancel)


async def _after(state: ServerState, req: wire.OllamaRequest, local: bool) -> None:
    if local and req.keep_alive_given and req.keep_alive == 0:
        await state.local.unload(req.model)


async def _lines(turn: Turn, req: wire.OllamaRequest, state: ServerState, local: bool) -> AsyncIterator[bytes]:
    try:
        async for item in turn:
            if isinstance(item, PredictionResult):
                yield _line(wire.answer_line(req.kind, req.model, item, text=""))
            else:
                yield _line(wire.fragment_line(req.kind, req.model, item))
    except Exception as exc:
        yield _line(body_of(exc, wire.error_body))
    finally:
        await _after(state, req, local)


# --- models --------------------------------------------------------------------------------------


def _modified(path: str | None) -> str:
    try:
        at = datetime.fromtimestamp(Path(path).stat().st_mtime, timezone.utc) if path else None
    except OSError:
        at = None
    return wire.timestamp(at)


@endpoint
async def tags(request: Request, state: ServerState) -> Response:
    models = [
        wire.model_entry(
            name,
            size=e.size_bytes,
            family=e.architecture,
            context_length=e.context_length,
            modified_at=_modified(e.path),
        )
        for name, e in state.local.entries().items()
    ]
    for name in state.gateway.names():
        models.append(
            wire.model_entry(
                name, size=0, family=state.gateway.owner(name), context_length=None, modified_at=_modified(None)
            )
        )
    return _json({"models": models})


@endpoint
async def ps(request: Request, state: ServerState) -> Response:
    ttl = state.settings.model_ttl
    expires = wire.timestamp(datetime.now(timezone.utc) + timedelta(seconds=ttl)) if ttl else "0001-01-01T00:00:00Z"
    models = [
        wire.model_entry(
            info.key,
            size=info.size_bytes,
            family=info.architecture,
            context_length=info.context_length,
            modified_at=_modified(info.path),
            expires_at=expires,
        )
        for info in state.local.loaded()
    ]
    return _json({"models": models})


def _name(body: dict[str, Any]) -> str:
    name = body.get("model") or body.get("name")
    if not isinstance(name, str) or not name:
        raise APIError("'model' is required: the name of a model from /api/tags", 400, param="model")
    return name


@endpoint
async def show(request: Request, state: ServerState) -> Response:
    name = _name(parse_json(await request.body()))
    entry = state.local.find(name)
    if entry is not None:
        body = wire.show_body(
            family=entry.architecture,
            vision=entry.vision,
            context_length=entry.context_length,
            modified_at=_modified(entry.path),
        )
    elif state.gateway.has(name):
        body = wire.show_body(
            family=state.gateway.owner(name),
            vision=state.gateway.vision(name),
            context_length=None,
            modified_at=_modified(None),
        )
    else:
        raise state.unknown_model(name)
    return _json(body)


@endpoint
async def version(request: Request, state: ServerState) -> Response:
    return _json({"version": __version__})


# --- pull ----------------------------------------------------------------------------------------


@endpoint
async def pull(request: Request, state: ServerState) -> Response:
    body = parse_json(await request.body())
    job = state.downloads.start(_name(body))
    if body.get("stream") is not False:
        return LineStream(_progress(state, job.id))
    while job.status == "downloading":
        await asyncio.sleep(PULL_POLL)
    if job.status == "failed":
        error = job.error or {}
        raise APIError(f"pulling {job.model!r} failed: {error.get('message')}", int(error.get("status") or 500))
    state.local.entries(refresh=True)  # listed before the client hears it is done
    return _json({"status": "success"})


async def _progress(state: ServerState, job_id: str) -> AsyncIterator[bytes]:
    job = state.downloads.get(job_id)
    yield _line({"status": "pulling manifest"})
    while job.status == "downloading":
        yield _line({"status": f"pulling {job.model}", "digest": job.id, "completed": job.bytes_done()})
        await asyncio.sleep(PULL_POLL)
    if job.status == "failed":
        error = job.error or {}
        yield _line({"error": f"pulling {job.model!r} failed: {error.get('message')}"})
        return
    state.local.entries(refresh=True)  # listed before the client hears it is done
    done = job.bytes_done()
    yield _line({"status": f"pulling {job.model}", "digest": job.id, "total": done, "completed": done})
    yield _line({"status": "success"})


ROUTES = [
    Route("/api/chat", chat, methods=["POST"]),
    Route("/api/generate", generate, methods=["POST"]),
    Route("/api/tags", tags, methods=["GET"]),
    Route("/api/ps", ps, methods=["GET"]),
    Route("/api/show", show, methods=["POST"]),
    Route("/api/pull", pull, methods=["POST"]),
    Route("/api/version", version, methods=["GET"]),
]
