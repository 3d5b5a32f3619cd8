"""``GET /v1/usage``: usage per key and model from the usage database, for an admin key only.

``?key=NAME`` keeps one key's rows. The answer: ``{"object": "list", "data": [{"key", "model",
"requests", "prompt_tokens", "completion_tokens", "total_tokens", "images", "image_bytes"}]}``.
"""

from __future__ import annotations

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from vlmkit.server.auth import key_of
from vlmkit.server.errors import APIError
from vlmkit.server.jsonutil import dumps
from vlmkit.server.state import ServerState, endpoint


@endpoint
async def usage(request: Request, state: ServerState) -> Response:
    key = key_of(request)
    if not key.admin:
        raise APIError(
            f"GET /v1/usage needs an admin key; the key {key.name!r} is not one "
            "(mark a key `admin: true` under `keys:` in the server's config)",
            403,
            code="admin_key_required",
        )
    store = state.accounts.store
    if store is None:
        raise APIError("this server records no usage: configure `keys:` or `usage: {database: ...}` in its config", 404)
    rows = await anyio.to_thread.run_sync(store.report)
    wanted = request.query_params.get("key")
    data = [r.to_dict() for r in rows if wanted is None or r.key == wanted]
    return Response(dumps({"object": "list", "data": data}), media_type="application/json")


ROUTES = [Route("/v1/usage", usage, methods=["GET"])]
