"""``completion`` and ``acompletion``: one call for every provider.

The path of a call: resolve ``provider/model`` (registry) → read the OpenAI-format messages and
settings (:mod:`vlmkit.wire.openai_chat`: pure, every image a reference) → read the images
(:mod:`vlmkit.images.resolve`: files, data URLs, and safe fetches of the URLs the provider cannot
fetch itself) → build the neutral request (request) → let the provider module build the wire
request, rendering every image with the provider's policy → send it through the shared transport →
translate the answer (or stream) back into OpenAI's shapes. Sync and async differ only in how they
wait.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Literal, cast, overload

from vlmkit.chat import Chat
from vlmkit.errors import BadRequestError, ProviderError
from vlmkit.images.render import needs_change
from vlmkit.images.resolve import ResolveOptions, aresolve_images, resolve_images
from vlmkit.prediction import PredictionConfig
from vlmkit.providers.base import ProviderConfig, ProviderModule
from vlmkit.providers.jsonbody import encode_json
from vlmkit.providers.registry import module, resolve
from vlmkit.providers.request import CompletionRequest, Params, request_messages, request_params
from vlmkit.providers.response import ChatCompletion, merged
from vlmkit.providers.status import provider_error
from vlmkit.providers.streams import AsyncCompletionStream, AsyncRepeatedStream, CompletionStream, RepeatedStream
from vlmkit.providers.transport import RetryPolicy, Transport, default_transport
from vlmkit.wire import openai_chat

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
        "image_urls",
        "image_uuid",
    }
)
_IGNORED = frozenset({"stream_options"})
_KNOWN = openai_chat.OPENAI_SETTINGS | {"user"}


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
    args = (model, messages, stream, api_base or base_url, api_key, extra_headers, extra_body, params)
    cfg, req, mod = _start(*args, fetch=fetch)
    asks = _asks(req, cfg)
    answers: list[Any]
    if cfg.kind == "local":
        from vlmkit.providers import local

        answers = [local.completion(ask, cfg) for ask in asks]
    else:
        url, headers, body = _wire(mod, asks[0], cfg)
        sender = transport or default_transport()
        policy = _retry(retry, max_retries)
        answers = []
        for ask in asks:
            response = sender.send(cfg.provider, url, headers, body, stream=stream, timeout=timeout, retry=policy)
            if stream:
                answers.append(CompletionStream(response, mod.stream_parser(ask, cfg), mod.STREAM_FORMAT, cfg.provider))
            else:
                answers.append(mod.parse_response(_json(response.content, cfg.provider), ask, cfg))
    return cast(ChatCompletion | CompletionStream, _joined(answers, stream))


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

    cfg, mod, chat, settings = _read(model, messages, stream, api_base or base_url, api_key, extra_headers, params)
    chat = chat.with_images(await aresolve_images(chat.image_refs, _reading(cfg, fetch)))
    asks = _asks(_request(cfg, chat, settings, stream, extra_body), cfg)
    answers: list[Any] = []
    if cfg.kind == "local":
        from vlmkit.providers import local

        answers = [await local.acompletion(ask, cfg) for ask in asks]
        return cast(ChatCompletion | AsyncCompletionStream, _ajoined(answers, stream))
    req = asks[0]
    if _renders_pixels(req, cfg):
        url, headers, body = await anyio.to_thread.run_sync(lambda: _wire(mod, req, cfg))
    else:
        url, headers, body = _wire(mod, req, cfg)
    sender = transport or default_transport()
    policy = _retry(retry, max_retries)
    for ask in asks:
        response = await sender.asend(cfg.provider, url, headers, body, stream=stream, timeout=timeout, retry=policy)
        if stream:
            answers.append(
                AsyncCompletionStream(response, mod.stream_parser(ask, cfg), mod.STREAM_FORMAT, cfg.provider)
            )
        else:
            answers.append(mod.parse_response(_json(response.content, cfg.provider), ask, cfg))
    return cast(ChatCompletion | AsyncCompletionStream, _ajoined(answers, stream))


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
    *,
    fetch: FetchOptions | None = None,
) -> tuple[ProviderConfig, CompletionRequest, ProviderModule]:
    """The call read, its images read (here and now: the sync way), and the neutral request built."""
    cfg, mod, chat, settings = _read(model, messages, stream, api_base, api_key, extra_headers, params)
    chat = chat.with_images(resolve_images(chat.image_refs, _reading(cfg, fetch)))
    return cfg, _request(cfg, chat, settings, stream, extra_body), mod


def _read(
    model: str,
    messages: Any,
    stream: bool,
    api_base: str | None,
    api_key: str | None,
    extra_headers: Mapping[str, str] | None,
    params: Mapping[str, Any],
) -> tuple[ProviderConfig, ProviderModule, Chat, Settings]:
    """The provider, and the call's messages and settings read (pure: no image is read yet)."""
    options = {k: v for k, v in params.items() if k in PROVIDER_OPTIONS}
    settings = {k: v for k, v in params.items() if k not in PROVIDER_OPTIONS and k not in _IGNORED}
    if not isinstance(stream, bool):
        raise BadRequestError(f"stream must be True or False, not {stream!r}")
    cfg = resolve(model, api_base=api_base, api_key=api_key, headers=extra_headers, options=options)
    unknown = set(settings) - _KNOWN
    if unknown:
        raise BadRequestError(
            f"unknown parameter(s) {', '.join(sorted(unknown))}; pass provider-specific fields in extra_body={{...}}"
        )
    user = settings.get("user")
    if user is not None and not isinstance(user, str):
        raise BadRequestError(f"user must be a string, not {user!r}")
    config = openai_chat.config_from_openai(settings, extensions=False)
    return cfg, module(cfg.kind), openai_chat.to_chat(messages), (config, request_params(config, user))


Settings = tuple[PredictionConfig, Params]
"""A call's settings, checked, and the provider modules' view of them."""


def _request(
    cfg: ProviderConfig, chat: Chat, settings: Settings, stream: bool, extra_body: Mapping[str, Any] | None
) -> CompletionRequest:
    config, params = settings
    return CompletionRequest(
        cfg.model,
        request_messages(chat, cfg.provider),
        params,
        stream,
        dict(extra_body or {}),
        tuple(config.tools),
        config.tool_choice if not isinstance(config.tool_choice, str) else None,
        config.parallel_tool_calls,
        config.n or 1,
    )


def _asks(req: CompletionRequest, cfg: ProviderConfig) -> list[CompletionRequest]:
    """The requests to send for ``req.n`` choices: ``req`` itself where the provider takes ``n``,
    else ``n`` requests of one choice each (sent one after the other: their answers are the choices)."""
    if req.n == 1 or cfg.options.get("n"):
        return [req]
    return [replace(req, n=1)] * req.n


def _joined(answers: list[Any], stream: bool) -> Any:
    if len(answers) == 1:
        return answers[0]
    return RepeatedStream(answers) if stream else merged(answers)


def _ajoined(answers: list[Any], stream: bool) -> Any:
    if len(answers) == 1:
        return answers[0]
    return AsyncRepeatedStream(answers) if stream else merged(answers)


def _reading(cfg: ProviderConfig, fetch: FetchOptions | None) -> ResolveOptions:
    """How a call reads its images: URLs stay URLs for the providers that fetch them themselves."""
    return ResolveOptions(fetch=fetch, keep_urls=cfg.fetches_urls)


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


def request_for(
    model: str,
    messages: Any,
    *,
    api_base: str | None = None,
    api_key: str | None = None,
    fetch: FetchOptions | None = None,
    **params: Any,
) -> tuple[ProviderConfig, CompletionRequest, ProviderModule]:
    """What :func:`completion` would send, read and built but not sent: the provider, the neutral
    request, and the module whose ``build_request`` / ``parse_response`` translate it (for callers
    that send it their own way, such as a provider's batch API)."""
    return _start(model, messages, False, api_base, api_key, None, None, params, fetch=fetch)
