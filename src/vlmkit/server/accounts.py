"""A request's account: its key admitted (allowed model, within its limits), then its usage recorded.

The chat route asks :meth:`Accounts.admit` before any image is read, and tells the returned
:class:`Meter` what the request cost once its answer has ended; the meter counts the tokens against
the key's ``tpm`` (:mod:`vlmkit.server.keys`) and adds a row to the usage database
(:mod:`vlmkit.server.usage`), when the server keeps one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vlmkit.server.config import ServerSettings
from vlmkit.server.fleet import RequestCost
from vlmkit.server.keys import KeyPolicy, Limiter
from vlmkit.server.usage import Usage, UsageStore


def usage_url(settings: ServerSettings) -> str | None:
    """The usage database of ``settings``: the configured one, else a SQLite file when keys are named."""
    if settings.usage_database is not None:
        return settings.usage_database
    if settings.keys:
        from vlmkit.engine.store import vlmkit_home

        return str(vlmkit_home() / "usage.db")
    return None


class Accounts:
    def __init__(self, settings: ServerSettings) -> None:
        self.limiter = Limiter()
        url = usage_url(settings)
        self.store = UsageStore(url) if url is not None else None

    def admit(self, key: KeyPolicy, model: str) -> Meter:
        self.limiter.admit(key, model)
        return Meter(self, key, model)

    def close(self) -> None:
        if self.store is not None:
            self.store.close()


@dataclass
class Meter:
    accounts: Accounts
    key: KeyPolicy
    model: str
    images: int = 0
    image_bytes: int = 0
    recorded: bool = field(default=False, repr=False)

    def saw(self, cost: RequestCost) -> None:
        """The request's images, once read (from the request's one estimate)."""
        self.images = cost.image_count
        self.image_bytes = cost.image_bytes

    def done(self, prompt_tokens: int, completion_tokens: int) -> None:
        """The answer has ended: count its tokens and record its usage (once)."""
        if self.recorded:
            return
        self.recorded = True
        self.accounts.limiter.spent(self.key, prompt_tokens + completion_tokens)
        store = self.accounts.store
        if store is not None:
            store.record(
                Usage(self.key.name, self.model, 1, prompt_tokens, completion_tokens, self.images, self.image_bytes)
            )
