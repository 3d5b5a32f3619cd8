"""``vlmkit serve``: an OpenAI-compatible vision API over local models and, as a gateway, cloud providers.

>>> from vlmkit.server import ServerSettings, serve, load_config
>>> serve(load_config("vlmkit.yaml").with_overrides(port=8000))

:func:`create_app` gives the ASGI application to embed it elsewhere (call :func:`keep_freed_memory`
there too, as :func:`serve` does). The modules: ``app`` (routes, middleware, shutdown),
``routes_chat``/``routes_files``/``routes_models``/``routes_usage`` (the endpoints), ``inputs``
(request checking, images resolved), ``lifted`` (large data URLs taken out of a body before
parsing), ``local`` (the engine), ``gateway`` (deployments, failover), ``fleet`` (routing, health),
``upstream`` (the gateway's connection pool), ``metrics`` (``/metrics``), ``logs`` (JSON lines, no
image bytes), ``files`` (uploaded images), ``auth`` (API keys), ``keys`` (their limits and models),
``usage`` (usage per key in SQLite or PostgreSQL), ``accounts`` (a request's key admitted, its usage
recorded), ``limits`` (how bodies arrive), ``errors`` (OpenAI's error shape), ``sse`` (streaming),
``config`` (settings and the YAML file), ``downloads``, ``memory`` (allocator settings).
"""

from vlmkit.server.app import create_app
from vlmkit.server.config import ConfigError, Deployment, GatewayModel, LocalModel, ServerSettings, load_config
from vlmkit.server.memory import keep_freed_memory
from vlmkit.server.run import serve, uvicorn_config

__all__ = [
    "ConfigError",
    "Deployment",
    "GatewayModel",
    "LocalModel",
    "ServerSettings",
    "create_app",
    "keep_freed_memory",
    "load_config",
    "serve",
    "uvicorn_config",
]
