"""Provider errors → vlmkit's typed errors, carrying the provider's own message.

Every provider reports errors a little differently (OpenAI and Gemini ``{"error": {"message"}}``,
Anthropic ``{"type": "error", "error": {...}}``, Bedrock ``{"message"}`` plus an error-type header,
Ollama ``{"error": "..."}``); this module reads them all.
"""

from __future__ import annotations

import json
import re
from typing import Any

from vlmkit.errors import (
    AuthenticationError,
    ContextWindowExceededError,
    NotFoundError,
    PermissionDeniedError,
    ProviderBadRequestError,
    ProviderError,
    RateLimitError,
    ServerError,
)

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504, 529})
"""Statuses worth another try: timeouts, rate limits, server failures, Anthropic's 529 "overloaded"."""

_CONTEXT_WINDOW = re.compile(
    r"context.{0,10}(length|window)|maximum context|too many tokens|prompt is too long|input is too long"
    r"|too long for the model|exceeds the maximum number of tokens|input length .{0,40}exceed|reduce the length",
    re.IGNORECASE,
)

# Error "types" that providers name in the body (Anthropic error.type, Gemini error.status, Bedrock
# exception names, OpenAI error.code) and the HTTP status they stand for.
_TYPE_STATUS = {
    "authentication_error": 401,
    "invalid_api_key": 401,
    "unauthenticated": 401,
    "unrecognizedclientexception": 401,
    "permission_error": 403,
    "permission_denied": 403,
    "accessdeniedexception": 403,
    "not_found_error": 404,
    "not_found": 404,
    "resourcenotfoundexception": 404,
    "rate_limit_error": 429,
    "rate_limit_exceeded": 429,
    "resource_exhausted": 429,
    "throttlingexception": 429,
    "servicequotaexceededexception": 429,
    "overloaded_error": 529,
    "api_error": 500,
    "internal": 500,
    "internalserverexception": 500,
    "modelerrorexception": 500,
    "serviceunavailableexception": 503,
    "unavailable": 503,
    "modelnotreadyexception": 503,
    "modeltimeoutexception": 504,
    "validationexception": 400,
    "invalid_request_error": 400,
    "invalid_argument": 400,
    "modelstreamerrorexception": 500,
}


def error_message(body: Any, fallback: str = "") -> str:
    """The human message in a provider's error body (decoded JSON or raw text)."""
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            msg = err.get("message") or err.get("msg")
            if isinstance(msg, str) and msg:
                return msg
        if isinstance(err, str) and err:
            return err
        for key in ("message", "Message", "detail"):
            value = body.get(key)
            if isinstance(value, str) and value:
                return value
        return json.dumps(body)[:1000]
    if isinstance(body, str) and body.strip():
        return body.strip()[:1000]
    return fallback


def error_type(body: Any) -> str | None:
    """The provider's name for the error kind, lower-cased, when the body has one."""
    if not isinstance(body, dict):
        return None
    err = body.get("error")
    if isinstance(err, dict):
        for key in ("type", "status", "code"):
            value = err.get(key)
            if isinstance(value, str) and value:
                return value.lower()
    for key in ("__type", "type", "code"):
        value = body.get(key)
        if isinstance(value, str) and value:
            return value.rsplit("#", 1)[-1].lower()
    return None


def decode_body(content: bytes) -> Any:
    try:
        return json.loads(content)
    except (ValueError, UnicodeDecodeError):
        return content.decode("utf-8", "replace")


def provider_error(provider: str, status: int | None, body: Any, *, kind: str | None = None) -> ProviderError:
    """The typed error for a provider's failure (``status`` None: an error reported inside a stream)."""
    kind = kind.lower() if kind else error_type(body)
    if status is None or status == 200:
        status = _TYPE_STATUS.get(kind or "", 500)
    message = error_message(body, fallback=f"HTTP {status} with an empty body")
    text = f"{provider} error {status}: {message}"
    cls: type[ProviderError]
    if status in (400, 413, 422):
        cls = ContextWindowExceededError if _CONTEXT_WINDOW.search(message) else ProviderBadRequestError
    elif status == 401:
        cls = AuthenticationError
    elif status == 403:
        cls = PermissionDeniedError
    elif status == 404:
        cls = NotFoundError
    elif status == 429:
        cls = RateLimitError
    elif status >= 500 or status == 408:
        cls = ServerError
    else:
        cls = ProviderError
    return cls(text, provider=provider, status_code=status, body=body)
