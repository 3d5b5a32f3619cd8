"""The SDK over a vlmkit server: ``vk.Client("http://host:port")`` talks to ``vlmkit serve``.

Requests and answers are OpenAI's chat format with vlmkit's extension, written and read by
:mod:`vlmkit.wire.openai_chat`. Images go up once: ``prepare_image`` validates locally, uploads
the bytes to ``/v1/files`` and remembers the id by the image's content identifier, so every later
turn of a chat sends the id, not the megabytes (an image that was never prepared this way is
uploaded on first use). Answers stream back as server-sent events; cancelling closes the
connection and the server stops the generation. The key comes from ``api_key=`` or ``VLMKIT_API_KEY``.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from vlmkit.chat import Chat, ImagePart
from vlmkit.client.backend import CancelToken, FragmentCallback
from vlmkit.client.backends.providers import with_detail
from vlmkit.errors import (
    APIConnectionError,
    AuthenticationError,
    BadRequestError,
    ClientError,
    ModelCapabilityError,
    ModelNotFoundError,
    PredictionError,
    QueueFullError,
    ServerError,
    UnknownFileError,
    VlmkitError,
)
from vlmkit.images import ImageHandle
from vlmkit.prediction import (
    ModelInfo,
    PredictionConfig,
    PredictionFragment,
    PredictionResult,
    PredictionStats,
    PreparedImageInfo,
)
from vlmkit.prediction import StopReason as SR
from vlmkit.providers.streams import DONE, SSEDecoder
from vlmkit.wire.openai_chat import (
    ToolCallAssembler,
    config_to_openai,
    messages_from_chat,
    read_extension,
    stats_from_openai,
)

if TYPE_CHECKING:
    from vlmkit.engine import LoadOptions, ModelListing
    from vlmkit.images.fetch import FetchOptions

PROVIDER = "vlmkit-server"


class RemoteBackend:
    """A :class:`~vlmkit.client.backend.Backend` over HTTP. Thread-safe (one pooled httpx client)."""

    def __init__(self, host: str, *, api_key: str | None = None, timeout: float = 300.0) -> None:
        self.base = host.rstrip("/")
        if not self.base.startswith(("http://", "https://")):
            self.base = "http://" + self.base
        key = api_key if api_key is not None else os.environ.get("VLMKIT_API_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._auth_remedy = _auth_remedy(self.base, "api_key=" if api_key is not None else "VLMKIT_API_KEY", key)
        self._http = httpx.Client(base_url=self.base, headers=headers, timeout=httpx.Timeout(timeout, connect=10.0))
        self._uploaded: dict[str, str] = {}  # image identifier -> file id on the server
        self._lock = threading.Lock()

    # --- models --------------------------------------------------------------------------------

    def load(self, key: str, *, ttl: float | None, options: LoadOptions | None) -> ModelInfo:
        for model in self._request("GET", "/v1/models")["data"]:
            if model["id"] == key and model.get("type") == "gateway":
                return _gateway_info(model)
        body: dict[str, Any] = {"model": key, "ttl": ttl}
        return ModelInfo.from_dict(self._request("POST", "/api/v1/models/load", json=body)["info"])

    def get_info(self, key: str) -> ModelInfo:
        for info in self.list_loaded():
            if info.key == key:
                return info
        return self.load(key, ttl=None, options=None)

    def unload(self, key: str) -> bool:
        return bool(self._request("POST", "/api/v1/models/unload", json={"model": key})["unloaded"])

    def list_loaded(self) -> list[ModelInfo]:
        return [ModelInfo.from_dict(d) for d in self._request("GET", "/api/v1/models")["loaded"]]

    def list_downloaded(self) -> list[ModelListing]:
        from vlmkit.engine import ModelListing

        return [
            ModelListing(
                key=d["key"],
                size_bytes=d["size_bytes"],
                vision=d["vision"],
                architecture=d.get("architecture") or "unknown",
                context_length=d.get("context_length"),
                path=d["path"],
            )
            for d in self._request("GET", "/api/v1/models")["downloaded"]
        ]

    def register(self, key: str, model_path: str | Path, mmproj_path: str | Path | None) -> None:
        raise ClientError(
            f"cannot register {key!r} through a vlmkit server: name the files in the server's config file "
            "(models: NAME: {path: ..., mmproj: ...}) and restart it"
        )

    # --- images --------------------------------------------------------------------------------

    def prepare_image(
        self, src: Any, name: str | None, *, format: str | None = None, fetch: FetchOptions | None = None
    ) -> ImageHandle:
        from vlmkit.images import prepare_image

        handle = prepare_image(src, name, format=format, fetch=fetch)
        self._upload(handle)
        return handle

    def _upload(self, handle: ImageHandle) -> str:
        with self._lock:
            known = self._uploaded.get(handle.identifier)
        if known is not None:
            return known
        stored = self._request(
            "POST",
            "/v1/files",
            content=handle.data,
            params={"filename": handle.name or "image", "purpose": "vision"},
            headers={"Content-Type": handle.mime_type or "application/octet-stream"},
        )
        with self._lock:
            self._uploaded[handle.identifier] = stored["id"]
        return str(stored["id"])

    def _messages(self, chat: Chat) -> list[dict[str, Any]]:
        """The chat in OpenAI's format, each image by the id of its upload."""

        def uploaded(part: ImagePart) -> dict[str, Any]:
            return {"file_id": self._upload(part.image)}

        return messages_from_chat(chat, image=uploaded)

    # --- predictions ---------------------------------------------------------------------------

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
        body: dict[str, Any] = {"model": key, "stream": True, "stream_options": {"include_usage": True}}
        body.update(config_to_openai(config, extensions=True))  # a token cap as detail: the server applies it
        if not isinstance(config.detail, int):
            chat = with_detail(chat, config.detail)
        try:
            body["messages"] = self._messages(chat)
            return self._stream(key, body, config, on_fragment, on_first_token, cancel)
        except UnknownFileError:
            pass
        with self._lock:  # the server forgot our uploads (restarted): upload again, once
            self._uploaded.clear()
        body["messages"] = self._messages(chat)
        return self._stream(key, body, config, on_fragment, on_first_token, cancel)

    def _stream(
        self,
        key: str,
        body: dict[str, Any],
        config: PredictionConfig,
        on_fragment: FragmentCallback,
        on_first_token: Callable[[], None],
        cancel: CancelToken,
    ) -> PredictionResult:
        t0 = time.perf_counter()
        pieces: list[str] = []
        stats: PredictionStats | None = None
        info: ModelInfo | None = None
        usage: dict[str, Any] | None = None
        finish: str | None = None
        t_first: float | None = None
        calls = ToolCallAssembler()
        try:
            with self._http.stream("POST", "/v1/chat/completions", json=body) as response:
                if response.status_code >= 400:
                    response.read()
                    raise _error(response, key, self._auth_remedy)
                cancel.on_cancel(response.close)
                for data in _events(response.iter_lines()):
                    if "error" in data:
                        raise _stream_error(data["error"], key)
                    usage = data.get("usage") or usage
                    got_stats, got_info = read_extension(data)
                    if got_stats is not None:
                        stats, info = got_stats, got_info
                    for choice in data.get("choices") or ():
                        finish = choice.get("finish_reason") or finish
                        calls.feed((choice.get("delta") or {}).get("tool_calls"))
                        text = (choice.get("delta") or {}).get("content")
                        if text:
                            if t_first is None:
                                t_first = time.perf_counter()
                                on_first_token()
                            pieces.append(text)
                            on_fragment(PredictionFragment(text))
                    if cancel.cancelled:
                        break
        except httpx.TransportError as exc:
            if not cancel.cancelled:
                raise APIConnectionError(f"lost the vlmkit server at {self.base}: {exc}", provider=PROVIDER) from exc
        content = "".join(pieces)
        if stats is None:  # a gateway model: only OpenAI's usage and finish reason
            prompt, predicted = (usage or {}).get("prompt_tokens"), (usage or {}).get("completion_tokens")
            stats = stats_from_openai(
                finish, prompt, predicted, started=t0, first_token=t_first, ended=time.perf_counter()
            )
        if cancel.cancelled:
            stats.stop_reason = SR.USER_STOPPED
        return PredictionResult(
            content=content, stats=stats, model_info=info or self.get_info(key), tool_calls=calls.calls()
        )

    # --- plumbing ------------------------------------------------------------------------------

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise APIConnectionError(
                f"cannot reach the vlmkit server at {self.base}: {exc}; is `vlmkit serve` running there?",
                provider=PROVIDER,
            ) from exc
        if response.status_code >= 400:
            body = kwargs.get("json")
            raise _error(response, body.get("model") if isinstance(body, dict) else None, self._auth_remedy)
        return response.json()

    def prepare(self, key: str, image: ImageHandle, config: PredictionConfig) -> PreparedImageInfo:
        raise ModelCapabilityError(
            f"prepare() is not supported for {key!r} through a server ({self.base}): it encodes images in "
            "this process's engine; to have the server encode an image ahead, upload it to POST /v1/files "
            "with a 'model' field naming the model",
            model=key,
        )

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._http.close()


def _events(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    """The JSON events of a server-sent event stream, until ``[DONE]``."""
    decoder = SSEDecoder(PROVIDER)
    for line in lines:
        event = decoder.feed_line(line)
        if event is None:
            continue
        if event.data is DONE:
            return
        yield event.data


def _auth_remedy(base: str, source: str, key: str | None) -> str:
    """What to do when the server answers 401, in the SDK's words: the key is an argument or a variable."""
    if not key:
        return (
            f"the vlmkit server at {base} needs an API key: pass vk.Client({base!r}, api_key=...) or set VLMKIT_API_KEY"
        )
    return (
        f"the vlmkit server at {base} refused the key from {source}: pass the key it was started with "
        "(`vlmkit serve --api-key`, or its config's api_keys) as vk.Client(..., api_key=...) or in VLMKIT_API_KEY"
    )


def _error(response: httpx.Response, model: str | None, auth_remedy: str) -> VlmkitError:
    try:
        err = response.json()["error"]
        message, code, param = str(err["message"]), err.get("code"), err.get("param")
    except Exception:
        message, code, param = response.text[:500] or response.reason_phrase, None, None
    status = response.status_code
    exc: VlmkitError
    if status == 404 and code == "model_not_found":
        exc = ModelNotFoundError(message)
    elif code == "model_not_vision_capable":
        exc = ModelCapabilityError(message, model=model or "")
    elif code == "file_not_found":
        exc = UnknownFileError(message)
    elif status in (400, 413, 422):
        exc = BadRequestError(message)
        exc.status_code = status
    elif status == 429:
        exc = QueueFullError(message, retry_after=float(response.headers.get("retry-after", "1")))
    elif status == 401:
        exc = AuthenticationError(f"{auth_remedy} (the server said: {message})", provider=PROVIDER, status_code=401)
    else:
        exc = ServerError(message, provider=PROVIDER, status_code=status)
    exc.location = param
    return exc


def _stream_error(err: dict[str, Any], model: str) -> VlmkitError:
    message = str(err.get("message", "the server's stream failed"))
    if err.get("code") == "model_not_vision_capable":
        return ModelCapabilityError(message, model=model)
    return PredictionError(message)


def _gateway_info(model: dict[str, Any]) -> ModelInfo:
    return ModelInfo(
        key=model["id"],
        path="",
        mmproj_path=None,
        architecture=f"gateway ({model.get('owned_by', 'provider')})",
        context_length=0,
        vision=bool(model.get("vision")),
        size_bytes=0,
    )
