"""The ASGI application: routes, API keys, the body limit, errors in OpenAI's shape, and shutdown.

Middleware order (outermost first): API key check (a request without a valid key is refused before
its body is read), body limits (size, deadline, rate), then Starlette's router. Unknown routes and
methods answer in OpenAI's error shape too. On shutdown, in-flight predictions are cancelled and every model unloaded.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import anyio.to_thread
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from vlmkit.server import (
    lmstudio_ws,
    metrics,
    playground,
    routes_chat,
    routes_files,
    routes_inspect,
    routes_messages,
    routes_models,
    routes_ollama,
    routes_responses,
    routes_usage,
)
from vlmkit.server.auth import APIKeyMiddleware
from vlmkit.server.config import ServerSettings
from vlmkit.server.errors import error_response, response_for, shape_for
from vlmkit.server.jsonutil import dumps
from vlmkit.server.limits import BodyLimitMiddleware, BodyLimits
from vlmkit.server.state import ServerState

log = logging.getLogger("vlmkit.server")


async def health(request: Request) -> Response:
    state: ServerState = request.app.state.vlmkit
    body = {
        "status": "shutting_down" if state.local.closing else "ok",
        "loaded_models": len(state.local.loaded()),
        "inflight": state.local.inflight,
    }
    return Response(dumps(body), status_code=503 if state.local.closing else 200, media_type="application/json")


ROUTES = [
    Route("/health", health, methods=["GET"]),
    Route("/v1/health", health, methods=["GET"]),
    Route("/v1/chat/completions", routes_chat.chat_completions, methods=["POST"]),
    Route("/v1/models", routes_models.list_models, methods=["GET"]),
    Route("/v1/models/{model:path}", routes_models.retrieve_model, methods=["GET"]),
    Route("/v1/files", routes_files.upload, methods=["POST"]),
    Route("/v1/files", routes_files.list_files, methods=["GET"]),
    Route("/v1/files/{file_id}", routes_files.retrieve, methods=["GET"]),
    Route("/v1/files/{file_id}", routes_files.delete, methods=["DELETE"]),
    Route("/v1/files/{file_id}/content", routes_files.content, methods=["GET"]),
    Route("/api/v1/models", routes_models.manage_list, methods=["GET"]),
    Route("/api/v1/models/load", routes_models.load, methods=["POST"]),
    Route("/api/v1/models/unload", routes_models.unload, methods=["POST"]),
    Route("/api/v1/models/download", routes_models.download, methods=["POST"]),
    Route("/api/v1/models/download/{job_id}", routes_models.download_status, methods=["GET"]),
    *metrics.ROUTES,
    *routes_usage.ROUTES,
    *lmstudio_ws.ROUTES,
    *routes_inspect.ROUTES,
    *playground.ROUTES,
    *routes_messages.ROUTES,
    *routes_responses.ROUTES,
    *routes_ollama.ROUTES,
]


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    shape = shape_for(request.url.path)
    if exc.status_code == 404:
        return error_response(f"no route {request.method} {request.url.path} on this server", 404, shape=shape)
    if exc.status_code == 405:
        return error_response(f"{request.method} is not allowed on {request.url.path}", 405, shape=shape)
    return error_response(str(exc.detail), exc.status_code, shape=shape)


async def _any_error(request: Request, exc: Exception) -> Response:
    return response_for(exc, shape_for(request.url.path))


def create_app(settings: ServerSettings | None = None, *, state: ServerState | None = None) -> ASGIApp:
    """The server as an ASGI application (serve it with uvicorn, or :func:`vlmkit.server.serve`)."""
    settings = settings or ServerSettings()
    shared = state or ServerState.create(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        shared.gateway.start()
        yield
        log.info("shutting down: cancelling %d in-flight prediction(s), unloading models", shared.local.inflight)
        await anyio.to_thread.run_sync(shared.local.close)
        await shared.gateway.aclose()
        await anyio.to_thread.run_sync(shared.accounts.close)

    app = Starlette(
        routes=ROUTES,
        exception_handlers={HTTPException: _http_error, Exception: _any_error},
        lifespan=lifespan,
    )
    app.state.vlmkit = shared
    limits = BodyLimits(
        settings.max_body_bytes, settings.body_timeout, settings.min_body_rate, settings.body_rate_grace
    )
    wrapped: Any = BodyLimitMiddleware(app, limits, shared.body_budget)
    wrapped = APIKeyMiddleware(wrapped, settings.key_policies())
    return _Lifespan(wrapped, shared)


class _Lifespan:
    """The outermost ASGI app; keeps the shared state reachable (``app.state``) for embedders and tests."""

    def __init__(self, app: ASGIApp, state: ServerState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)
