"""The deployments of one gateway name as a fleet: where a request goes, and which replicas are up.

Three routing modes (``routing:`` per model in the config):

- ``least_work``: the replica with the fewest estimated prompt tokens in flight, images counted at
  their token cost, so one request with four photos weighs what it costs and not "one request".
- ``affinity``: cache-aware. A request whose key (the first image's content identity, or the session
  header when the caller sends one) was sent before goes to the replica that holds it, so the
  follow-up turn of a chat, and a new chat about the same picture, reach the replica whose caches
  (encoder, prefix, embeddings) already hold it. A *cold* key, one no replica holds yet, is placed on
  the least-loaded replica (ties broken by rendezvous hashing on the key, so an idle fleet places a
  key where every gateway node would): an image encode is the expensive part of a request, and
  queueing it behind another on a busy replica delays that replica's warm follow-ups too. The holder
  is passed over for the least-loaded replica when it is down, saturated (``max_outstanding_tokens``)
  or overloaded beyond a bound: consistent hashing with bounded loads, a replica taking at most
  ``load_bound`` times the fleet's mean in-flight requests (rounded up) before its keys spill. A key
  that spills, or whose holder is ejected, is held by where it went next; an ejected replica's keys
  are forgotten (a replica that went away has lost its caches), so it takes cold keys when it returns.
  The gateway knows what it placed itself: each gateway node keeps its own placements (the last
  ``PLACEMENTS`` keys), and nodes agree where the fleet is idle.
- ``round_robin``: in turn, ignoring load and images.

What a request weighs on a replica is its text at four characters a token and its images at their
token cost, except on a replica holding its key, where its images are taken to be cached already.

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
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
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


PLACEMENTS = 100_000
"""How many affinity keys a fleet remembers the holders of (the least recently used are forgotten)."""


@dataclass(frozen=True)
class RequestCost:
    """A request's estimate, made once (:func:`request_cost`) and read by the routing, the metrics and
    the usage meter: its prompt tokens (text, images) and the images it carries (count, bytes)."""

    text: int = 0
    images: int = 0
    image_count: int = 0
    image_bytes: int = 0

    @property
    def total(self) -> int:
        return self.text + self.images


def request_cost(chat: Chat) -> RequestCost:
    """``chat``'s estimate: its text at four characters a token, its images at their token cost (an
    unfetched URL at :data:`UNKNOWN_IMAGE_TOKENS`), and the images read, with their bytes."""
    from vlmkit.images.tokens import estimate_image_tokens

    text = tokens = count = size = 0
    for m in chat.messages:
        for p in m.flat_content:  # a PDF or video as the pages or frames it may become
            if isinstance(p, TextPart):
                text += len(p.text) // CHARS_PER_TOKEN + 1
            elif isinstance(p, ImagePart):
                image = p.image
                count += 1
                size += image.size_bytes or 0
                if image.width is not None and image.height is not None:
                    tokens += estimate_image_tokens(image, "openai", p.detail or "auto")
                else:
                    tokens += UNKNOWN_IMAGE_TOKENS
            else:
                tokens += UNKNOWN_IMAGE_TOKENS
    return RequestCost(text, tokens, count, size)


def affinity_key(chat: Chat, session: str | None) -> str | None:
    """What a request sticks to: its session when named, else its first image's identity (an
    unfetched URL stands for itself), else nothing (a text-only chat goes to the least loaded)."""
    if session:
        return f"session:{session}"
    for m in chat.messages:
        for p in m.flat_content:
            if isinstance(p, ImagePart):
                return f"image:{p.image.identifier}"
            if isinstance(p, ImageRef):
                return f"url:{p.url}"
    return None


@dataclass(eq=False)
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

    label: str = field(init=False)
    """The deployment's label (what logs and metrics call it), read once."""

    def __post_init__(self) -> None:
        self.label = self.deployment.label

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
        self._holders: OrderedDict[str, set[Replica]] = OrderedDict()
        """Affinity key -> the replicas it was sent to (and so, presumably, cache it), least recent first."""

    # --- choosing -------------------------------------------------------------------------------

    def order(self, cost: RequestCost, key: str | None) -> list[Replica]:
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
        if mode == "affinity" and key is not None:
            up.sort(key=lambda r: r.weight(key), reverse=True)  # ties in load go to the key's rendezvous choice
        by_load = sorted(up, key=lambda r: (r.outstanding_tokens, r.inflight))
        if mode == "affinity" and key is not None and up:
            held = self.holders(key)
            holder = next((r for r in by_load if r in held), None)  # the least loaded of those holding it
            if holder is not None and not self._spills(holder, cost.text, up):
                by_load.remove(holder)
                return [holder, *by_load, *down]
        return by_load + down

    def holders(self, key: str) -> set[Replica]:
        """The replicas ``key`` was sent to, as far as this gateway knows (empty: a cold key)."""
        return self._holders.get(key, set())

    def tokens_on(self, replica: Replica, cost: RequestCost, key: str | None) -> int:
        """What the request weighs on ``replica``: without its images where they are cached already."""
        if key is not None and replica in self.holders(key):
            return cost.text
        return cost.total

    def _saturated(self, replica: Replica, tokens: int) -> bool:
        limit = self.model.max_outstanding_tokens
        return limit is not None and replica.inflight > 0 and replica.outstanding_tokens + tokens > limit

    def _spills(self, holder: Replica, tokens: int, up: list[Replica]) -> bool:
        """Whether a key's holder is passed over: saturated by ``tokens`` more, or one more request would
        take it past ``load_bound`` times the fleet's mean in flight (rounded up)."""
        inflight = sum(r.inflight for r in up) + 1
        bound = math.ceil(self.model.load_bound * inflight / len(up))
        return self._saturated(holder, tokens) or holder.inflight + 1 > bound

    # --- accounting ----------------------------------------------------------------------------

    def begin(self, replica: Replica, tokens: int, key: str | None = None) -> None:
        """``replica`` takes a request of ``tokens``; under affinity it holds ``key`` from now on."""
        replica.inflight += 1
        replica.outstanding_tokens += tokens
        if key is not None and self.model.routing == "affinity":
            held = self._holders.pop(key, set())
            held.add(replica)
            self._holders[key] = held
            if len(self._holders) > PLACEMENTS:
                self._holders.popitem(last=False)

    def end(self, replica: Replica, tokens: int) -> None:
        replica.inflight -= 1
        replica.outstanding_tokens -= tokens

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
        self._forget(replica)
        log.warning("gateway %s: ejected %s for %gs: %s", self.model.name, replica.label, self.cooldown, reason)
        self._changed(Outcome(replica, ejected=True))

    def _forget(self, replica: Replica) -> None:
        """Drop ``replica`` from every key it held: it went away, and its caches may have gone with it."""
        for key in [k for k, held in self._holders.items() if replica in held]:
            held = self._holders[key]
            held.discard(replica)
            if not held:
                del self._holders[key]

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
