"""The SDK: ``Client`` (sync), ``AsyncClient``, model handles and the convenience API, over a backend.

``import vlmkit as vk`` exposes the parts users need; this package holds them:
:mod:`~vlmkit.client.backend` (what runs the models), :mod:`~vlmkit.client.sync`,
:mod:`~vlmkit.client.aio`, :mod:`~vlmkit.client.model`, :mod:`~vlmkit.client.stream` and
:mod:`~vlmkit.client.default`.
"""

from vlmkit.client.aio import AsyncClient
from vlmkit.client.backend import Backend, CancelToken, LocalBackend
from vlmkit.client.default import (
    configure_default_client,
    get_default_client,
    list_downloaded_models,
    list_loaded_models,
    llm,
)
from vlmkit.client.model import LLM, AsyncLLM
from vlmkit.client.stream import AsyncPredictionStream, PredictionStream
from vlmkit.client.sync import DEFAULT_TIMEOUT, DEFAULT_TTL, Client

__all__ = [
    "DEFAULT_TIMEOUT",
    "DEFAULT_TTL",
    "LLM",
    "AsyncClient",
    "AsyncLLM",
    "AsyncPredictionStream",
    "Backend",
    "CancelToken",
    "Client",
    "LocalBackend",
    "PredictionStream",
    "configure_default_client",
    "get_default_client",
    "list_downloaded_models",
    "list_loaded_models",
    "llm",
]
