"""Which backend a client gets: ``make_backend(host)``, the one place that chooses among the backends."""

from __future__ import annotations

from pathlib import Path

from vlmkit.client.backend import Backend
from vlmkit.client.backends.local import LocalBackend
from vlmkit.client.backends.remote import RemoteBackend
from vlmkit.client.backends.router import Router
from vlmkit.errors import ClientError


def make_backend(host: str | None, *, models_dir: str | Path | None = None, api_key: str | None = None) -> Backend:
    """The backend for ``Client(host)``: with no host the engine and the providers, else that vlmkit server.

    ``api_key`` is the vlmkit server's key (``None``: ``VLMKIT_API_KEY``).
    """
    if host is None:
        if api_key is not None:
            raise ClientError(
                "api_key= is the key of a vlmkit server: pass it with the server's address, "
                "vk.Client('http://HOST:PORT', api_key=...). The in-process engine needs no key, and "
                "providers read theirs from their own variables (OPENAI_API_KEY, ANTHROPIC_API_KEY, ...)"
            )
        return Router(LocalBackend(models_dir=models_dir))
    return RemoteBackend(host, api_key=api_key)
