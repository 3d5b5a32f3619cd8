"""The deployments of one gateway name as a fleet: where a request goes, and which replicas are up.

Three routing modes (``routing:`` per model in the config):

- ``least_work``: the replica with the fewest estimated prompt tokens in flight, images counted at
  their token cost, so one request with four photos weighs what it costs and not "one request".
- ``affinity``: rendezvous hashing on the first image's content identity (or on the session header
  when the caller sends one), so the follow-up turn of a chat, and a new chat about the same picture,
  reach the replica whose caches (encoder, prefix, embeddings) already hold it. A preferred replica
  that is saturated (``max_outstanding_tokens``) or down is passed over for the least-loaded one.
  Rendezvous hashing moves only the keys of a replica that leaves, and only back to it when it returns.
- ``round_robin``: in turn, ignoring load and images.

Health: a replica that fails for a reason of its own (unreachable, 5xx, rate limited, refusing the
gateway's key) is ejected for ``cooldown`` seconds; after that it is tried again, and one success
readmits it. With ``health_check`` set, each replica with an address is also asked ``GET /health``
every few seconds: a failed check ejects it, a passed one (once its cool-down is over) readmits it.
Ejected replicas are still tried last, so a request fails only when every replica did.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from vlmkit.chat import Chat, ImagePart, ImageRef, TextPart
from vlmkit.errors import VlmkitError
from vlmkit.server.config import Deployment, GatewayModel

log = logging.getLogger("vlmkit.server")

UNKNOWN_IMAGE_TOKENS = 765
"""What an image whose size is not known yet (a URL the upstream fetches) is assumed to cost:
OpenAI's estimate for a 1024 x 1024 picture."""

CHARS_PER_TOKEN = 4


SESSION_HEADER = "x-session-id"
"""A request header naming a conversation: under ``affinity`` it sticks to one replica, images or not."""


def request_cost(chat: Chat, *, images_only: bool = False) -> int:
    """Estimated prompt tokens of ``chat``: its text at four characters a token, its images at their
    cost (``images_only``: the images alone)."""
    from vlmkit.images.tokens import estimate_image_tokens

    tokens = 0
    for m in chat.messages:
        for p in m.content:
            if isinstance(p, TextPart):
                tokens += 0 if images_only else len(p.text) // CHARS_PER_TOKEN + 1
            elif isinstance(p, ImagePart) and p.image.width is not None and p.image.height is not None:
                tokens += estimate_image_tokens(p.image, "openai", p.detail or "auto")
            else:
                tokens += UNKNOWN_IMAGE_TOKENS
    return tokens


def affinity_key(chat: Chat, session: str | None) -> str | None:
    """What a request sticks to: its session when named, else its first image's identity (an
    unfetched URL stands for itself), else nothing (a text-only chat goes to the least loaded)."""
    if session:
        return f"session:{session}"
    for m in chat.messages:
        for p in m.content:
            if isinstance(p, ImagePart):
                return f"image:{p.image.identifier}"
            if isinstance(p, ImageRef):
                return f"url:{p.url}"
    return None


@dataclass
class Replica:
    """One deployment of a gateway name, and what the gateway knows of it now."""

    deployment: Deployment
    inflight: int = 0
    outstanding_tokens: int = 0
    served: int = 0
    failures: int = 0
    ejections: int = 0
    ejected_until: float = 0.0
    ejected: bool = False

    @property
    def label(self) -> str:
        return self.deployment.label

    def available(self, now: float) -> bool:
        """Not ejected, or ejected with its cool-down over (then the next request tries it)."""
        return not self.ejected or self.ejected_until <= now

    def weight(self, key: str) -> bytes:
        return hashlib.sha256(f"{key}\0{self.label}".encode()).digest()


@dataclass(frozen=True)
class Outcome:
    """What became of one replica's state change, for the metrics to count."""

    replica: Replica
    ejected: bool = False
    readmitted: bool = False


class Fleet:
    """The replicas of one gateway name, the routing choice, and their health."""

    def __init__(
        self,
        model: GatewayModel,
        *,
        cooldown: float,
        on_change: Callable[[str, Outcome], None] | None = None,
    ) -> None:
        self.model = model
        self.cooldown = cooldown
        self.replicas = [Replica(d) for d in model.deployments]
        self._turn = itertools.count()
        self._on_change = on_change
        self._checker: asyncio.Task[None] | None = None

    # --- choosing -------------------------------------------------------------------------------

    def order(self, cost: int, key: str | None) -> list[Replica]:
        """The replicas in the order to try them: the chosen one first, the unavailable ones last."""
        now = time.monotonic()
        replicas = self.replicas
        if len(replicas) == 1:
            return list(replicas)
        start = next(self._turn) % len(replicas)
        rotated = replicas[start:] + replicas[:start]
        up = [r for r in rotated if r.available(now)]
        down = [r for r in rotated if not r.available(now)]
        mode = self.model.routing
        if mode == "round_robin":
            return up + down
        by_load = sorted(up, key=lambda r: (r.outstanding_tokens, r.inflight))
        if mode == "affinity" and key is not None and up:
            preferred = max(up, key=lambda r: r.weight(key))
            if not self._saturated(preferred, cost):
                by_load.remove(preferred)
                return [preferred, *by_load, *down]
        return by_load + down

    def _saturated(self, replica: Replica, cost: int) -> bool:
        limit = self.model.max_outstanding_tokens
        return limit is not None and replica.inflight > 0 and replica.outstanding_tokens + cost > limit

    # --- accounting ----------------------------------------------------------------------------

    def begin(self, replica: Replica, cost: int) -> None:
        replica.inflight += 1
        replica.outstanding_tokens += cost

    def end(self, replica: Replica, cost: int) -> None:
        replica.inflight -= 1
        replica.outstanding_tokens -= cost

    def succeeded(self, replica: Replica) -> None:
        replica.served += 1
        if replica.ejected:
            self._readmit(replica, "answered a request")

    def failed(self, replica: Replica, reason: str) -> None:
        replica.failures += 1
        self._eject(replica, reason)

    def _eject(self, replica: Replica, reason: str) -> None:
        replica.ejected_until = time.monotonic() + self.cooldown
        if replica.ejected:
            return
        replica.ejected = True
        replica.ejections += 1
        log.warning("gateway %s: ejected %s for %gs: %s", self.model.name, replica.label, self.cooldown, reason)
        self._changed(Outcome(replica, ejected=True))

    def _readmit(self, replica: Replica, why: str) -> None:
        replica.ejected = False
        replica.ejected_until = 0.0
        log.info("gateway %s: readmitted %s: %s", self.model.name, replica.label, why)
        self._changed(Outcome(replica, readmitted=True))

    def _changed(self, outcome: Outcome) -> None:
        if self._on_change is not None:
            self._on_change(self.model.name, outcome)

    # --- active health checks ------------------------------------------------------------------

    def health_url(self, replica: Replica) -> str | None:
        base = replica.deployment.api_base
        if base is None or self.model.health_interval is None:
            return None
        parts = urlsplit(base)
        return f"{parts.scheme}://{parts.netloc}{self.model.health_path}"

    async def check_once(self, client: httpx.AsyncClient) -> None:
        """Ask every replica with an address for its health once, ejecting or readmitting on the answer."""

        async def check(replica: Replica) -> None:
            url = self.health_url(replica)
            if url is None:
                return
            try:
                response = await client.get(url)
                ok, reason = response.is_success, f"GET {url} answered {response.status_code}"
            except httpx.HTTPError as exc:
                ok, reason = False, f"GET {url} failed: {type(exc).__name__}: {exc}"
            if not ok:
                self._eject(replica, f"health check: {reason}")
            elif replica.ejected and replica.ejected_until <= time.monotonic():
                self._readmit(replica, "its health check passed")

        await asyncio.gather(*(check(r) for r in self.replicas))

    def start(self) -> None:
        """Run the health checks in the background of the running loop (once; no-op without checks)."""
        interval = self.model.health_interval
        if interval is None or self._checker is not None:
            return
        if all(self.health_url(r) is None for r in self.replicas):
            return
        self._checker = asyncio.get_running_loop().create_task(self._check_forever(interval))

    async def _check_forever(self, interval: float) -> None:
        timeout = httpx.Timeout(min(interval, 5.0))
        async with httpx.AsyncClient(timeout=timeout, follow_redirects=False) as client:
            while True:
                try:
                    await self.check_once(client)
                except VlmkitError:  # pragma: no cover - a check never raises ours; keep checking regardless
                    log.exception("gateway %s: a health check failed", self.model.name)
                await asyncio.sleep(interval)

    async def stop(self) -> None:
        task, self._checker = self._checker, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
