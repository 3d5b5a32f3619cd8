"""The seam between the providers layer and each provider module: what a module provides, and the
values that cross it (its configuration, the wire request it builds, the stream events it reads).

A provider module is a pure translation and holds no state; it provides::

    STREAM_FORMAT: "sse" | "ndjson" | "eventstream"
    build_request(req: CompletionRequest, cfg: ProviderConfig) -> WireRequest
    parse_response(data: dict, req: CompletionRequest, cfg: ProviderConfig) -> ChatCompletion
    stream_parser(req: CompletionRequest, cfg: ProviderConfig) -> StreamParser

and, where the provider signs requests, ``sign(wire, body, cfg) -> headers``. What modules share
beyond the seam lives beside it: :mod:`~vlmkit.providers.rendering` (a request's images rendered with the
provider's policy) and :mod:`~vlmkit.providers.jsonbody` (JSON bodies: images spliced in, answers read).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from vlmkit.images import ImagePolicy
from vlmkit.providers.request import CompletionRequest
from vlmkit.providers.response import ChatCompletion, ChatCompletionChunk


@dataclass(frozen=True)
class ProviderConfig:
    """Where and how to reach one provider for one model: resolved by the registry from arguments and env."""

    provider: str
    """The name the user wrote before the slash (``"xai"``, ``"lm_studio"``, ``"anthropic"``)."""
    kind: str
    """The provider module that translates (``"openai"`` for the whole OpenAI-compatible family)."""
    model: str
    api_base: str
    api_key: str | None
    policy: ImagePolicy
    fetches_urls: bool
    """Whether the provider fetches http(s) image URLs itself (else vlmkit fetches them safely)."""
    options: Mapping[str, Any] = field(default_factory=dict)
    """Provider-specific settings (API version, region, project, what the wire format accepts)."""
    headers: Mapping[str, str] = field(default_factory=dict)
    """Extra headers the caller asked for."""


@dataclass
class WireRequest:
    """What a provider module builds: where to send, the headers, and the body as a JSON tree, in which
    an image's base64 or data URL is a :class:`~vlmkit.providers.jsonbody.Blob`."""

    url: str
    headers: dict[str, str]
    json: dict[str, Any]


@dataclass(frozen=True)
class Event:
    """One decoded stream event: an SSE event (``name`` is its ``event:`` field), an NDJSON line, or an
    AWS event-stream message (``name`` is its ``:event-type``)."""

    name: str | None
    data: Any


class StreamParser(Protocol):
    def feed(self, event: Event) -> list[ChatCompletionChunk]: ...

    def close(self) -> list[ChatCompletionChunk]:
        """Chunks owed at the end of the stream (e.g. a finish chunk the provider did not send)."""
        ...


class ProviderModule(Protocol):
    STREAM_FORMAT: str

    def build_request(self, req: CompletionRequest, cfg: ProviderConfig) -> WireRequest: ...

    def parse_response(self, data: Any, req: CompletionRequest, cfg: ProviderConfig) -> ChatCompletion: ...

    def stream_parser(self, req: CompletionRequest, cfg: ProviderConfig) -> StreamParser: ...
