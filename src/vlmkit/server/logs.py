"""The server's log lines: one JSON object a line (``vlmkit serve --log-format json``), never an image's bytes.

Each gateway request is one line of :data:`REQUESTS_LOGGER`. An image is logged as what identifies
and sizes it (:func:`image_fields`: its content identity, type, pixel size and bytes). Whatever else
reaches the log (an upstream's error message quoting the request, an exception's text) passes
:func:`redact` first, which replaces data URLs and long base64 runs with their length, so a log
line never carries a picture, in either format.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any

from vlmkit.images import ImageHandle

REQUESTS_LOGGER = "vlmkit.server.requests"
"""One line per gateway request, at info level: on in the JSON format, and in the text format only at
``--log-level debug`` (like an access log, it costs each request; and it names each image by its
content identity, which hashes the image)."""

_DATA_URL = re.compile(r"data:([\w.+/-]*);base64,[A-Za-z0-9+/=\\n]{16,}")
_BASE64_RUN = re.compile(r"[A-Za-z0-9+/]{200,}={0,2}")


def redact(text: str) -> str:
    """``text`` with every data URL and long base64 run replaced by a note of its size."""
    text = _DATA_URL.sub(lambda m: f"data:{m.group(1)};base64,<{len(m.group(0))} chars left out>", text)
    return _BASE64_RUN.sub(lambda m: f"<base64, {len(m.group(0))} chars left out>", text)


def image_fields(image: ImageHandle) -> dict[str, Any]:
    """An image as the log shows it: identity, type, size and bytes; never its content."""
    size = f"{image.width}x{image.height}" if image.width is not None and image.height is not None else None
    return {
        "id": image.identifier[:16],
        "type": image.mime_type,
        "size": size,
        "bytes": image.size_bytes,
    }


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, and the record's ``fields`` (``extra=``)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update(fields)
        if record.exc_info:
            line["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(line, default=str, ensure_ascii=False)


class RedactingFormatter(logging.Formatter):
    """The plain text format, with the same redaction as the JSON one."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def configure(level: str, fmt: str) -> None:
    """Send every logger (uvicorn's too) to stderr in ``fmt`` (``"json"`` or ``"text"``) at ``level``."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(RedactingFormatter("%(levelname)s:     %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    logging.getLogger(REQUESTS_LOGGER).setLevel(level.upper())


def configure_text(level: str) -> None:
    """vlmkit's own loggers in plain text on stderr at ``level`` (uvicorn keeps its own format)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter("%(levelname)s:     %(name)s: %(message)s"))
    logger = logging.getLogger("vlmkit")
    for old in list(logger.handlers):
        logger.removeHandler(old)
    logger.addHandler(handler)
    logger.setLevel(level.upper())
    logger.propagate = False
    logging.getLogger(REQUESTS_LOGGER).setLevel("DEBUG" if level.lower() == "debug" else "WARNING")
