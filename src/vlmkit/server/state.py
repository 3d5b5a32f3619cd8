"""What every route shares: the settings, the file store, the local models, the gateway, the downloads."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from vlmkit.server.accounts import Accounts
from vlmkit.server.config import ServerSettings
from vlmkit.server.downloads import Downloads
from vlmkit.server.errors import APIError, response_for, shape_for
from vlmkit.server.files import FileStore
from vlmkit.server.gateway import Gateway
from vlmkit.server.limits import LARGE_BODY, BodyBudget
from vlmkit.server.local import LocalModels
from vlmkit.server.metrics import Metrics
from vlmkit.server.responses_store import ResponseStore


@dataclass
class ServerState:
    settings: ServerSettings
    files: FileStore
    local: LocalModels
    gateway: Gateway
    downloads: Downloads
    large_bodies: asyncio.Semaphore
    """Slots for requests with large bodies (images), which bound the image work in flight (decoding,
    rendering, predicting). A request takes one once its body has arrived, so a slow sender never
    holds one: it is bounded by the body limits instead (:mod:`vlmkit.server.limits`)."""
    body_budget: BodyBudget
    """The bytes of large bodies held in memory at once (:class:`~vlmkit.server.limits.BodyBudget`)."""
    metrics: Metrics
    accounts: Accounts
    """Keys' limits and usage (:mod:`vlmkit.server.accounts`)."""
    responses: ResponseStore
    """The Responses API's stored conversations, for ``previous_response_id``."""

    @classmethod
    def create(cls, settings: ServerSettings) -> ServerState:
        local = LocalModels(settings)
        metrics = Metrics()
        local.on_result = metrics.local_result
        metrics.watch_queue(lambda: local.inflight)
        return cls(
            settings=settings,
            files=FileStore(settings.files_max_bytes, settings.files_dir),
            local=local,
            gateway=Gateway(
                settings.gateway, cooldown=settings.failover_cooldown, fetch=settings.fetch, metrics=metrics
            ),
            downloads=Downloads(settings.models_dir, on_done=lambda: local.entries(refresh=True)),
            large_bodies=asyncio.Semaphore(settings.max_large_requests),
            body_budget=BodyBudget(settings.max_body_memory_bytes),
            metrics=metrics,
            accounts=Accounts(settings),
            responses=ResponseStore(settings.files_dir),
        )

    def unknown_model(self, name: str) -> APIError:
        known = sorted({*self.gateway.names(), *self.local.entries()})
        listed = ", ".join(known[:20]) + (" ..." if len(known) > 20 else "") if known else "none"
        return APIError(
            f"the model {name!r} does not exist on this server; served: {listed}",
            404,
            code="model_not_found",
            param="model",
        )


@contextlib.asynccontextmanager
async def image_slot(state: ServerState, body_size: int) -> AsyncIterator[None]:
    """Hold a large-body slot while a received body's images are worked on (small ones pass straight through)."""
    if body_size <= LARGE_BODY:
        yield
        return
    async with state.large_bodies:
        yield


def state_of(request: Request) -> ServerState:
    state: ServerState = request.app.state.vlmkit
    return state


Endpoint = Callable[[Request], Awaitable[Response]]


def endpoint(fn: Callable[[Request, ServerState], Awaitable[Response]]) -> Endpoint:
    """A route handler that receives the shared state and answers every error in its protocol's shape
    (:func:`~vlmkit.server.errors.shape_for` its path)."""

    @functools.wraps(fn)
    async def handler(request: Request) -> Response:
        try:
            return await fn(request, state_of(request))
        except Exception as exc:
            return response_for(exc, shape_for(request.url.path))

    return handler
