"""What the sync and async surfaces share, so the twins cannot drift: defaults, argument types, and
the step from a ``respond`` call's arguments to the work a backend runs.

:mod:`~vlmkit.client.sync` and :mod:`~vlmkit.client.aio` both import this module and never each other.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from vlmkit.chat import Chat
from vlmkit.client.backend import Backend, CancelToken, FragmentCallback
from vlmkit.errors import InvalidSettingError, ModelNotFoundError
from vlmkit.images import ImageHandle
from vlmkit.images.resolve import ResolveOptions, aresolve_images, resolve_images
from vlmkit.prediction import (
    Detail,
    PredictionConfig,
    PredictionResult,
    PreparedImageInfo,
    parse_structured,
    setting_error,
    snake_case,
)
from vlmkit.stream import Work
from vlmkit.wire.openai_chat import chat_from_history

if TYPE_CHECKING:
    from vlmkit.engine import LoadOptions
    from vlmkit.images.fetch import FetchOptions

DEFAULT_TIMEOUT = 60.0
"""Seconds a sync call waits for the next fragment before it gives up (``None``: forever)."""

DEFAULT_TTL = 3600.0
"""Seconds a model stays loaded while idle (``None``: until unloaded)."""

ModelKey = str | os.PathLike[str]
"""What names a model: a catalog key, ``repo/name``, ``provider/name``, a registered key or a .gguf path."""

History = Chat | str | Mapping[str, Any] | list[Any]
"""What ``respond`` takes: a Chat, a user prompt, ``{"messages": [...]}`` or OpenAI-style messages."""

ConfigInput = PredictionConfig | Mapping[str, Any] | None


def default_model_key(backend: Backend) -> str:
    """The model ``vk.llm()`` means with no key: the first loaded one, else the first downloaded vision model."""
    loaded = backend.list_loaded()
    if loaded:
        return loaded[0].key
    downloaded = [m for m in backend.list_downloaded() if m.vision]
    if downloaded:
        return downloaded[0].key
    raise ModelNotFoundError(
        "no model is loaded or downloaded, so there is no default model; pass a key or a path to a .gguf "
        "file, or download one first (`vlmkit get smolvlm-256m`)"
    )


def load_options(config: LoadOptions | Mapping[str, Any] | None) -> LoadOptions | None:
    """``LoadOptions`` from itself, a dict (snake_case or LM Studio's camelCase keys) or None."""
    if config is None:
        return None
    from vlmkit.engine import LoadOptions  # the engine package only when a load config is given

    if isinstance(config, LoadOptions):
        return config
    if not isinstance(config, Mapping):
        raise InvalidSettingError(f"a load config must be LoadOptions or a dict, not {type(config).__name__}")
    names = {f.name for f in dataclasses.fields(LoadOptions)}
    kwargs: dict[str, Any] = {}
    for key, value in config.items():
        name = snake_case(key)
        if name not in names:
            raise InvalidSettingError(f"unknown load setting {key!r}; known: {', '.join(sorted(names))}")
        kwargs[name] = value
    return LoadOptions(**kwargs)


def read_history(history: History, fetch: FetchOptions | None) -> Chat:
    """A private copy of the chat to answer (so later edits by the caller cannot race the backend),
    its images read here: the images named in OpenAI-style messages are fetched or read now."""
    chat = chat_from_history(history)
    return chat.with_images(resolve_images(chat.image_refs, ResolveOptions(fetch=fetch)))


async def aread_history(history: History, fetch: FetchOptions | None) -> Chat:
    """:func:`read_history` for async code: the images are read off the event loop, all at once."""
    chat = chat_from_history(history)
    return chat.with_images(await aresolve_images(chat.image_refs, ResolveOptions(fetch=fetch)))


def prediction_config(config: ConfigInput, response_format: Any) -> PredictionConfig:
    if config is None:
        cfg = PredictionConfig()
    elif isinstance(config, PredictionConfig):
        cfg = config
    elif isinstance(config, Mapping):
        cfg = PredictionConfig.from_dict(config)
    else:
        raise InvalidSettingError(f"config must be a PredictionConfig or a dict, not {type(config).__name__}")
    if cfg.n not in (None, 1):
        raise setting_error("n", f"respond() gives one answer, not n={cfg.n}; call it once for each answer you want")
    if response_format is not None:
        cfg = dataclasses.replace(cfg, response_format=response_format)
    if cfg.response_format is not None:
        cfg.json_schema()  # a bad response_format fails here, in the caller's thread
    return cfg


def prediction_work(backend: Backend, key: str, chat: Chat, config: ConfigInput, response_format: Any) -> Work:
    """What a ``respond`` call asks of ``backend`` (``chat`` read by :func:`read_history` or
    :func:`aread_history`), checked in the caller's thread, ready to run on a worker."""
    cfg = prediction_config(config, response_format)

    def work(on_fragment: FragmentCallback, first_token: Callable[[], None], cancel: CancelToken) -> PredictionResult:
        result = backend.respond(key, chat, cfg, on_fragment=on_fragment, on_first_token=first_token, cancel=cancel)
        if cfg.response_format is not None:  # every backend's reply is parsed here, and only here
            result.parsed = parse_structured(result, cfg.response_format, key)
        return result

    return work


def prepare_work(
    backend: Backend,
    key: str,
    image: Any,
    fetch: FetchOptions | None,
    *,
    detail: Detail | None,
    image_max_tokens: int | None,
    image_min_tokens: int | None,
) -> Callable[[], PreparedImageInfo]:
    """What a ``prepare`` call asks of ``backend``: the budget checked in the caller's thread, the
    image (a handle, or what ``prepare_image`` reads) read and encoded on a worker."""
    cfg = PredictionConfig(detail=detail, image_max_tokens=image_max_tokens, image_min_tokens=image_min_tokens)

    def work() -> PreparedImageInfo:
        handle = image if isinstance(image, ImageHandle) else backend.prepare_image(image, None, fetch=fetch)
        return backend.prepare(key, handle, cfg)

    return work
