"""Errors in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}`` with the right status.

Every :class:`~vlmkit.errors.VlmkitError` carries its ``status_code`` (and ``location``, the
``messages[i].content[j]`` it was found at, which becomes ``param``), so bad input is a 4xx from
whichever layer noticed it. Upstream failures of the gateway become 502/504 (or 429), never the
upstream's 401/404: those describe the server's configuration, not the caller's request.
A client that went away (:class:`ClientGone`) is one line in the log at info level, never a traceback.
"""

from __future__ import annotations

import logging
import math
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


def error_response(
    message: str,
    status: int,
    *,
    code: str | None = None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    return Response(
        dumps(error_body(message, status, code=code, param=param)),
        status_code=status,
        headers=headers,
        media_type="application/json",
    )


def response_for(exc: BaseException) -> Response:
    """The HTTP answer for any exception raised while handling a request."""
    if isinstance(exc, ClientGone):
        log.info("%s", exc.message)  # an answer is still made, for the ASGI server to drop
    if isinstance(exc, APIError):
        return error_response(exc.message, exc.status_code, code=exc.code, param=exc.location, headers=exc.headers)
    if isinstance(exc, VlmkitError):
        status, headers = _status_of(exc)
        code = getattr(exc, "code", None) if isinstance(getattr(exc, "code", None), str) else None
        return error_response(str(exc), status, code=code or _code_of(exc), param=exc.location, headers=headers)
    log.exception("unexpected error while serving a request", exc_info=exc)
    return error_response(f"internal server error ({type(exc).__name__}); see the server's log", 500)


def body_of(exc: BaseException) -> dict[str, Any]:
    """The error body for an exception that happens after a stream has started (sent as an SSE event)."""
    if isinstance(exc, VlmkitError):
        status, _ = _status_of(exc)
        return error_body(str(exc), status, code=_code_of(exc), param=exc.location)
    log.exception("unexpected error while streaming", exc_info=exc)
    return error_body(f"internal server error ({type(exc).__name__}); see the server's log", 500)


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
