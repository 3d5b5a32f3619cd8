"""Which backend a client gets: ``make_backend(host)``, the one place that chooses among the backends."""

from __future__ import annotations

from pathlib import Path

from vlmkit.client.backend import Backend
from vlmkit.client.backends.local import LocalBackend
from vlmkit.client.backends.remote import RemoteBackend
from vlmkit.client.backends.router import Router


def make_backend(host: str | None, *, models_dir: str | Path | None = None) -> Backend:
    """The backend for ``Client(host)``: with no host the engine and the providers, else that vlmkit server."""
    if host is None:
        return Router(LocalBackend(models_dir=models_dir))
    return RemoteBackend(host)
