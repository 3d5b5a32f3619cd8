"""The backends, one file each, behind the :class:`~vlmkit.client.backend.Backend` seam.

``local`` (the embedded engine), ``providers`` (cloud and OpenAI-compatible APIs through
:func:`vlmkit.providers.completion`), ``remote`` (a ``vlmkit serve`` over HTTP), ``router`` (provider
keys to the providers, the rest to a main backend), and ``factory`` (which of them ``Client(host)`` gets).
"""

from vlmkit.client.backends.factory import make_backend
from vlmkit.client.backends.local import LocalBackend
from vlmkit.client.backends.providers import ProviderBackend
from vlmkit.client.backends.remote import RemoteBackend
from vlmkit.client.backends.router import Router

__all__ = ["LocalBackend", "ProviderBackend", "RemoteBackend", "Router", "make_backend"]
