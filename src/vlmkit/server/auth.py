"""API keys: with keys configured, every route but the health check and the playground's static files
(:mod:`vlmkit.server.playground`, which hold nothing of the server's) needs ``Authorization: Bearer <key>``
(or Anthropic's ``x-api-key: <key>``, which Anthropic's clients send).

A pure ASGI middleware (no per-request task or body buffering), so it costs microseconds. Keys are
compared in constant time. A missing or wrong key is a 401 in OpenAI's error shape. The key found
(a :class:`~vlmkit.server.keys.KeyPolicy`: its name, limits and models) goes to the routes in the
request's state (``request.state.vlmkit_key``); without keys every caller is ``anonymous``.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from vlmkit.server.errors import error_response, shape_for
from vlmkit.server.keys import ANONYMOUS, KeyPolicy

OPEN_PATHS = frozenset({"/health", "/v1/health", "/lmstudio-greeting", "/"})
OPEN_PREFIXES = ("/playground/",)
STATE_KEY = "vlmkit_key"


class APIKeyMiddleware:
    def __init__(self, app: ASGIApp, keys: Iterable[KeyPolicy]) -> None:
        self.app = app
        self.keys = tuple((k.secret.encode(), k) for k in keys)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.keys or _open(scope["path"]):
            scope.setdefault("state", {})[STATE_KEY] = ANONYMOUS
            await self.app(scope, receive, send)
            return
        found = self._check(scope)
        if isinstance(found, KeyPolicy):
            scope.setdefault("state", {})[STATE_KEY] = found
            await self.app(scope, receive, send)
            return
        response = error_response(
            found,
            401,
            code="invalid_api_key",
            headers={"WWW-Authenticate": "Bearer"},
            shape=shape_for(scope["path"]),
        )
        await response(scope, receive, send)

    def _check(self, scope: Scope) -> KeyPolicy | str:
        header = api_key = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                header = value
            elif name == b"x-api-key":
                api_key = value
        if header is None and api_key is None:
            return "no API key given: send 'Authorization: Bearer <key>' (or 'x-api-key: <key>')"
        if header is not None:
            scheme, _, token = header.partition(b" ")
            if scheme.lower() != b"bearer" or not token.strip():
                return "the Authorization header must be 'Bearer <key>'"
        else:
            token = api_key or b""
        token = token.strip()
        found: KeyPolicy | None = None
        for secret, policy in self.keys:  # check them all: the time taken does not tell which key came close
            if hmac.compare_digest(token, secret):
                found = policy
        return found if found is not None else "the API key is not valid for this server"


def key_of(request: Request) -> KeyPolicy:
    """The key the request came with (``anonymous`` on a server without keys)."""
    policy = request.scope.get("state", {}).get(STATE_KEY, ANONYMOUS)
    assert isinstance(policy, KeyPolicy)
    return policy


def _open(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)
