"""``provider/model`` → the provider module, its address, key and image policy.

Keys and addresses come from arguments first, then the usual environment variables
(``OPENAI_API_KEY``, ``ANTHROPIC_API_KEY``, ``GEMINI_API_KEY``, ``AWS_*``, ``XAI_API_KEY``, ...).
The OpenAI-compatible family is one table of defaults over :mod:`vlmkit.providers.openai`.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from vlmkit.errors import AuthenticationError, BadRequestError
from vlmkit.images import ANTHROPIC, BEDROCK, GEMINI, LLAMA_CPP, OLLAMA, OPENAI, ImageFormat, ImagePolicy
from vlmkit.providers.base import ProviderConfig, ProviderModule

MB = 1024 * 1024


@dataclass(frozen=True)
class Route:
    kind: str
    """The module under ``vlmkit.providers`` that translates for this provider."""
    api_base: str | None
    key_env: tuple[str, ...]
    base_env: tuple[str, ...]
    policy: ImagePolicy
    fetches_urls: bool
    key_required: bool = True
    options: Mapping[str, Any] = field(default_factory=dict)


def _openai_like(
    api_base: str | None,
    key_env: tuple[str, ...],
    base_env: tuple[str, ...],
    policy: ImagePolicy = OPENAI,
    *,
    fetches_urls: bool = True,
    key_required: bool = True,
    **options: Any,
) -> Route:
    opts = {"detail": False, "stream_usage": True, "max_tokens_field": "max_tokens", **options}
    return Route("openai", api_base, key_env, base_env, policy, fetches_urls, key_required, opts)


_JPEG_PNG = frozenset({ImageFormat.JPEG, ImageFormat.PNG})

# Where each provider's documentation differs from OpenAI's image rules, the policy says so: xAI reads
# JPEG and PNG only (20 MiB), Mistral 10 MB, Groq 4 MB of base64 and 33 megapixels.
OPENAI_COMPATIBLE: dict[str, Route] = {
    "openai": _openai_like(
        "https://api.openai.com/v1",
        ("OPENAI_API_KEY",),
        ("OPENAI_BASE_URL", "OPENAI_API_BASE"),
        detail=True,
        max_tokens_field="max_completion_tokens",
        n=True,
    ),
    "azure": _openai_like(
        None,
        ("AZURE_API_KEY", "AZURE_OPENAI_API_KEY"),
        ("AZURE_API_BASE", "AZURE_OPENAI_ENDPOINT"),
        detail=True,
        auth="api-key",
        n=True,
    ),
    "xai": _openai_like(
        "https://api.x.ai/v1",
        ("XAI_API_KEY",),
        ("XAI_API_BASE",),
        OPENAI.replace(name="xai", formats=_JPEG_PNG, max_bytes=20 * MB),
        detail=True,
    ),
    "mistral": _openai_like(
        "https://api.mistral.ai/v1",
        ("MISTRAL_API_KEY",),
        ("MISTRAL_API_BASE",),
        OPENAI.replace(name="mistral", max_bytes=10 * MB),
        stream_usage=False,
    ),
    "groq": _openai_like(
        "https://api.groq.com/openai/v1",
        ("GROQ_API_KEY",),
        ("GROQ_API_BASE",),
        OPENAI.replace(name="groq", max_base64_bytes=4 * MB, max_pixels=33_000_000),
        stream_usage=False,
    ),
    "openrouter": _openai_like(
        "https://openrouter.ai/api/v1", ("OPENROUTER_API_KEY",), ("OPENROUTER_API_BASE",), detail=True
    ),
    "deepseek": _openai_like("https://api.deepseek.com/v1", ("DEEPSEEK_API_KEY",), ("DEEPSEEK_API_BASE",)),
    "together_ai": _openai_like(
        "https://api.together.xyz/v1",
        ("TOGETHER_API_KEY", "TOGETHERAI_API_KEY"),
        ("TOGETHER_API_BASE", "TOGETHERAI_API_BASE"),
        stream_usage=False,
    ),
    # Local servers: vlmkit fetches URLs for them (a server should not fetch on a client's behalf), and
    # llama.cpp-based ones get what stb_image decodes.
    "lm_studio": _openai_like(
        "http://localhost:1234/v1",
        ("LM_STUDIO_API_KEY",),
        ("LM_STUDIO_API_BASE",),
        LLAMA_CPP.replace(name="lm_studio"),
        fetches_urls=False,
        key_required=False,
    ),
    "llama_cpp": _openai_like(
        "http://localhost:8080/v1",
        ("LLAMA_CPP_API_KEY",),
        ("LLAMA_CPP_API_BASE",),
        LLAMA_CPP,
        fetches_urls=False,
        key_required=False,
    ),
    "hosted_vllm": _openai_like(
        "http://localhost:8000/v1",
        ("HOSTED_VLLM_API_KEY", "VLLM_API_KEY"),
        ("HOSTED_VLLM_API_BASE", "VLLM_API_BASE"),
        fetches_urls=False,
        key_required=False,
        n=True,
        image_uuid=True,  # vLLM keys its encoder and prefix caches on a part's "uuid" when given one
    ),
}
OPENAI_COMPATIBLE["vllm"] = OPENAI_COMPATIBLE["hosted_vllm"]
OPENAI_COMPATIBLE["together"] = OPENAI_COMPATIBLE["together_ai"]

ROUTES: dict[str, Route] = {
    **OPENAI_COMPATIBLE,
    "anthropic": Route(
        "anthropic",
        "https://api.anthropic.com",
        ("ANTHROPIC_API_KEY",),
        ("ANTHROPIC_BASE_URL", "ANTHROPIC_API_BASE"),
        ANTHROPIC,
        fetches_urls=True,
    ),
    "gemini": Route(
        "gemini",
        "https://generativelanguage.googleapis.com",
        ("GEMINI_API_KEY", "GOOGLE_API_KEY"),
        ("GEMINI_API_BASE",),
        GEMINI,
        fetches_urls=False,
    ),
    "vertex_ai": Route(
        "vertex",
        None,
        ("VERTEXAI_ACCESS_TOKEN", "GOOGLE_OAUTH_ACCESS_TOKEN"),
        ("VERTEXAI_API_BASE", "VERTEX_AI_API_BASE"),
        GEMINI,
        fetches_urls=False,
        key_required=False,
    ),
    "bedrock": Route(
        "bedrock", None, ("AWS_BEARER_TOKEN_BEDROCK",), ("BEDROCK_API_BASE",), BEDROCK, False, key_required=False
    ),
    "ollama": Route(
        "ollama",
        "http://localhost:11434",
        ("OLLAMA_API_KEY",),
        ("OLLAMA_API_BASE", "OLLAMA_HOST"),
        OLLAMA,
        fetches_urls=False,
        key_required=False,
    ),
    "local": Route("local", None, (), (), LLAMA_CPP, False, key_required=False),
}
ROUTES["ollama_chat"] = ROUTES["ollama"]
ROUTES["vertex"] = ROUTES["vertex_ai"]
ROUTES["google"] = ROUTES["gemini"]

_INFERRED = (
    (("gpt-", "o1", "o3", "o4", "chatgpt-"), "openai"),
    (("claude-",), "anthropic"),
    (("gemini-",), "gemini"),
    (("grok-",), "xai"),
)


def split_model(model: str) -> tuple[str, str]:
    """``"provider/name"`` → ``(provider, name)``; a bare well-known name gets its provider."""
    if not isinstance(model, str) or not model.strip():
        raise BadRequestError("model must be a non-empty string such as 'openai/gpt-4o'")
    provider, sep, name = model.partition("/")
    if sep and provider in ROUTES and name:
        return provider, name
    for prefixes, inferred in _INFERRED:
        if model.startswith(prefixes):
            return inferred, model
    known = ", ".join(sorted(ROUTES))
    if sep and name:
        raise BadRequestError(f"unknown provider {provider!r} in model {model!r}; known providers: {known}")
    raise BadRequestError(f"model {model!r} names no provider: write 'provider/{model}' (providers: {known})")


def _env(names: tuple[str, ...]) -> str | None:
    for name in names:
        value = os.environ.get(name)
        if value:
            return value
    return None


def resolve(
    model: str,
    *,
    api_base: str | None = None,
    api_key: str | None = None,
    headers: Mapping[str, str] | None = None,
    options: Mapping[str, Any] | None = None,
) -> ProviderConfig:
    """The configuration for ``model``: arguments first, then environment variables, then defaults.

    ``options`` takes the provider settings LiteLLM's callers know: ``api_version`` (Azure),
    ``aws_region_name``, ``aws_access_key_id``, ``aws_secret_access_key``, ``aws_session_token``,
    ``aws_profile_name`` (Bedrock), ``vertex_project``, ``vertex_location`` (Vertex AI); and for the
    image URLs and identities of any provider: ``image_urls`` (``"forward"``: send http(s) URLs as they
    are, for a provider that fetches them itself; ``"fetch"``: vlmkit fetches them) and ``image_uuid``
    (send each image's content identity as the part's ``uuid``, as vLLM reads it; on for vLLM).
    """
    provider, name = split_model(model)
    route = ROUTES[provider]
    opts: dict[str, Any] = {**route.options}
    given = dict(options or {})
    fetches_urls = _image_urls(provider, route, given.pop("image_urls", None))
    if given.get("image_uuid") is not None:
        opts["image_uuid"] = bool(given.pop("image_uuid"))
    key = api_key or _env(route.key_env)
    base = api_base or _env(route.base_env) or route.api_base
    if route.kind == "vertex":
        base, key = _vertex(opts, given, base, key)
    elif route.kind == "bedrock":
        name = name.removeprefix("converse/")
        base = _bedrock(opts, given, base, key)
    elif provider == "azure":
        opts["api_version"] = given.pop("api_version", None) or _env(("AZURE_API_VERSION", "OPENAI_API_VERSION"))
        opts["api_version"] = opts["api_version"] or "2024-10-21"
    elif given.get("api_version"):
        opts["api_version"] = given.pop("api_version")
    if route.kind == "local":
        base = "local"
    if base is None:
        envs = " or ".join(route.base_env)
        raise BadRequestError(f"{provider} needs an address: pass api_base= or set {envs}")
    if route.key_required and not key:
        envs = " or ".join(route.key_env)
        raise AuthenticationError(f"no API key for {provider}: pass api_key= or set {envs}", provider=provider)
    return ProviderConfig(
        provider=provider,
        kind=route.kind,
        model=name,
        api_base=base,
        api_key=key,
        policy=route.policy,
        fetches_urls=fetches_urls,
        options=opts,
        headers=dict(headers or {}),
    )


_FORWARDS = frozenset({"openai", "anthropic"})
"""The wire formats that carry an http(s) image URL for the provider to fetch."""


def _image_urls(provider: str, route: Route, value: Any) -> bool:
    """Whether image URLs go to ``provider`` as they are (``forward``) or as fetched bytes (``fetch``)."""
    if value is None:
        return route.fetches_urls
    if value not in ("fetch", "forward"):
        raise BadRequestError(f"image_urls must be 'fetch' or 'forward', not {value!r}")
    if value == "forward" and route.kind not in _FORWARDS:
        raise BadRequestError(
            f"{provider} cannot fetch image URLs itself, so they cannot be forwarded to it; use image_urls: fetch"
        )
    return bool(value == "forward")


def _vertex(opts: dict[str, Any], given: dict[str, Any], base: str | None, key: str | None) -> tuple[str, str | None]:
    from vlmkit.providers.vertex import default_api_base

    project = given.get("vertex_project") or _env(("VERTEXAI_PROJECT", "VERTEX_PROJECT", "GOOGLE_CLOUD_PROJECT"))
    location = given.get("vertex_location") or _env(("VERTEXAI_LOCATION", "VERTEX_LOCATION", "GOOGLE_CLOUD_LOCATION"))
    if not project:
        raise BadRequestError("vertex_ai needs a project: pass vertex_project= or set VERTEXAI_PROJECT")
    opts["project"] = project
    opts["location"] = location or "us-central1"
    if not key:
        key = _google_token()
    return base or default_api_base(opts["location"]), key


def _google_token() -> str:
    """An OAuth access token from Application Default Credentials (needs the optional google-auth)."""
    try:
        auth: Any = importlib.import_module("google.auth")
        requests_transport: Any = importlib.import_module("google.auth.transport.requests")
    except ImportError:
        raise AuthenticationError(
            "no access token for vertex_ai: pass api_key=<OAuth access token>, set VERTEXAI_ACCESS_TOKEN "
            "(e.g. from `gcloud auth print-access-token`), or install google-auth for Application Default Credentials",
            provider="vertex_ai",
        ) from None
    credentials, _ = auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])
    credentials.refresh(requests_transport.Request())
    return cast(str, credentials.token)


def _bedrock(opts: dict[str, Any], given: dict[str, Any], base: str | None, key: str | None) -> str:
    from vlmkit.providers.bedrock import default_api_base

    region = given.get("aws_region_name") or _env(("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_REGION_NAME"))
    opts["region"] = region or "us-east-1"
    if given.get("aws_bucket_owner"):
        opts["bucket_owner"] = given["aws_bucket_owner"]
    if not key:
        opts["credentials"] = _aws_credentials(given)
    return base or default_api_base(opts["region"])


_aws_cache: dict[tuple[str | None, ...], Any] = {}


def _aws_credentials(given: Mapping[str, Any]) -> Any:
    """botocore credentials: explicit keys, else botocore's own chain (env, profile, ...), cached."""
    from botocore.credentials import Credentials

    access, secret = given.get("aws_access_key_id"), given.get("aws_secret_access_key")
    if access and secret:
        return Credentials(access, secret, given.get("aws_session_token"))
    profile = given.get("aws_profile_name")
    env_key = (
        profile,
        os.environ.get("AWS_ACCESS_KEY_ID"),
        os.environ.get("AWS_SECRET_ACCESS_KEY"),
        os.environ.get("AWS_SESSION_TOKEN"),
        os.environ.get("AWS_PROFILE"),
    )
    if env_key not in _aws_cache:
        import botocore.session

        session = botocore.session.Session(profile=profile)
        _aws_cache[env_key] = session.get_credentials()
    return _aws_cache[env_key]


_modules: dict[str, ProviderModule] = {}


def module(kind: str) -> ProviderModule:
    """The provider module for ``kind``, imported on first use."""
    found = _modules.get(kind)
    if found is None:
        found = _modules[kind] = cast(ProviderModule, importlib.import_module(f"vlmkit.providers.{kind}"))
    return found
