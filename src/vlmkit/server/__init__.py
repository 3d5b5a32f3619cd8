"""``vlmkit serve``: an OpenAI-compatible vision API over local models and, as a gateway, cloud providers.

>>> from vlmkit.server import ServerSettings, serve, load_config
>>> serve(load_config("vlmkit.yaml").with_overrides(port=8000))

:func:`create_app` gives the ASGI application to embed it elsewhere. The modules: ``app`` (routes,
middleware, shutdown), ``routes_chat``/``routes_files``/``routes_models`` (the endpoints), ``inputs``
(request checking, images resolved), ``local`` (the engine), ``gateway`` (deployments, failover),
``files`` (uploaded images), ``auth`` (API keys), ``limits`` (body size), ``errors`` (OpenAI's error
shape), ``sse`` (streaming), ``config`` (settings and the YAML file), ``downloads``.
"""

from vlmkit.server.app import create_app
from vlmkit.server.config import ConfigError, Deployment, GatewayModel, LocalModel, ServerSettings, load_config
from vlmkit.server.run import serve, uvicorn_config

__all__ = [
    "ConfigError",
    "Deployment",
    "GatewayModel",
    "LocalModel",
    "ServerSettings",
    "create_app",
    "load_config",
    "serve",
    "uvicorn_config",
]
