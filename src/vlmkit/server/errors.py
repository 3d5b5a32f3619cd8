"""Errors in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}`` with the right status.

Every :class:`~vlmkit.errors.VlmkitError` carries its ``status_code`` (and ``location``, the
``messages[i].content[j]`` it was found at, which becomes ``param``), so bad input is a 4xx from
whichever layer noticed it. Upstream failures of the gateway become 502/504 (or 429), never the
upstream's 401/404: those describe the server's configuration, not the caller's request.
A client that went away (:class:`ClientGone`) is one line in the log at info level, never a traceback.

The same table answers every protocol the server speaks: each writes an error body in its own shape
(an :data:`ErrorShape`; Anthropic's ``{"type": "error", "error": ...}`` under ``/v1/messages``,
Ollama's ``{"error": "..."}`` under its ``/api/`` routes), chosen by the request's path in
:func:`shape_for`, so the middleware's refusals (a missing key, an oversized body) and an unknown
route are in the shape the client reads too.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

from starlette.responses import Response

from vlmkit.errors import VlmkitError
from vlmkit.server.jsonutil import dumps

log = logging.getLogger("vlmkit.server")

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "timeout_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    499: "cancelled",
    502: "upstream_error",
    503: "service_unavailable",
    504: "timeout_error",
}


class APIError(VlmkitError):
    """An error the server itself answers with (auth, size, schema, unknown model or route)."""

    def __init__(
        self,
        message: str,
        status_code: int,
        *,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.location = param
        self.headers = headers or {}


class ClientGone(APIError):
    """The client closed its connection while still sending its body: nobody is left to answer."""

    def __init__(self, request: str, received: int, declared: int | None) -> None:
        of = f" of {declared:,}" if declared is not None else ""
        super().__init__(
            f"{request}: the client went away while sending its body ({received:,}{of} bytes read)",
            499,
            code="client_closed_request",
        )


def error_body(message: str, status: int, *, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    return {
        "error": {
            "message": message,
            "type": _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error"),
            "param": param,
            "code": code,
        }
    }


ErrorShape = Callable[[str, int, str | None, str | None], dict[str, Any]]
"""How a protocol writes an error body: ``(message, status, code, param) -> body``."""


def openai_error(message: str, status: int, code: str | None, param: str | None) -> dict[str, Any]:
    return error_body(message, status, code=code, param=param)


def error_response(
    message: str,
    status: int,
    *,
    code: str | None = None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
    shape: ErrorShape = openai_error,
) -> Response:
    return Response(
        dumps(shape(message, status, code, param)),
        status_code=status,
        headers=headers,
        media_type="application/json",
    )


def response_for(exc: BaseException, shape: ErrorShape = openai_error) -> Response:
    """The HTTP answer for any exception raised while handling a request, in ``shape``."""
    if isinstance(exc, ClientGone):
        log.info("%s", exc.message)  # an answer is still made, for the ASGI server to drop
    if isinstance(exc, APIError):
        return error_response(
            exc.message, exc.status_code, code=exc.code, param=exc.location, headers=exc.headers, shape=shape
        )
    if isinstance(exc, VlmkitError):
        status, headers = _status_of(exc)
        code = getattr(exc, "code", None) if isinstance(getattr(exc, "code", None), str) else None
        return error_response(
            str(exc), status, code=code or _code_of(exc), param=exc.location, headers=headers, shape=shape
        )
    log.exception("unexpected error while serving a request", exc_info=exc)
    return error_response(f"internal server error ({type(exc).__name__}); see the server's log", 500, shape=shape)


def body_of(exc: BaseException, shape: ErrorShape = openai_error) -> dict[str, Any]:
    """The error body for an exception that happens after a stream has started (sent as an SSE event)."""
    if isinstance(exc, VlmkitError):
        status, _ = _status_of(exc)
        return shape(str(exc), status, _code_of(exc), exc.location)
    log.exception("unexpected error while streaming", exc_info=exc)
    return shape(f"internal server error ({type(exc).__name__}); see the server's log", 500, None, None)


def retry_after_header(seconds: float) -> dict[str, str]:
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


def _status_of(exc: VlmkitError) -> tuple[int, dict[str, str]]:
    status = int(getattr(exc, "status_code", 500) or 500)
    headers: dict[str, str] = {}
    retry_after = getattr(exc, "retry_after", None)
    if status == 429:
        headers = retry_after_header(float(retry_after) if isinstance(retry_after, (int, float)) else 1.0)
    if getattr(exc, "provider", None) is not None and (status in (401, 403, 404) or (status >= 500 and status != 504)):
        status = 502  # the upstream failed, or refused the server's own key or model: not the caller's to fix
    return status, headers


def _code_of(exc: VlmkitError) -> str | None:
    name = type(exc).__name__
    return {
        "ModelNotFoundError": "model_not_found",
        "QueueFullError": "queue_full",
        "ContextLengthError": "context_length_exceeded",
        "ContextWindowExceededError": "context_length_exceeded",
        "ModelCapabilityError": "model_not_vision_capable",
        "UnknownFileError": "file_not_found",
    }.get(name)


def shape_for(path: str) -> ErrorShape:
    """The error shape of the protocol served at ``path``: Anthropic's under ``/v1/messages``, Ollama's
    under ``/api/`` (but vlmkit's own ``/api/v1/``), OpenAI's everywhere else."""
    from vlmkit.wire import anthropic_messages, ollama_api

    if path == "/v1/messages" or path.startswith("/v1/messages/"):
        return anthropic_messages.error_body
    if path.startswith("/api/") and not path.startswith("/api/v1/"):
        return ollama_api.error_body
    return openai_error
