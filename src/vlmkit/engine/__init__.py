"""The embedded engine: vision-language models in-process on llama.cpp (through llama-cpp-python).

Public surface: :class:`Engine` (load, respond, stream, cancel, unload), :class:`LoadOptions`,
:class:`CancelToken` and :class:`PredictionStream` (:mod:`vlmkit.stream`'s, shared with the SDK),
the model-store functions :func:`get`, :func:`list_downloaded`, :func:`remove`, and
:mod:`~vlmkit.engine.owner`, the one engine of this process that the SDK, ``completion("local/...")``
and the server share. Importing this package does not load llama.cpp; the first model load does.
"""

from vlmkit.engine.catalog import CatalogEntry, catalog, lookup
from vlmkit.engine.engine import Engine
from vlmkit.engine.model import LoadOptions
from vlmkit.engine.store import ModelListing, list_downloaded, remove
from vlmkit.stream import CancelToken, PredictionStream

__all__ = [
    "CancelToken",
    "CatalogEntry",
    "Engine",
    "LoadOptions",
    "ModelListing",
    "PredictionStream",
    "catalog",
    "get",
    "list_downloaded",
    "lookup",
    "remove",
]


def __getattr__(name: str) -> object:
    if name == "get":
        from vlmkit.engine.download import get

        return get
    raise AttributeError(name)
