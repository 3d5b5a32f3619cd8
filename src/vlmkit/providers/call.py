"""``completion`` and ``acompletion``: one call for every provider.

The path of a call: resolve ``provider/model`` (registry) → parse the OpenAI-format messages into a
neutral request (request) → fetch, safely, the image URLs the provider cannot fetch itself → let the
provider module build the wire request, rendering every image with the provider's policy → send it
through the shared transport → translate the answer (or stream) back into OpenAI's shapes. Sync and
async differ only in how they wait.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Literal, cast, overload

from vlmkit.chat import Chat
from vlmkit.errors import BadRequestError, ProviderError, VlmkitError
from vlmkit.images import aprepare_image, prepare_image
from vlmkit.images.render import needs_change
from vlmkit.providers.base import ProviderConfig, ProviderModule
from vlmkit.providers.jsonbody import encode_json
from vlmkit.providers.registry import module, resolve
from vlmkit.providers.request import CompletionRequest, ImageInput, build_params, parse_messages
from vlmkit.providers.response import ChatCompletion
from vlmkit.providers.status import provider_error
from vlmkit.providers.streams import AsyncCompletionStream, CompletionStream
from vlmkit.providers.transport import RetryPolicy, Transport, default_transport

if TYPE_CHECKING:
    from vlmkit.images.fetch import FetchOptions

PROVIDER_OPTIONS = frozenset(
    {
        "api_version",
        "aws_region_name",
        "aws_access_key_id",
        "aws_secret_access_key",
        "aws_session_token",
        "aws_profile_name",
        "aws_bucket_owner",
        "vertex_project",
        "vertex_location",
    }
)
_IGNORED = frozenset({"stream_options", "n"})


@overload
def completion(
    model: str,
    messages: Any,
    *,
    stream: Literal[False] = False,
    api_base: str | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    timeout: float | None = None,
    max_retries: int | None = None,
    fetch: FetchOptions | None = None,
    extra_headers: Mapping[str, str] | None = None,
    extra_body: Mapping[str, Any] | None = None,
    transport: Transport | None = None,
    retry: RetryPolicy | None = None,
    **params: Any,
) -> ChatCompletion: ...


@overload
def completion(
    model: str,
    messages: Any,
    *,
    stream: Literal[True],
    api_base: str | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    timeout: float | None = None,
    max_retries: int | None = None,
    fetch: FetchOptions | None = None,
    extra_headers: Mapping[str, str] | None = None,
    extra_body: Mapping[str, Any] | None = None,
    transport: Transport | None = None,
    retry: RetryPolicy | None = None,
    **params: Any,
) -> CompletionStream: ...


def completion(
    model: str,
    messages: Any,
    *,
    stream: bool = False,
    api_base: str | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    timeout: float | None = None,
    max_retries: int | None = None,
    fetch: FetchOptions | None = None,
    extra_headers: Mapping[str, str] | None = None,
    extra_body: Mapping[str, Any] | None = None,
    transport: Transport | None = None,
    retry: RetryPolicy | None = None,
    **params: Any,
) -> ChatCompletion | CompletionStream:
    """Send a chat to ``model`` (``"provider/name"``) and return OpenAI's ``ChatCompletion`` shape.

    ``messages`` are OpenAI-format messages (or a :class:`vlmkit.Chat`); an ``image_url`` is a string
    or ``{"url", "detail", "format"}`` with an http(s) URL, a data URL, base64, a ``gs://``/``s3://``
    URI or a local path. With ``stream=True`` the result iterates over ``ChatCompletionChunk`` objects.
    ``params`` are OpenAI's settings (``temperature``, ``max_tokens``, ``stop``, ``response_format``,
    ...) and the provider options named in ``PROVIDER_OPTIONS``. ``fetch`` governs the safe fetching
    of image URLs for providers that cannot fetch them. Errors are :class:`vlmkit.VlmkitError`s: a bad
    image or part is a ``BadRequestError`` naming ``messages[i].content[j]``.
    """
    cfg, req, mod = _start(model, messages, stream, api_base or base_url, api_key, extra_headers, extra_body, params)
    for image in _urls_to_fetch(req, cfg):
        _replace_image(req, image, _fetched(image, fetch))
    if cfg.kind == "local":
        from vlmkit.providers import local

        return cast(ChatCompletion | CompletionStream, local.completion(req, cfg))
    url, headers, body = _wire(mod, req, cfg)
    sender = transport or default_transport()
    policy = _retry(retry, max_retries)
    response = sender.send(cfg.provider, url, headers, body, stream=stream, timeout=timeout, retry=policy)
    if stream:
        return CompletionStream(response, mod.stream_parser(req, cfg), mod.STREAM_FORMAT, cfg.provider)
    return mod.parse_response(_json(response.content, cfg.provider), req, cfg)


@overload
async def acompletion(
    model: str,
    messages: Any,
    *,
    stream: Literal[False] = False,
    api_base: str | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    timeout: float | None = None,
    max_retries: int | None = None,
    fetch: FetchOptions | None = None,
    extra_headers: Mapping[str, str] | None = None,
    extra_body: Mapping[str, Any] | None = None,
    transport: Transport | None = None,
    retry: RetryPolicy | None = None,
    **params: Any,
) -> ChatCompletion: ...


@overload
async def acompletion(
    model: str,
    messages: Any,
    *,
    stream: Literal[True],
    api_base: str | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    timeout: float | None = None,
    max_retries: int | None = None,
    fetch: FetchOptions | None = None,
    extra_headers: Mapping[str, str] | None = None,
    extra_body: Mapping[str, Any] | None = None,
    transport: Transport | None = None,
    retry: RetryPolicy | None = None,
    **params: Any,
) -> AsyncCompletionStream: ...


async def acompletion(
    model: str,
    messages: Any,
    *,
    stream: bool = False,
    api_base: str | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    timeout: float | None = None,
    max_retries: int | None = None,
    fetch: FetchOptions | None = None,
    extra_headers: Mapping[str, str] | None = None,
    extra_body: Mapping[str, Any] | None = None,
    transport: Transport | None = None,
    retry: RetryPolicy | None = None,
    **params: Any,
) -> ChatCompletion | AsyncCompletionStream:
    """:func:`completion` for async code: file reads, image work and network never block the loop."""
    import anyio.to_thread

    args = (model, messages, stream, api_base or base_url, api_key, extra_headers, extra_body, params)
    if _has_images(messages):
        cfg, req, mod = await anyio.to_thread.run_sync(lambda: _start(*args))
    else:
        cfg, req, mod = _start(*args)
    to_fetch = _urls_to_fetch(req, cfg)
    if to_fetch:
        import asyncio

        handles = await asyncio.gather(*(_afetched(image, fetch) for image in to_fetch))
        for image, handle in zip(to_fetch, handles, strict=True):
            _replace_image(req, image, handle)
    if cfg.kind == "local":
        from vlmkit.providers import local

        return cast(ChatCompletion | AsyncCompletionStream, await local.acompletion(req, cfg))
    if _renders_pixels(req, cfg):
        url, headers, body = await anyio.to_thread.run_sync(lambda: _wire(mod, req, cfg))
    else:
        url, headers, body = _wire(mod, req, cfg)
    sender = transport or default_transport()
    policy = _retry(retry, max_retries)
    response = await sender.asend(cfg.provider, url, headers, body, stream=stream, timeout=timeout, retry=policy)
    if stream:
        return AsyncCompletionStream(response, mod.stream_parser(req, cfg), mod.STREAM_FORMAT, cfg.provider)
    return mod.parse_response(_json(response.content, cfg.provider), req, cfg)


# --- the steps -----------------------------------------------------------------------------------


def _start(
    model: str,
    messages: Any,
    stream: bool,
    api_base: str | None,
    api_key: str | None,
    extra_headers: Mapping[str, str] | None,
    extra_body: Mapping[str, Any] | None,
    params: Mapping[str, Any],
) -> tuple[ProviderConfig, CompletionRequest, ProviderModule]:
    options = {k: v for k, v in params.items() if k in PROVIDER_OPTIONS}
    settings = {k: v for k, v in params.items() if k not in PROVIDER_OPTIONS and k not in _IGNORED}
    if not isinstance(stream, bool):
        raise BadRequestError(f"stream must be True or False, not {stream!r}")
    cfg = resolve(model, api_base=api_base, api_key=api_key, headers=extra_headers, options=options)
    req = CompletionRequest(cfg.model, parse_messages(messages), build_params(settings), stream, dict(extra_body or {}))
    return cfg, req, module(cfg.kind)


def _has_images(messages: Any) -> bool:
    """Whether reading ``messages`` may read files or decode images (a :class:`Chat` holds them ready)."""
    if isinstance(messages, Chat):
        return False
    if not isinstance(messages, list):
        return True
    return any(isinstance(m, Mapping) and isinstance(m.get("content"), list) for m in messages)


INLINE_BYTES = 8 * 1024 * 1024
"""Images that pass through unchanged and total less than this are base64-encoded on the event loop
(about a millisecond per 8 MB): a thread hop would cost more than the work."""


def _renders_pixels(req: CompletionRequest, cfg: ProviderConfig) -> bool:
    """Whether building the wire request decodes or re-encodes pixels (then it runs in a worker thread)."""
    total = 0
    for image in req.images:
        handle = image.handle
        if handle is None or handle.is_reference:
            continue
        if image.detail == "low" or needs_change(handle, cfg.policy):
            return True
        total += handle.size_bytes or 0
    return total > INLINE_BYTES


def _urls_to_fetch(req: CompletionRequest, cfg: ProviderConfig) -> list[ImageInput]:
    if cfg.fetches_urls:
        return []
    return [image for image in req.images if image.handle is None]


def _fetched(image: ImageInput, fetch: FetchOptions | None) -> ImageInput:
    try:
        return replace(image, handle=prepare_image(image.url, format=image.format, fetch=fetch))
    except VlmkitError as exc:
        exc.add_location(image.location)
        raise


async def _afetched(image: ImageInput, fetch: FetchOptions | None) -> ImageInput:
    try:
        return replace(image, handle=await aprepare_image(image.url, format=image.format, fetch=fetch))
    except VlmkitError as exc:
        exc.add_location(image.location)
        raise


def _replace_image(req: CompletionRequest, old: ImageInput, new: ImageInput) -> None:
    for m in req.messages:
        for j, part in enumerate(m.content):
            if part is old:
                m.content[j] = new
                return


def _wire(mod: ProviderModule, req: CompletionRequest, cfg: ProviderConfig) -> tuple[str, dict[str, str], bytes]:
    """URL, headers (signed where the provider signs) and the JSON body as bytes."""
    wire = mod.build_request(req, cfg)
    body = encode_json(wire.json)
    sign = getattr(mod, "sign", None)
    headers = sign(wire, body, cfg) if sign is not None else wire.headers
    return wire.url, headers, body


def _retry(retry: RetryPolicy | None, max_retries: int | None) -> RetryPolicy | None:
    if max_retries is None:
        return retry
    return replace(retry or RetryPolicy(), max_retries=max_retries)


def _json(content: bytes, provider: str) -> Any:
    try:
        return json.loads(content)
    except ValueError:
        error: ProviderError = provider_error(
            provider, 502, {"error": {"message": f"the answer is not JSON: {content[:200]!r}"}}
        )
        raise error from None
