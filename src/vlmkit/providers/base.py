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

import json
import threading
import uuid
from collections.abc import Callable, Mapping
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


_rendered = threading.local()


def render(image: ImageInput, policy: ImagePolicy) -> RenderedImage:
    """The image's bytes as ``policy`` accepts them; any image error names the part it is in."""
    try:
        if image.handle is None:  # resolved before building for providers that do not fetch
            raise BadRequestError(f"the image URL {image.url!r} was not fetched")
        rendered = image.handle.render(policy)
    except VlmkitError as exc:
        if image.location and not exc.location:
            exc.add_location(image.location)
        raise
    seen = getattr(_rendered, "seen", None)
    if seen is not None:
        seen.append(rendered)
    return rendered


def encode_json(build: Callable[[], WireRequest]) -> tuple[WireRequest, bytes]:
    """Build a wire request and its JSON body as bytes, splicing in image base64 without re-scanning it.

    A rendered image's base64 text and data URL need no JSON escaping, so instead of letting the JSON
    encoder walk megabytes of them, each is swapped for a short placeholder and the bytes are joined
    around it: the cost of an image becomes one copy.
    """
    _rendered.seen = []
    try:
        wire = build()
        seen: list[RenderedImage] = _rendered.seen
    finally:
        _rendered.seen = None
    blobs = {id(v): v for r in seen for k in ("base64", "data_url") if (v := r.__dict__.get(k)) is not None}
    if not blobs:
        return wire, json.dumps(wire.json, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    marker = f"@vlmkit-blob-{uuid.uuid4().hex}-"
    order: list[str] = []
    text = json.dumps(_swap(wire.json, blobs, marker, order), ensure_ascii=False, separators=(",", ":"))
    pieces = text.split('"' + marker)
    out = [pieces[0].encode("utf-8")]
    for piece in pieces[1:]:  # each is 'N"' and the JSON that follows the placeholder
        number, _, rest = piece.partition('"')
        out += [b'"', order[int(number)].encode("ascii"), b'"', rest.encode("utf-8")]
    return wire, b"".join(out)


def _swap(value: Any, blobs: dict[int, str], marker: str, order: list[str]) -> Any:
    """``value`` with each blob replaced by ``marker`` and its index in ``order``.

    A plain function, not a closure: a nested function that calls itself is a reference cycle, and it
    would keep the blobs (megabytes each) alive until the garbage collector's next full pass.
    """
    if isinstance(value, str):
        if id(value) in blobs:
            order.append(value)
            return f"{marker}{len(order) - 1}"
        return value
    if isinstance(value, dict):
        return {k: _swap(v, blobs, marker, order) for k, v in value.items()}
    if isinstance(value, list):
        return [_swap(v, blobs, marker, order) for v in value]
    return value


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
