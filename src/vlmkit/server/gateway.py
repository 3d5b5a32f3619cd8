"""The gateway: names from the config file served by provider models, several deployments per name.

Where a request goes is the fleet's choice (:mod:`vlmkit.server.fleet`: least outstanding work,
image affinity or round robin, and which deployments are ejected). When a deployment fails for a
reason of its own (unreachable, 5xx, rate limited, refusing the configured key or model), it is
ejected for ``cooldown`` seconds and the request fails over to the next one; an error in the
request itself (a 400 from the upstream, a bad image) is the caller's and comes back at once.
A stream fails over until its first chunk has arrived: the caller has seen nothing before that, so
a replica that dies with a request queued loses no request. Each attempt is counted
(:mod:`vlmkit.server.metrics`) and each answered request reported to ``done`` (a :class:`Served`),
once its stream has ended. Translation is the providers layer's: this module only chooses where to send.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from vlmkit.chat import Chat
from vlmkit.errors import BadRequestError, ProviderError, VlmkitError
from vlmkit.images import ImageHandle, ImagePolicy
from vlmkit.images.fetch import FetchOptions
from vlmkit.images.render import needs_change
from vlmkit.providers import AsyncCompletionStream, ChatCompletion, ChatCompletionChunk, acompletion, supports_vision
from vlmkit.providers.pooled import pooled_transport
from vlmkit.server.config import ConfigError, GatewayModel
from vlmkit.server.fleet import Fleet, Outcome, Replica, RequestCost, affinity_key, request_cost
from vlmkit.server.logs import REQUESTS_LOGGER, image_fields
from vlmkit.server.metrics import Metrics

requests_log = logging.getLogger(REQUESTS_LOGGER)


@dataclass
class Served:
    """One gateway request as it went: where, how, how long, and what it cost."""

    model: str
    deployment: str = ""
    status: int = 200
    started: float = field(default_factory=time.perf_counter)
    first_token: float | None = None
    ended: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    attempts: int = 0
    images: list[ImageHandle] = field(default_factory=list)
    """The request's images, described in the log by :func:`vlmkit.server.logs.image_fields` (which
    hashes them): gathered only when the request log is on."""

    def log_fields(self) -> dict[str, Any]:
        ended = self.ended if self.ended is not None else time.perf_counter()
        return {
            "event": "gateway_request",
            "model": self.model,
            "deployment": self.deployment,
            "status": self.status,
            "attempts": self.attempts,
            "duration_ms": round((ended - self.started) * 1000, 1),
            "ttft_ms": None if self.first_token is None else round((self.first_token - self.started) * 1000, 1),
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "images": [image_fields(i) for i in self.images],
        }


Done = Callable[[Served], None]


@dataclass
class _Route:
    model: GatewayModel
    fleet: Fleet
    vision: bool


class Gateway:
    def __init__(
        self,
        models: Mapping[str, GatewayModel],
        *,
        cooldown: float,
        fetch: FetchOptions,
        metrics: Metrics | None = None,
    ) -> None:
        from vlmkit.providers.registry import ROUTES, split_model

        self.cooldown = cooldown
        self.fetch = fetch
        self.metrics = metrics or Metrics()
        self.transport = pooled_transport()
        self._routes: dict[str, _Route] = {}
        for name, model in models.items():
            for d in model.deployments:
                try:
                    provider, _ = split_model(d.model)
                except VlmkitError as exc:
                    raise ConfigError(f"models.{name}: {exc}") from None
                urls = d.options.get("image_urls")
                if urls not in (None, "fetch", "forward"):
                    raise ConfigError(f"models.{name}: image_urls must be 'fetch' or 'forward', not {urls!r}")
                if urls == "forward" and ROUTES[provider].kind not in ("openai", "anthropic"):
                    raise ConfigError(
                        f"models.{name}: {provider} cannot fetch image URLs itself; use image_urls: fetch"
                    )
            vision = model.vision if model.vision is not None else supports_vision(model.deployments[0].model)
            fleet = Fleet(model, cooldown=cooldown, on_change=self._health_changed)
            self._routes[name] = _Route(model, fleet, vision)
            for r in fleet.replicas:
                self.metrics.deployment_up(name, r.label, up=True)
                self.metrics.watch_load(name, r.label, _reader(r, "inflight"), _reader(r, "outstanding_tokens"))
        self._policies: dict[Replica, ImagePolicy] = {}
        """Each deployment's image policy, resolved once, for counting the bytes it was sent."""
        self._started = False

    def start(self) -> None:
        """Start the fleets' health checks on the running loop (idempotent)."""
        if not self._started:
            self._started = True
            for route in self._routes.values():
                route.fleet.start()

    async def aclose(self) -> None:
        """Stop the health checks and close the connections to the upstreams (those of the running loop)."""
        for route in self._routes.values():
            await route.fleet.stop()
        self._started = False
        await self.transport.aclose()

    def names(self) -> list[str]:
        return list(self._routes)

    def has(self, name: str) -> bool:
        return name in self._routes

    def vision(self, name: str) -> bool:
        return self._routes[name].vision

    def owner(self, name: str) -> str:
        return self._routes[name].model.deployments[0].model.split("/", 1)[0]

    def sticks_to_sessions(self, name: str) -> bool:
        """Whether ``name`` routes on the session header (``affinity``): only then is it read."""
        return self._routes[name].model.routing == "affinity"

    def forwards_urls(self, name: str) -> bool:
        """Whether a deployment of ``name`` takes image URLs as they are (``image_urls: forward``): the
        server then leaves them unfetched, and each deployment that does not forward fetches them itself."""
        return any(d.options.get("image_urls") == "forward" for d in self._routes[name].model.deployments)

    def fleet(self, name: str) -> Fleet:
        return self._routes[name].fleet

    def health(self) -> dict[str, Any]:
        now = time.monotonic()
        return {
            name: [
                {
                    "model": r.deployment.model,
                    "api_base": r.deployment.api_base,
                    "deployment": r.label,
                    "inflight": r.inflight,
                    "outstanding_tokens": r.outstanding_tokens,
                    "served": r.served,
                    "failures": r.failures,
                    "ejected": r.ejected,
                    "cooling_down": r.ejected and r.ejected_until > now,
                }
                for r in route.fleet.replicas
            ]
            for name, route in self._routes.items()
        }

    async def complete(
        self,
        name: str,
        chat: Chat,
        params: Mapping[str, Any],
        *,
        stream: bool,
        session: str | None = None,
        done: Done | None = None,
        cost: RequestCost | None = None,
    ) -> ChatCompletion | GatewayStream:
        """``chat`` answered by a deployment of ``name``, failing over; ``cost``: its estimate, when the
        caller has made it already."""
        self.start()
        route = self._routes[name]
        fleet = route.fleet
        cost = cost if cost is not None else request_cost(chat)
        key = affinity_key(chat, session) if route.model.routing == "affinity" else None
        served = Served(name, images=chat.images if requests_log.isEnabledFor(logging.INFO) else [])
        last: VlmkitError | None = None
        for replica in fleet.order(cost, key):
            served.attempts += 1
            served.deployment = replica.label
            tokens = fleet.tokens_on(replica, cost, key)
            fleet.begin(replica, tokens, key)
            try:
                if stream:
                    upstream = await acompletion(
                        replica.deployment.model, chat, stream=True, **self._kwargs(replica, params)
                    )
                    first = await _first(upstream)
                else:
                    answer = await acompletion(
                        replica.deployment.model, chat, stream=False, **self._kwargs(replica, params)
                    )
            except ProviderError as exc:
                fleet.end(replica, tokens)
                status = int(getattr(exc, "status_code", 502) or 502)
                self.metrics.request(name, replica.label, status)
                if isinstance(exc, BadRequestError):
                    raise
                self.metrics.upstream_failed(name, replica.label)
                fleet.failed(replica, f"{type(exc).__name__}: {exc}")
                last = exc
                continue
            except BaseException:
                fleet.end(replica, tokens)
                raise
            fleet.succeeded(replica)
            if cost.image_count:
                self._images_sent(name, replica, chat)
            if not stream:
                fleet.end(replica, tokens)
                usage = answer.usage
                served.prompt_tokens = usage.prompt_tokens if usage else 0
                served.completion_tokens = usage.completion_tokens if usage else 0
                self._finish(served, done)
                return answer
            finish = _Finish(self, fleet, replica, tokens, served, done)
            return GatewayStream(upstream, first, finish)
        assert last is not None
        raise last

    def _kwargs(self, replica: Replica, params: Mapping[str, Any]) -> dict[str, Any]:
        d = replica.deployment
        return {
            "api_base": d.api_base,
            "api_key": d.api_key,
            "timeout": d.timeout,
            "max_retries": d.max_retries,
            "fetch": self.fetch,
            "transport": self.transport,
            "image_urls": "fetch",  # the gateway fetches under its one policy, unless the deployment forwards
            **d.options,
            **params,
        }

    def _finish(self, served: Served, done: Done | None) -> None:
        served.ended = time.perf_counter()
        ttft = None if served.first_token is None else served.first_token - served.started
        self.metrics.request(served.model, served.deployment, served.status, served.ended - served.started, ttft)
        if requests_log.isEnabledFor(logging.INFO):
            requests_log.info(
                "%s via %s: %d in %.0f ms",
                served.model,
                served.deployment,
                served.status,
                (served.ended - served.started) * 1000,
                extra={"fields": served.log_fields()},
            )
        if done is not None:
            done(served)

    def _health_changed(self, name: str, outcome: Outcome) -> None:
        self.metrics.health_changed(name, outcome.replica.label, up=outcome.readmitted)

    def _images_sent(self, name: str, replica: Replica, chat: Chat) -> None:
        """Count the image bytes the deployment was sent (its renderings are cached on the handles)."""
        if not self.metrics.enabled:
            return
        d = replica.deployment
        policy = self._policies.get(replica)
        if policy is None:
            from vlmkit.providers.registry import resolve

            policy = resolve(d.model, api_base=d.api_base, api_key=d.api_key or "-").policy
            self._policies[replica] = policy
        for image in chat.images:
            if image.is_reference:
                continue
            if not needs_change(image, policy):  # sent as it came (the usual case): nothing to look up
                self.metrics.image_sent(name, replica.label, image.size_bytes or 0, False, False)
                continue
            rendered = image.render(policy)
            resized = (rendered.width, rendered.height) != (image.width, image.height)
            converted = rendered.mime_type != image.mime_type
            self.metrics.image_sent(name, replica.label, len(rendered.data), resized, converted)


def _reader(replica: Replica, count: str) -> Callable[[], int]:
    """A reading of one of ``replica``'s counts, for a gauge that reads it when scraped."""
    return lambda: int(getattr(replica, count))


async def _first(
    stream: AsyncCompletionStream,
) -> tuple[AsyncIterator[ChatCompletionChunk], ChatCompletionChunk | None]:
    """The stream's first chunk, read before the caller sees anything (an error here fails over)."""
    chunks = stream.__aiter__()
    try:
        return chunks, await chunks.__anext__()
    except StopAsyncIteration:
        return chunks, None
    except BaseException:
        with contextlib.suppress(Exception):
            await stream.aclose()
        raise


@dataclass
class _Finish:
    gateway: Gateway
    fleet: Fleet
    replica: Replica
    tokens: int
    served: Served
    done: Done | None
    ended: bool = False

    def __call__(self, status: int) -> None:
        if self.ended:
            return
        self.ended = True
        self.fleet.end(self.replica, self.tokens)
        self.served.status = status
        self.gateway._finish(self.served, self.done)

    def failed(self, reason: str) -> None:
        """The deployment broke off a started stream (it went away): too late to retry, not to eject it."""
        self.gateway.metrics.upstream_failed(self.served.model, self.replica.label)
        self.fleet.failed(self.replica, reason)


class GatewayStream:
    """An upstream's chunks, its first already read; ends the request's accounting when it ends."""

    def __init__(
        self,
        upstream: AsyncCompletionStream,
        first: tuple[AsyncIterator[ChatCompletionChunk], ChatCompletionChunk | None],
        finish: _Finish,
    ) -> None:
        self._upstream = upstream
        self._chunks, self._first = first
        self._finish = finish

    async def __aiter__(self) -> AsyncIterator[ChatCompletionChunk]:
        served = self._finish.served
        status = 499  # a caller that stops reading early
        try:
            chunk = self._first
            while chunk is not None:
                if served.first_token is None and any(c.delta.content for c in chunk.choices):
                    served.first_token = time.perf_counter()
                if chunk.usage is not None:
                    served.prompt_tokens = chunk.usage.prompt_tokens
                    served.completion_tokens = chunk.usage.completion_tokens
                yield chunk
                chunk = await anext(self._chunks, None)
            status = 200
        except VlmkitError as exc:
            status = int(getattr(exc, "status_code", 502) or 502)
            if isinstance(exc, ProviderError) and not isinstance(exc, BadRequestError):
                self._finish.failed(f"{type(exc).__name__} while streaming: {exc}")
            raise
        finally:
            self._finish(status)

    async def aclose(self) -> None:
        try:
            await self._upstream.aclose()
        finally:
            self._finish(499)
