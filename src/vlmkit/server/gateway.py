"""The gateway: names from the config file served by provider models, several deployments per name.

A request goes to the healthy deployment with the fewest requests in flight (ties taken in turn,
so load spreads evenly). When a deployment fails for a reason of its own (unreachable, 5xx, rate
limited, refusing the configured key or model), it is passed over for ``cooldown`` seconds and the
request fails over to the next one; an error in the request itself (a 400 from the upstream, a bad
image) is the caller's and comes back at once. A stream fails over only before its first chunk.
Translation is the providers layer's: this module only chooses where to send.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from vlmkit.chat import Chat
from vlmkit.errors import BadRequestError, ProviderError, VlmkitError
from vlmkit.images.fetch import FetchOptions
from vlmkit.providers import AsyncCompletionStream, ChatCompletion, acompletion, supports_vision
from vlmkit.server.config import ConfigError, Deployment, GatewayModel
from vlmkit.server.upstream import gateway_transport


@dataclass
class _State:
    deployment: Deployment
    inflight: int = 0
    failed_until: float = 0.0
    failures: int = 0
    served: int = 0


@dataclass
class _Route:
    model: GatewayModel
    states: list[_State]
    vision: bool
    turn: itertools.count[int] = field(default_factory=itertools.count)


class Gateway:
    def __init__(self, models: Mapping[str, GatewayModel], *, cooldown: float, fetch: FetchOptions) -> None:
        from vlmkit.providers.registry import split_model

        self.cooldown = cooldown
        self.fetch = fetch
        self.transport = gateway_transport()
        self._routes: dict[str, _Route] = {}
        for name, model in models.items():
            for d in model.deployments:
                try:
                    split_model(d.model)
                except VlmkitError as exc:
                    raise ConfigError(f"models.{name}: {exc}") from None
            vision = model.vision if model.vision is not None else supports_vision(model.deployments[0].model)
            self._routes[name] = _Route(model, [_State(d) for d in model.deployments], vision)

    async def aclose(self) -> None:
        """Close the connections to the upstreams (those of the running event loop)."""
        await self.transport.aclose()

    def names(self) -> list[str]:
        return list(self._routes)

    def has(self, name: str) -> bool:
        return name in self._routes

    def vision(self, name: str) -> bool:
        return self._routes[name].vision

    def owner(self, name: str) -> str:
        return self._routes[name].model.deployments[0].model.split("/", 1)[0]

    def health(self) -> dict[str, Any]:
        now = time.monotonic()
        return {
            name: [
                {
                    "model": s.deployment.model,
                    "api_base": s.deployment.api_base,
                    "inflight": s.inflight,
                    "served": s.served,
                    "failures": s.failures,
                    "cooling_down": s.failed_until > now,
                }
                for s in route.states
            ]
            for name, route in self._routes.items()
        }

    async def complete(
        self, name: str, chat: Chat, params: Mapping[str, Any], *, stream: bool
    ) -> ChatCompletion | AsyncCompletionStream:
        route = self._routes[name]
        last: VlmkitError | None = None
        for state in self._order(route):
            d = state.deployment
            state.inflight += 1
            try:
                kwargs: dict[str, Any] = {
                    "api_base": d.api_base,
                    "api_key": d.api_key,
                    "timeout": d.timeout,
                    "max_retries": d.max_retries,
                    "fetch": self.fetch,
                    "transport": self.transport,
                    **d.options,
                    **params,
                }
                result: ChatCompletion | AsyncCompletionStream
                if stream:
                    result = await acompletion(d.model, chat, stream=True, **kwargs)
                else:
                    result = await acompletion(d.model, chat, stream=False, **kwargs)
            except ProviderError as exc:
                if isinstance(exc, BadRequestError):
                    raise
                state.failures += 1
                state.failed_until = time.monotonic() + self.cooldown
                last = exc
                continue
            finally:
                state.inflight -= 1
            state.served += 1
            return result
        assert last is not None
        raise last

    def _order(self, route: _Route) -> list[_State]:
        """Healthy deployments first, the least busy first, ties in turn; cooling ones last."""
        states = route.states
        if len(states) == 1:
            return states
        now = time.monotonic()
        start = next(route.turn) % len(states)
        rotated = states[start:] + states[:start]
        return sorted(rotated, key=lambda s: (s.failed_until > now, s.inflight))
