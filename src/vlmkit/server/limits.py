"""The request body size limit (413), enforced while the body arrives, for JSON and uploads alike.

A ``Content-Length`` over the limit is refused before a byte is read; a chunked body is counted as
it streams in and refused the moment it passes the limit, so a client can never make the server
buffer more than ``max_body_bytes``.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vlmkit.server.errors import APIError, error_response


def too_large(limit: int) -> APIError:
    return APIError(
        f"the request body is larger than this server's limit of {limit:,} bytes; "
        "upload large images once through /v1/files and refer to them by id",
        413,
        code="request_too_large",
    )


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.limit = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > self.limit:
                    exc = too_large(self.limit)
                    await error_response(exc.message, 413, code=exc.code)(scope, receive, send)
                    return
                break
        limit = self.limit
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise too_large(limit)
            return message

        await self.app(scope, limited_receive, send)
