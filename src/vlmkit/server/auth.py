"""API keys: with keys configured, every route but the health check and the playground's static files
(:mod:`vlmkit.server.playground`, which hold nothing of the server's) needs ``Authorization: Bearer <key>``.

A pure ASGI middleware (no per-request task or body buffering), so it costs microseconds. Keys are
compared in constant time. A missing or wrong key is a 401 in OpenAI's error shape.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

from vlmkit.server.errors import error_response

OPEN_PATHS = frozenset({"/health", "/v1/health", "/"})
OPEN_PREFIXES = ("/playground/",)


class APIKeyMiddleware:
    def __init__(self, app: ASGIApp, keys: Iterable[str]) -> None:
        self.app = app
        self.keys = tuple(k.encode() for k in keys)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.keys or _open(scope["path"]):
            await self.app(scope, receive, send)
            return
        problem = self._check(scope)
        if problem is None:
            await self.app(scope, receive, send)
            return
        response = error_response(problem, 401, code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
        await response(scope, receive, send)

    def _check(self, scope: Scope) -> str | None:
        header = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                header = value
                break
        if header is None:
            return "no API key given: send 'Authorization: Bearer <key>'"
        scheme, _, token = header.partition(b" ")
        if scheme.lower() != b"bearer" or not token.strip():
            return "the Authorization header must be 'Bearer <key>'"
        token = token.strip()
        ok = False
        for key in self.keys:  # check them all: the time taken does not tell which key came close
            ok |= hmac.compare_digest(token, key)
        return None if ok else "the API key is not valid for this server"


def _open(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)
