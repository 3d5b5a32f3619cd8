"""Models: OpenAI's ``GET /v1/models`` (with a ``vision`` flag), and management under ``/api/v1/models``.

- ``GET /api/v1/models``: downloaded and configured local models, which are loaded, and gateway names;
- ``POST /api/v1/models/load`` ``{"model", "ttl"?}`` and ``POST /api/v1/models/unload`` ``{"model"}``;
- ``POST /api/v1/models/download`` ``{"model"}`` starts a download (202) and
  ``GET /api/v1/models/download/{job_id}`` follows it.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from vlmkit.server.errors import APIError
from vlmkit.server.inputs import parse_json
from vlmkit.server.jsonutil import dumps
from vlmkit.server.state import ServerState, endpoint


def _json(obj: object, status: int = 200) -> Response:
    return Response(dumps(obj), status_code=status, media_type="application/json")


def _openai_models(state: ServerState) -> list[dict[str, Any]]:
    out = []
    for name, entry in state.local.entries().items():
        out.append(
            {
                "id": name,
                "object": "model",
                "created": 0,
                "owned_by": "vlmkit",
                "vision": entry.vision,
                "type": "local",
                "loaded": state.local.is_loaded(name),
            }
        )
    for name in state.gateway.names():
        out.append(
            {
                "id": name,
                "object": "model",
                "created": 0,
                "owned_by": state.gateway.owner(name),
                "vision": state.gateway.vision(name),
                "type": "gateway",
                "loaded": True,
            }
        )
    return out


@endpoint
async def list_models(request: Request, state: ServerState) -> Response:
    return _json({"object": "list", "data": _openai_models(state)})


@endpoint
async def retrieve_model(request: Request, state: ServerState) -> Response:
    name = request.path_params["model"]
    for model in _openai_models(state):
        if model["id"] == name:
            return _json(model)
    raise state.unknown_model(name)


@endpoint
async def manage_list(request: Request, state: ServerState) -> Response:
    entries = state.local.entries(refresh=True)
    return _json(
        {
            "downloaded": [
                {
                    "key": e.name,
                    "vision": e.vision,
                    "size_bytes": e.size_bytes,
                    "architecture": e.architecture,
                    "context_length": e.context_length,
                    "source": e.source,
                    "path": e.path,
                }
                for e in entries.values()
            ],
            "loaded": [info.to_dict() for info in state.local.loaded()],
            "gateway": state.gateway.health(),
            "downloads": [job.to_dict() for job in state.downloads.list()],
        }
    )


def _model_field(body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise APIError("'model' is required: a model key", 422, param="model")
    return model


@endpoint
async def load(request: Request, state: ServerState) -> Response:
    body = parse_json(await request.body())
    name = _model_field(body)
    if state.local.find(name) is None:
        if state.gateway.has(name):
            raise APIError(f"{name!r} is a gateway model: there is nothing to load", 400, param="model")
        raise state.unknown_model(name)
    ttl: Any = ...
    if "ttl" in body:
        ttl = body["ttl"]
        if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or ttl <= 0):
            raise APIError("'ttl' must be a positive number of seconds, or null for no idle unload", 422, param="ttl")
    info = await state.local.load(name, ttl=ttl)
    return _json({"model": name, "loaded": True, "info": info.to_dict()})


@endpoint
async def unload(request: Request, state: ServerState) -> Response:
    name = _model_field(parse_json(await request.body()))
    if state.local.find(name) is None:
        raise state.unknown_model(name)
    was = await state.local.unload(name)
    return _json({"model": name, "unloaded": was})


@endpoint
async def download(request: Request, state: ServerState) -> Response:
    name = _model_field(parse_json(await request.body()))
    job = state.downloads.start(name)
    return _json(job.to_dict(), status=202)


@endpoint
async def download_status(request: Request, state: ServerState) -> Response:
    return _json(state.downloads.get(request.path_params["job_id"]).to_dict())
