"""The SDK: ``Client`` (sync), ``AsyncClient``, model handles and the convenience API, over a backend.

``import vlmkit as vk`` exposes the parts users need; this package holds them, from the bottom up:
:mod:`~vlmkit.client.backend` (the seam: what runs the models), :mod:`~vlmkit.client.backends`
(one file per backend, and the factory), :mod:`~vlmkit.client.common` (what the sync and async
surfaces share), :mod:`~vlmkit.client.sync` (``Client``, ``LLM``), :mod:`~vlmkit.client.aio`
(``AsyncClient``, ``AsyncLLM``), :mod:`~vlmkit.client.default` (``vk.llm`` and the default client)
and :mod:`~vlmkit.client.terminal` (the command line's chat). The prediction streams are
:mod:`vlmkit.stream`'s, shared with the engine and the server. Everything public is listed in
``__all__`` below; the modules may move.
"""

from vlmkit.client.act import ActResult, FunctionTool
from vlmkit.client.aio import AsyncClient, AsyncLLM
from vlmkit.client.backend import Backend, CancelToken, FragmentCallback
from vlmkit.client.backends import LocalBackend, ProviderBackend, RemoteBackend
from vlmkit.client.common import DEFAULT_TIMEOUT, DEFAULT_TTL, ModelKey
from vlmkit.client.default import (
    configure_default_client,
    get_default_client,
    list_downloaded_models,
    list_loaded_models,
    llm,
)
from vlmkit.client.sync import LLM, Client
from vlmkit.stream import AsyncPredictionStream, PredictionStream

__all__ = [
    "DEFAULT_TIMEOUT",
    "DEFAULT_TTL",
    "LLM",
    "ActResult",
    "AsyncClient",
    "AsyncLLM",
    "AsyncPredictionStream",
    "Backend",
    "CancelToken",
    "Client",
    "FragmentCallback",
    "FunctionTool",
    "LocalBackend",
    "ModelKey",
    "PredictionStream",
    "ProviderBackend",
    "RemoteBackend",
    "configure_default_client",
    "get_default_client",
    "list_downloaded_models",
    "list_loaded_models",
    "llm",
]
