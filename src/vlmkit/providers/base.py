"""What every provider module shares: its configuration, the wire request it builds, stream events,
and the rendering of a request's images with the provider's policy.

A provider module is a pure translation and holds no state; it provides::

    STREAM_FORMAT: "sse" | "ndjson" | "eventstream"
    build_request(req: CompletionRequest, cfg: ProviderConfig) -> WireRequest
    parse_response(data: dict, req: CompletionRequest, cfg: ProviderConfig) -> ChatCompletion
    stream_parser(req: CompletionRequest, cfg: ProviderConfig) -> StreamParser

and, where the provider signs requests, ``sign(wire, body, cfg) -> headers``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from vlmkit.errors import BadRequestError, VlmkitError
from vlmkit.images import ImagePolicy, RenderedImage
from vlmkit.providers.request import CompletionRequest, ImageInput
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


def render(image: ImageInput, policy: ImagePolicy) -> RenderedImage:
    """The image's bytes as ``policy`` accepts them; any image error names the part it is in."""
    try:
        if image.handle is None:  # resolved before building for providers that do not fetch
            raise BadRequestError(f"the image URL {image.url!r} was not fetched")
        return image.handle.render(policy)
    except VlmkitError as exc:
        if image.location and not exc.location:
            exc.add_location(image.location)
        raise


def reference_error(image: ImageInput, provider: str, hint: str) -> BadRequestError:
    source = image.handle.source if image.handle else image.url
    exc = BadRequestError(f"{provider} cannot read {source!r}: {hint}")
    if image.location:
        exc.add_location(image.location)
    return exc


def dig(data: Any, *keys: str | int) -> Any:
    """``data[k1][k2]...`` or None where any step is missing (for provider JSON of uncertain shape)."""
    for key in keys:
        try:
            data = data[key]
        except (KeyError, IndexError, TypeError):
            return None
    return data
