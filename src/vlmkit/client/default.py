"""The convenience API: ``vk.llm(...)`` and friends, over a default client made on first use.

>>> model = vk.llm("qwen2-vl-2b-instruct")
>>> model.respond(chat)

``vk.configure_default_client(...)`` sets that client up, and must come before the first use.
``vk.prepare_image`` is the image layer's own function: it needs no client (a backend that must
upload images, such as a remote server, does so when a chat first reaches it).
"""

from __future__ import annotations

import atexit
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlmkit.client.common import DEFAULT_TIMEOUT, DEFAULT_TTL, ModelKey
from vlmkit.client.sync import LLM, Client
from vlmkit.errors import DefaultClientAlreadyCreatedError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from vlmkit.engine import LoadOptions, ModelListing
    from vlmkit.images.fetch import FetchOptions

_lock = threading.Lock()
_client: Client | None = None
_settings: dict[str, Any] = {}


def configure_default_client(
    host: str | None = None,
    *,
    api_key: str | None = None,
    models_dir: str | Path | None = None,
    timeout: float | None = DEFAULT_TIMEOUT,
    fetch: FetchOptions | None = None,
) -> None:
    """Set up the client that ``vk.llm`` and friends use. Only before their first call.

    The arguments are :class:`~vlmkit.client.sync.Client`'s: ``host`` and ``api_key`` for a vlmkit
    server, ``fetch`` for the images that OpenAI-style messages name by URL.
    """
    global _settings
    with _lock:
        if _client is not None:
            raise DefaultClientAlreadyCreatedError(
                "the default client is already in use (an earlier vk.llm() or vk.list_downloaded_models() "
                "created it), so it can no longer be configured; call "
                "vk.configure_default_client(...) first thing, or create your own vk.Client(...)"
            )
        _settings = {"host": host, "api_key": api_key, "models_dir": models_dir, "timeout": timeout, "fetch": fetch}


def get_default_client() -> Client:
    """The default client, created on first use (with the settings of ``configure_default_client``)."""
    global _client
    with _lock:
        if _client is None:
            _client = Client(**_settings)
        return _client


def llm(
    key: ModelKey | None = None,
    *,
    ttl: float | None = DEFAULT_TTL,
    config: LoadOptions | Mapping[str, Any] | None = None,
) -> LLM:
    """A handle to a model, loaded on demand. See ``Client.llm.model``."""
    return get_default_client().llm.model(key, ttl=ttl, config=config)


def list_downloaded_models() -> list[ModelListing]:
    return get_default_client().list_downloaded_models()


def list_loaded_models() -> list[LLM]:
    return get_default_client().llm.list_loaded()


def _reset_default_client() -> None:
    """Close and forget the default client and its settings (for tests and interpreter exit)."""
    global _client, _settings
    with _lock:
        client, _client, _settings = _client, None, {}
    if client is not None:
        client.close()


atexit.register(_reset_default_client)
