"""Running the server with uvicorn: ``vlmkit serve`` and :func:`serve`."""

from __future__ import annotations

import ipaddress
import logging
from typing import Any

from vlmkit.server.app import create_app
from vlmkit.server.config import ServerSettings
from vlmkit.server.memory import keep_freed_memory

log = logging.getLogger("vlmkit.server")


def uvicorn_config(settings: ServerSettings, *, log_level: str = "info", **overrides: Any) -> Any:
    """A ``uvicorn.Config`` for ``settings``: graceful shutdown waits ``shutdown_grace`` seconds."""
    import uvicorn

    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_level": log_level,
        "access_log": False,
        "lifespan": "on",
        "timeout_graceful_shutdown": settings.shutdown_grace,
        "server_header": False,
    }
    options.update(overrides)
    return uvicorn.Config(create_app(settings), **options)


def serve(settings: ServerSettings | None = None, *, log_level: str = "info") -> None:
    """Serve until interrupted (Ctrl-C or SIGTERM: in-flight work is finished or cancelled, models unloaded)."""
    import uvicorn

    settings = settings or ServerSettings()
    if not settings.api_keys and not _is_loopback(settings.host):
        log.warning("serving on %s without API keys: anyone who can reach it can use it", settings.host)
    keep_freed_memory()
    config = uvicorn_config(settings, log_level=log_level)  # configures logging: uvicorn's loggers
    _log_to_stderr(log_level)
    uvicorn.Server(config).run()


def _log_to_stderr(level: str) -> None:
    """Show vlmkit's own log lines (a client gone, a generation stopped) beside uvicorn's, at its level."""
    logger = logging.getLogger("vlmkit")
    if logger.handlers:  # an embedder's own logging: leave it
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s:     %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(level.upper())


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
