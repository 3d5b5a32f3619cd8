"""The SDK over a vlmkit server: ``vk.Client("http://host:port")`` talks to ``vlmkit serve``.

Images go up once: ``prepare_image`` validates locally, uploads the bytes to ``/v1/files`` and
remembers the id by the image's content identifier, so every later turn of a chat sends the id,
not the megabytes (an image that was never prepared this way is uploaded on first use). Answers
stream back as server-sent events; cancelling closes the connection and the server stops the
generation. The key comes from ``api_key=`` or ``VLMKIT_API_KEY``.
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
from vlmkit.client.backends.providers import openai_params, with_detail
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
    VlmkitError,
)
from vlmkit.images import ImageHandle
from vlmkit.prediction import (
    ModelInfo,
    PredictionConfig,
    PredictionFragment,
    PredictionResult,
    PredictionStats,
)
from vlmkit.prediction import StopReason as SR

if TYPE_CHECKING:
    from vlmkit.engine import LoadOptions, ModelListing
    from vlmkit.images.fetch import FetchOptions

_FINISH = {"stop": SR.EOS_FOUND, "length": SR.MAX_PREDICTED_TOKENS_REACHED}
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
        return _model_info(self._request("POST", "/api/v1/models/load", json=body)["info"])

    def get_info(self, key: str) -> ModelInfo:
        for info in self.list_loaded():
            if info.key == key:
                return info
        return self.load(key, ttl=None, options=None)

    def unload(self, key: str) -> bool:
        return bool(self._request("POST", "/api/v1/models/unload", json={"model": key})["unloaded"])

    def list_loaded(self) -> list[ModelInfo]:
        return [_model_info(d) for d in self._request("GET", "/api/v1/models")["loaded"]]

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
        out: list[dict[str, Any]] = []
        for m in chat.messages:
            parts: list[dict[str, Any]] = []
            for p in m.content:
                if isinstance(p, ImagePart):
                    ref: dict[str, Any] = {"file_id": self._upload(p.image)}
                    if p.detail:
                        ref["detail"] = p.detail
                    parts.append({"type": "image_url", "image_url": ref})
                else:
                    parts.append({"type": "text", "text": p.text})
            out.append({"role": m.role, "content": parts})
        return out

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
        body.update(openai_params(config))
        if isinstance(config.detail, int):
            body["detail"] = config.detail  # a token cap: the server applies it to its local models
        else:
            chat = with_detail(chat, config.detail)
        for name in ("top_k", "min_p", "repeat_penalty"):
            if getattr(config, name) is not None:
                body[name] = getattr(config, name)
        try:
            body["messages"] = self._messages(chat)
            return self._stream(key, body, config, on_fragment, on_first_token, cancel)
        except BadRequestError as exc:
            if "no uploaded file has the id" not in str(exc):
                raise
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
        final: dict[str, Any] = {}
        usage: dict[str, Any] | None = None
        finish: str | None = None
        t_first: float | None = None
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
                    if "stats" in data:
                        final = data
                    for choice in data.get("choices") or ():
                        finish = choice.get("finish_reason") or finish
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
        stats = _stats(final, usage, finish, cancel.cancelled, t0, t_first)
        info = _model_info(final["model_info"]) if final.get("model_info") else self.get_info(key)
        return PredictionResult(content=content, stats=stats, model_info=info)

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

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._http.close()


def _events(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    import json

    for line in lines:
        if not line.startswith("data:"):
            continue
        payload = line[5:].strip()
        if payload == "[DONE]":
            return
        yield json.loads(payload)


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


def _stats(
    final: dict[str, Any],
    usage: dict[str, Any] | None,
    finish: str | None,
    cancelled: bool,
    t0: float,
    t_first: float | None,
) -> PredictionStats:
    t_end = time.perf_counter()
    raw = final.get("stats")
    if isinstance(raw, dict):
        known = set(PredictionStats.__dataclass_fields__)
        stats = PredictionStats(**{k: v for k, v in raw.items() if k in known and k != "stop_reason"})
        stats.stop_reason = SR(raw.get("stop_reason", "failed"))
    else:  # a gateway model: only OpenAI's usage and finish reason
        predicted = int((usage or {}).get("completion_tokens", 0))
        stats = PredictionStats(
            stop_reason=_FINISH.get(finish or "", SR.FAILED),
            prompt_tokens=int((usage or {}).get("prompt_tokens", 0)),
            predicted_tokens=predicted,
            time_to_first_token_sec=(t_first - t0) if t_first is not None else None,
            tokens_per_second=predicted / (t_end - t_first) if predicted and t_first and t_end > t_first else None,
            total_time_sec=t_end - t0,
        )
    if cancelled:
        stats.stop_reason = SR.USER_STOPPED
    return stats


def _model_info(d: dict[str, Any]) -> ModelInfo:
    known = set(ModelInfo.__dataclass_fields__)
    return ModelInfo(**{k: v for k, v in d.items() if k in known})


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
