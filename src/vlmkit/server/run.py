"""Running the server with uvicorn: ``vlmkit serve`` and :func:`serve`."""

from __future__ import annotations

import ipaddress
import logging
from typing import Any

from vlmkit.server import lmstudio_ws
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
        "ws_max_size": lmstudio_ws.ws_max_size(settings),
    }
    options.update(overrides)
    return uvicorn.Config(create_app(settings), **options)


def serve(settings: ServerSettings | None = None, *, log_level: str = "info", log_format: str = "text") -> None:
    """Serve until interrupted (Ctrl-C or SIGTERM: in-flight work is finished or cancelled, models unloaded).

    ``log_format="json"``: every log line, uvicorn's too, is one JSON object (:mod:`vlmkit.server.logs`).
    """
    import uvicorn

    from vlmkit.server import logs

    settings = settings or ServerSettings()
    overrides: dict[str, Any] = {}
    if log_format == "json":
        logs.configure(log_level, "json")
        overrides["log_config"] = None
    else:
        logs.configure_text(log_level)
    if not settings.key_policies() and not _is_loopback(settings.host):
        log.warning("serving on %s without API keys: anyone who can reach it can use it", settings.host)
    discovery = lmstudio_ws.discovery_socket(settings.host) if settings.lmstudio_discovery else None
    keep_freed_memory()
    config = uvicorn_config(settings, log_level=log_level, **overrides)
    if discovery is None:
        uvicorn.Server(config).run()
        return
    host, port = discovery.getsockname()[:2]
    # uvicorn's logger: beside its own "running on" line, in the logging its config set up
    uvicorn_log = logging.getLogger("uvicorn.error")
    uvicorn_log.info("LM Studio's SDKs find this server with no host: also listening on %s:%d", host, port)
    uvicorn.Server(config).run(sockets=[config.bind_socket(), discovery])


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
