"""``local/KEY``: the embedded llama.cpp engine, through the same call as the cloud providers.

The engine lives in :mod:`vlmkit.engine` and is imported only when a ``local/`` model is used, so the
providers layer works (and imports fast) without it.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from vlmkit.errors import NotFoundError
from vlmkit.providers.base import ProviderConfig
from vlmkit.providers.request import CompletionRequest


def _engine() -> ModuleType:
    try:
        engine = importlib.import_module("vlmkit.engine")
    except ImportError as exc:
        raise NotFoundError(
            f"local models need vlmkit's embedded engine, which cannot be imported here ({exc})", provider="local"
        ) from None
    if not hasattr(engine, "chat_completion"):
        raise NotFoundError(
            "this build of vlmkit.engine has no chat_completion() entry point for local/ models yet",
            provider="local",
        )
    return engine


def completion(req: CompletionRequest, cfg: ProviderConfig) -> Any:
    return _engine().chat_completion(req, cfg)


async def acompletion(req: CompletionRequest, cfg: ProviderConfig) -> Any:
    return await _engine().achat_completion(req, cfg)
