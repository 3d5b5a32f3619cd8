"""Cloud and remote-API models under the SDK: ``vk.llm("openai/gpt-4o").respond(chat)``.

:class:`ProviderBackend` adapts :func:`vlmkit.providers.completion` to the
:class:`~vlmkit.client.backend.Backend` protocol: the chat goes as it is (the providers layer renders
each image for the provider), the settings as OpenAI's parameters (:mod:`vlmkit.wire.openai_chat`
writes them), and the streamed chunks come back
as fragments and a :class:`~vlmkit.prediction.PredictionResult`, so nothing above changes.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlmkit.chat import Chat, ImagePart, MediaPart
from vlmkit.client.backend import CancelToken, FragmentCallback
from vlmkit.errors import ClientError, InvalidSettingError, ModelCapabilityError
from vlmkit.images import ImageHandle
from vlmkit.prediction import (
    Detail,
    ModelInfo,
    PredictionConfig,
    PredictionFragment,
    PredictionResult,
    PreparedImageInfo,
    StopReason,
    setting_error,
)
from vlmkit.providers.response import StreamedAnswer
from vlmkit.wire.openai_chat import config_to_openai, stats_from_openai

if TYPE_CHECKING:
    from vlmkit.engine import LoadOptions, ModelListing
    from vlmkit.images.fetch import FetchOptions


def is_provider_model(key: str) -> bool:
    """True for ``provider/name`` with a provider vlmkit knows (``local/`` excluded: that is the engine)."""
    provider, sep, name = key.partition("/")
    if not (sep and name) or provider == "local":
        return False
    try:
        from vlmkit.providers import ROUTES
    except ImportError:  # a build without the providers layer
        return False
    return provider in ROUTES


class ProviderBackend:
    """Models behind an HTTP API (``provider/name``). Nothing is loaded: a model is ready once its
    provider is configured (address and key, from arguments or the usual environment variables)."""

    def __init__(self, **options: Any) -> None:
        self.options = options
        """Passed to every ``completion`` call: ``api_key``, ``api_base``, ``timeout``, ``fetch``, ..."""
        self._used: dict[str, ModelInfo] = {}
        self._lock = threading.Lock()

    def load(self, key: str, *, ttl: float | None, options: LoadOptions | None) -> ModelInfo:
        from vlmkit.providers.capabilities import supports_vision
        from vlmkit.providers.registry import resolve

        cfg = resolve(key, api_base=self.options.get("api_base"), api_key=self.options.get("api_key"))
        info = ModelInfo(
            key=key,
            path=key,
            mmproj_path=None,
            architecture=cfg.provider,
            context_length=0,  # not published by the APIs: 0 means unknown
            vision=supports_vision(key),
            size_bytes=0,
        )
        with self._lock:
            self._used[key] = info
        return info

    def get_info(self, key: str) -> ModelInfo:
        with self._lock:
            info = self._used.get(key)
        return info or self.load(key, ttl=None, options=None)

    def unload(self, key: str) -> bool:
        with self._lock:
            return self._used.pop(key, None) is not None

    def list_loaded(self) -> list[ModelInfo]:
        with self._lock:
            return list(self._used.values())

    def list_downloaded(self) -> list[ModelListing]:
        return []

    def register(self, key: str, model_path: str | Path, mmproj_path: str | Path | None) -> None:
        raise ClientError(f"{key!r} names a provider's model; only local GGUF files can be registered")

    def prepare_image(
        self, src: Any, name: str | None, *, format: str | None = None, fetch: FetchOptions | None = None
    ) -> ImageHandle:
        from vlmkit.images import prepare_image

        return prepare_image(src, name, format=format, fetch=fetch)

    def respond(
        self,
        key: str,
        chat: Chat,
        config: PredictionConfig,
        *,
        on_fragment: FragmentCallback,
        on_first_token: Callable[[], None],
        cancel: CancelToken,
    ) -> PredictionResult:
        from vlmkit.providers import completion, sent_images

        t0 = time.perf_counter()
        refuse_token_bounds(config)
        chat = with_detail(chat, config.detail)
        stream = completion(key, chat, stream=True, **self.options, **config_to_openai(config))
        cancel.on_cancel(stream.close)
        answer = StreamedAnswer()
        t_first: float | None = None
        try:
            for chunk in stream:
                for text in answer.feed(chunk):
                    if t_first is None:
                        t_first = time.perf_counter()
                        on_first_token()
                    on_fragment(PredictionFragment(text))
                if cancel.cancelled:
                    break
        except Exception:
            if not cancel.cancelled:  # closing the stream to cancel it may break the read: that is expected
                raise
        finally:
            with contextlib.suppress(Exception):
                stream.close()
        info = self.get_info(key)
        result = _result(key, answer.text, config, answer.finish, answer.usage, cancel.cancelled, t0, t_first, info)
        result.tool_calls = answer.tool_calls()
        result.sent_images = sent_images(key, chat, **self.options)  # for prediction.boxes
        return result

    def prepare(self, key: str, image: ImageHandle, config: PredictionConfig) -> PreparedImageInfo:
        raise ModelCapabilityError(
            f"prepare() is not supported for {key!r}: a provider's model encodes images on the provider's "
            "side, with each request; send the image with the question instead",
            model=key,
        )

    def close(self) -> None:
        with self._lock:
            self._used.clear()


def refuse_token_bounds(config: PredictionConfig) -> None:
    """The image token bounds are the embedded engine's: a provider's model refuses them."""
    for name in ("image_max_tokens", "image_min_tokens"):
        if getattr(config, name) is not None:
            raise setting_error(
                name,
                f"{name} is an image token bound, which only the embedded engine applies; "
                "provider models take detail 'low', 'high' or 'auto'",
            )


def with_detail(chat: Chat, detail: Detail | None) -> Chat:
    """``chat`` with a config's ``detail`` on every image that does not set its own."""
    if detail is None:
        return chat
    if not isinstance(detail, str):
        raise InvalidSettingError(
            f"detail={detail} is a token cap, which only the embedded engine applies; "
            "provider models take 'low', 'high' or 'auto'"
        )
    out = chat.copy()
    for message in out.messages:
        message.content = [
            replace(part, detail=detail) if isinstance(part, (ImagePart, MediaPart)) and part.detail is None else part
            for part in message.content
        ]
    return out


def _result(
    key: str,
    content: str,
    config: PredictionConfig,
    finish: str | None,
    usage: Any,
    cancelled: bool,
    t0: float,
    t_first: float | None,
    info: ModelInfo,
) -> PredictionResult:
    stats = stats_from_openai(
        finish,
        usage.prompt_tokens if usage is not None else 0,
        usage.completion_tokens if usage is not None else 0,
        started=t0,
        first_token=t_first,
        ended=time.perf_counter(),
    )
    if cancelled:
        stats.stop_reason = StopReason.USER_STOPPED
    return PredictionResult(content=content, stats=stats, model_info=info)
