"""What each provider would be sent for an image, with its token estimate and what that costs.

The targets are the image policies vlmkit ships (:data:`vlmkit.images.POLICIES`); a provider model
(``provider/name``) is the target of its route (:mod:`vlmkit.providers.registry`). Which token rule
prices a provider is decided here, once: OpenAI's tiles for OpenAI and Azure, Anthropic's pixels for
Anthropic and Claude on Bedrock, Gemini's tiles for Gemini and Vertex; the others (Ollama, llama.cpp,
OpenAI-compatible servers) count tokens with the model's own projector, which only the model knows.

Costs come from ``prices.json`` beside this module: input-token prices copied by hand from the
providers' price lists (its ``about`` says which, and ``as_of`` when). A model not in it has no cost.
"""

from __future__ import annotations

import importlib.resources
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from typing import Any

from vlmkit._types import Detail
from vlmkit.errors import BadRequestError
from vlmkit.images import POLICIES, ImageHandle, ImagePolicy
from vlmkit.images.inspect import TargetReport, image_facts, inspect_target
from vlmkit.providers.registry import ROUTES, split_model

__all__ = [
    "TARGET_RULES",
    "Target",
    "batch_discount",
    "inspect_image",
    "model_target",
    "price_of",
    "prices_source",
    "target_named",
]

TARGET_RULES: dict[str, str | None] = {
    "openai": "openai",
    "anthropic": "anthropic",
    "gemini": "gemini",
    "bedrock": "anthropic",
    "ollama": None,
    "llama.cpp": None,
}
"""The token rule of each shipped target (None: the model's projector decides)."""

_DATED = re.compile(r"(-\d{4}-\d{2}-\d{2}|-\d{8}|-latest)$|(-\d{8})?-v\d+(:\d+)?$")


@dataclass(frozen=True)
class Target:
    """Where an image goes: a policy, the token rule that prices it, and the model whose price applies."""

    name: str
    policy: ImagePolicy
    token_rule: str | None
    price_model: str | None

    def inspect(self, handle: ImageHandle, detail: Detail = "auto") -> dict[str, Any]:
        """The rendering for this target, as JSON: what is sent, what changed, tokens and cost."""
        report = inspect_target(handle, self.policy, token_rule=self.token_rule, detail=detail)
        return {**report.to_dict(), "target": self.name, **self.cost(report)}

    def cost(self, report: TargetReport) -> dict[str, Any]:
        price = price_of(self.price_model) if self.price_model else None
        usd = None if price is None or report.tokens is None else report.tokens * price / 1_000_000
        return {"price_model": self.price_model if price is not None else None, "cost_usd": usd}


def target_named(name: str) -> Target:
    """One of the shipped targets (``openai``, ``anthropic``, ``gemini``, ``bedrock``, ``ollama``, ``llama.cpp``)."""
    policy = POLICIES.get(name)
    if policy is None:
        raise BadRequestError(f"unknown target {name!r}; known: {', '.join(POLICIES)}")
    return Target(name, policy, TARGET_RULES[name], _prices()["targets"].get(name))


def model_target(model: str, *, name: str | None = None) -> Target:
    """The target a provider model (``provider/name``) is: its route's policy, its token rule, its price."""
    provider, model_name = split_model(model)
    route = ROUTES[provider]
    rule = {"anthropic": "anthropic", "gemini": "gemini", "vertex": "gemini"}.get(route.kind)
    if route.kind == "openai" and provider in ("openai", "azure"):
        rule = "openai"
    if route.kind == "bedrock" and "claude" in model_name:
        rule = "anthropic"
    canonical = "vertex_ai" if route.kind == "vertex" else provider
    return Target(name or model, route.policy, rule, f"{canonical}/{model_name}")


def inspect_image(handle: ImageHandle, targets: Iterable[Target], detail: Detail = "auto") -> dict[str, Any]:
    """The image's facts and, per target, what it would be sent (see :meth:`Target.inspect`)."""
    return {**image_facts(handle), "targets": [t.inspect(handle, detail) for t in targets]}


@cache
def _prices() -> dict[str, Any]:
    text = importlib.resources.files("vlmkit.providers").joinpath("prices.json").read_text("utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


def price_of(model: str, side: str = "input") -> float | None:
    """US dollars per million ``side`` (``"input"`` or ``"output"``) tokens of ``provider/name`` (dates
    and versions ignored), or None."""
    table: dict[str, float] = _prices()[f"per_million_{side}_tokens"]
    provider, _, name = model.partition("/")
    name = re.sub(r"^(us|eu|apac|global|jp|au|ca)\.", "", name.lower())
    for candidate in (name, _DATED.sub("", name)):
        price = table.get(f"{provider}/{candidate}")
        if price is not None:
            return price
    return None


def batch_discount(provider: str) -> float | None:
    """The share of the price ``provider``'s batch API charges (0.5: half), or None without one."""
    discount: float | None = _prices()["batch_discount"].get(provider)
    return discount


def prices_source() -> dict[str, str]:
    """Where the prices come from and when they were copied."""
    data = _prices()
    return {"about": data["about"], "as_of": data["as_of"]}
