"""API keys with limits: who may call, which models, how many requests and tokens a minute.

```yaml
keys:
  - {key: os.environ/TEAM_A_KEY, name: team-a, rpm: 60, tpm: 200000, models: [qwen-vl]}
  - {key: os.environ/OPS_KEY, name: ops, admin: true}      # may read GET /v1/usage
```

A key's limits hold over the last 60 seconds: ``rpm`` counts its chat requests, ``tpm`` the prompt
and completion tokens of its answered ones (known once each answer ends). A request past either is
answered 429 with ``Retry-After``: the seconds until enough of the window has passed. The windows
are this process's (each gateway node limits on its own); usage, which is recorded in a database
(:mod:`vlmkit.server.usage`), is shared. Keys listed under ``api_keys`` have no limits.
"""

from __future__ import annotations

import collections
import math
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from vlmkit.errors import ConfigError
from vlmkit.server.errors import APIError

WINDOW = 60.0


@dataclass(frozen=True)
class KeyPolicy:
    name: str
    """What usage and logs call the key (never the secret)."""
    secret: str
    rpm: int | None = None
    tpm: int | None = None
    models: frozenset[str] | None = None
    """The gateway and local model names the key may use (``None``: all)."""
    admin: bool = False

    def __repr__(self) -> str:
        return f"KeyPolicy({self.name!r}, rpm={self.rpm}, tpm={self.tpm}, admin={self.admin})"


ANONYMOUS = KeyPolicy("anonymous", "")
"""Who calls a server without keys."""


def plain_keys(secrets: Iterable[str]) -> tuple[KeyPolicy, ...]:
    """The ``api_keys`` list as policies without limits, named by their place in the list."""
    return tuple(KeyPolicy(f"api_keys[{i}]", s) for i, s in enumerate(sorted(secrets)))


class _Window:
    """What one key did in the last :data:`WINDOW` seconds."""

    def __init__(self) -> None:
        self.requests: collections.deque[float] = collections.deque()
        self.tokens: collections.deque[tuple[float, int]] = collections.deque()
        self.token_sum = 0

    def expire(self, now: float) -> None:
        while self.requests and self.requests[0] <= now - WINDOW:
            self.requests.popleft()
        while self.tokens and self.tokens[0][0] <= now - WINDOW:
            self.token_sum -= self.tokens.popleft()[1]


class Limiter:
    """Admits a key's request, or says when it may come back."""

    def __init__(self) -> None:
        self._windows: dict[str, _Window] = collections.defaultdict(_Window)
        self._lock = threading.Lock()

    def admit(self, policy: KeyPolicy, model: str) -> None:
        """Count a request of ``policy`` for ``model``, or raise 403 (model) / 429 (a limit)."""
        if policy.models is not None and model not in policy.models:
            allowed = ", ".join(sorted(policy.models)) or "none"
            raise APIError(
                f"the key {policy.name!r} may not use the model {model!r}; it may use: {allowed}. "
                "Ask the server's operator to add the model to the key's `models:` list",
                403,
                code="model_not_allowed",
                param="model",
            )
        if policy.rpm is None and policy.tpm is None:
            return
        now = time.monotonic()
        with self._lock:
            w = self._windows[policy.name]
            w.expire(now)
            if policy.rpm is not None and len(w.requests) >= policy.rpm:
                wait = w.requests[len(w.requests) - policy.rpm] + WINDOW - now
                raise _limited(policy, f"{policy.rpm} requests a minute", wait)
            if policy.tpm is not None and w.token_sum >= policy.tpm:
                excess, wait = w.token_sum - policy.tpm, 0.0
                for at, n in w.tokens:  # wait until enough tokens have left the window
                    excess -= n
                    wait = at + WINDOW - now
                    if excess < 0:
                        break
                raise _limited(policy, f"{policy.tpm} tokens a minute", wait)
            w.requests.append(now)

    def spent(self, policy: KeyPolicy, tokens: int) -> None:
        """Count the tokens of an answered request against its key's ``tpm``."""
        if policy.tpm is None or tokens <= 0:
            return
        with self._lock:
            w = self._windows[policy.name]
            w.tokens.append((time.monotonic(), tokens))
            w.token_sum += tokens


def _limited(policy: KeyPolicy, limit: str, wait: float) -> APIError:
    seconds = max(1, math.ceil(wait))
    return APIError(
        f"the key {policy.name!r} is over its limit of {limit}; retry in {seconds} s (Retry-After), "
        "or ask the server's operator for a higher limit",
        429,
        code="rate_limit_exceeded",
        headers={"Retry-After": str(seconds)},
    )


def parse_keys(raw: Any, where: str, env_value: Any) -> tuple[KeyPolicy, ...]:
    """The ``keys:`` section: a list of ``{key, name, rpm, tpm, models, admin}``."""
    if not isinstance(raw, list):
        raise ConfigError(f"{where}: keys must be a list of {{key: ..., name: ..., rpm: ..., tpm: ..., models: [...]}}")
    known = {"key", "name", "rpm", "tpm", "models", "admin"}
    policies: list[KeyPolicy] = []
    for i, item in enumerate(raw):
        here = f"{where}: keys[{i}]"
        if not isinstance(item, Mapping) or not item.get("key"):
            raise ConfigError(f"{here}: each key needs `key:` (the secret, e.g. os.environ/TEAM_KEY)")
        unknown = set(item) - known
        if unknown:
            raise ConfigError(
                f"{here}: unknown setting(s) {', '.join(sorted(map(str, unknown)))}; known: {', '.join(sorted(known))}"
            )
        limits: dict[str, int | None] = {}
        for field_name in ("rpm", "tpm"):
            value = item.get(field_name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"{here}.{field_name}: {value!r} is not a positive whole number")
            limits[field_name] = value
        models = item.get("models")
        if models is not None and (isinstance(models, str) or not isinstance(models, list)):
            raise ConfigError(f"{here}.models: must be a list of model names, e.g. [qwen-vl, gpt-4o]")
        policies.append(
            KeyPolicy(
                name=str(item.get("name") or f"keys[{i}]"),
                secret=str(env_value(item["key"], f"{here}.key")),
                rpm=limits["rpm"],
                tpm=limits["tpm"],
                models=None if models is None else frozenset(map(str, models)),
                admin=bool(item.get("admin", False)),
            )
        )
    names = [p.name for p in policies]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(f"{where}: keys: the name(s) {', '.join(twice)} are used twice; usage is kept by name")
    return tuple(policies)
