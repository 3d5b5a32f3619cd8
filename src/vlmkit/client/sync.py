"""The sync API: ``with vk.Client() as client: client.llm.model(...)``, and its model handle :class:`LLM`.

A handle names a model its client has loaded. It holds no engine state of its own, so a handle
stays valid when the model is unloaded after its idle TTL: the next call loads it again.
The async twin is :mod:`vlmkit.client.aio`; what the two share is in :mod:`vlmkit.client.common`.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlmkit.chat import Chat
from vlmkit.client import act as agent
from vlmkit.client.backend import Backend, FragmentCallback
from vlmkit.client.backends.factory import make_backend
from vlmkit.client.common import (
    DEFAULT_TIMEOUT,
    DEFAULT_TTL,
    ConfigInput,
    History,
    ModelKey,
    default_model_key,
    load_options,
    prediction_work,
    prepare_work,
    read_history,
)
from vlmkit.errors import ClientClosedError, ModelNotFoundError
from vlmkit.images import ImageHandle
from vlmkit.prediction import Detail, ModelInfo, PredictionConfig, PredictionResult, PreparedImageInfo
from vlmkit.stream import PredictionStream

if TYPE_CHECKING:
    from collections.abc import Mapping

    from vlmkit.engine import LoadOptions, ModelListing
    from vlmkit.images.fetch import FetchOptions


class Client:
    """A connection to what runs the models: with no ``host``, the embedded engine in this process.

    ``host`` is the address of a ``vlmkit serve`` (``"http://127.0.0.1:8000"``), and ``api_key`` the key
    it was started with (default: the ``VLMKIT_API_KEY`` environment variable). ``timeout`` bounds the
    wait between fragments of a sync prediction. ``models_dir`` overrides where downloaded models are
    found (default ``$VLMKIT_HOME/models``). ``backend`` plugs in any
    :class:`~vlmkit.client.backend.Backend`. ``fetch`` governs how http(s) images named in
    OpenAI-style messages are fetched (an allow-list for hosts on a private network, limits).
    """

    def __init__(
        self,
        host: str | None = None,
        *,
        api_key: str | None = None,
        models_dir: str | Path | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        backend: Backend | None = None,
        fetch: FetchOptions | None = None,
    ) -> None:
        self.host = host
        self.timeout = timeout
        self.fetch = fetch
        self._backend = backend if backend is not None else make_backend(host, models_dir=models_dir, api_key=api_key)
        self._closed = False
        self._lock = threading.Lock()
        self._streams: weakref.WeakSet[PredictionStream] = weakref.WeakSet()
        self.llm = LlmNamespace(self)
        self.files = FilesNamespace(self)

    def list_downloaded_models(self) -> list[ModelListing]:
        """Models on this machine, with size and whether each supports vision."""
        return self._open_backend().list_downloaded()

    def close(self) -> None:
        """Cancel this client's running predictions and unload its models. Closing twice is harmless."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        for stream in list(self._streams):
            stream.cancel()
        self._backend.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self.host or 'in-process engine'}{', closed' if self._closed else ''})"

    def _open_backend(self) -> Backend:
        if self._closed:
            raise ClientClosedError("this client is closed; create a new vk.Client(), or use vk.llm(...)")
        return self._backend


class LlmNamespace:
    """``client.llm``: load, list and unload language models."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def model(
        self,
        key: ModelKey | None = None,
        *,
        ttl: float | None = DEFAULT_TTL,
        config: LoadOptions | Mapping[str, Any] | None = None,
    ) -> LLM:
        """A handle to ``key`` (a catalog key, ``repo/name``, a registered key or a .gguf path), loaded on demand.

        With no key: the first loaded model, else the first downloaded vision model.
        ``config`` sets how it loads (``LoadOptions`` or a dict such as ``{"contextLength": 4096}``).
        """
        backend = self._client._open_backend()
        name = os.fspath(key) if key is not None else default_model_key(backend)
        return LLM(self._client, backend.load(name, ttl=ttl, options=load_options(config)))

    def list_loaded(self) -> list[LLM]:
        return [LLM(self._client, info) for info in self._client._open_backend().list_loaded()]

    def list_downloaded(self) -> list[ModelListing]:
        return self._client._open_backend().list_downloaded()

    def unload(self, key: str) -> None:
        if not self._client._open_backend().unload(key):
            raise ModelNotFoundError(f"model {key!r} is not loaded, so it cannot be unloaded")

    def register(self, key: str, model_path: str | Path, mmproj_path: str | Path | None = None) -> None:
        """Make local GGUF files answer to ``key`` (e.g. your own model under a catalog name)."""
        self._client._open_backend().register(key, model_path, mmproj_path)


class FilesNamespace:
    """``client.files``: images ready to put in a chat."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def prepare_image(
        self, src: Any, name: str | None = None, *, format: str | None = None, fetch: FetchOptions | None = None
    ) -> ImageHandle:
        """A file path, bytes, a binary file object, a URL or a PIL image, as a handle for ``Chat``.

        ``format`` declares a MIME type the bytes must agree with; ``fetch`` sets how URLs are fetched.
        """
        return self._client._open_backend().prepare_image(src, name, format=format, fetch=fetch)


class LLM:
    """A loaded model, from ``vk.llm(...)`` or ``client.llm.model(...)``."""

    def __init__(self, client: Client, info: ModelInfo) -> None:
        self._client = client
        self._info = info

    @property
    def identifier(self) -> str:
        """The key the model answers to."""
        return self._info.key

    def __repr__(self) -> str:
        return f"LLM({self.identifier!r})"

    def respond(
        self,
        history: History,
        *,
        config: ConfigInput = None,
        response_format: Any = None,
        on_prediction_fragment: FragmentCallback | None = None,
        on_first_token: Callable[[], None] | None = None,
    ) -> PredictionResult:
        """Answer a chat (or a prompt). Blocks; fragments also go to ``on_prediction_fragment``.

        ``response_format`` (a JSON schema or a pydantic model class) constrains the reply to that
        schema; the result's ``parsed`` then holds it parsed (a pydantic instance for a class).
        """
        stream = self.respond_stream(
            history,
            config=config,
            response_format=response_format,
            on_prediction_fragment=on_prediction_fragment,
            on_first_token=on_first_token,
        )
        return stream.result()

    def act(
        self,
        history: History,
        tools: Iterable[Any],
        *,
        config: ConfigInput = None,
        on_message: agent.MessageCallback | None = None,
        on_prediction_fragment: FragmentCallback | None = None,
        max_prediction_rounds: int | None = None,
        max_parallel_tool_calls: int = agent.MAX_PARALLEL,
    ) -> agent.ActResult:
        """Run the agent loop: predict, call the tools the model asks for, add their results, until
        it answers without a call (or ``max_prediction_rounds`` is reached: the last round offers no
        tools). ``tools`` are Python functions (or :class:`~vlmkit.client.act.FunctionTool` s); a
        function may return text, JSON-able values, an image handle or a PIL image. ``on_message``
        sees each assistant turn and tool result as it is added. Returns the chat with every turn,
        the rounds, and the last prediction (see :mod:`vlmkit.client.act`).
        """
        chat = read_history(history, self._client.fetch)

        def respond(current: Chat, cfg: PredictionConfig) -> PredictionResult:
            return self.respond(current, config=cfg, on_prediction_fragment=on_prediction_fragment)

        def to_image(value: Any) -> ImageHandle:
            return self._client._open_backend().prepare_image(value, None)

        return agent.act(
            respond,
            chat,
            tools,
            config,
            to_image,
            on_message=on_message,
            max_prediction_rounds=max_prediction_rounds,
            max_parallel_tool_calls=max_parallel_tool_calls,
        )

    def respond_stream(
        self,
        history: History,
        *,
        config: ConfigInput = None,
        response_format: Any = None,
        on_prediction_fragment: FragmentCallback | None = None,
        on_first_token: Callable[[], None] | None = None,
    ) -> PredictionStream:
        """Start answering; iterate the stream for fragments, then ``stream.result()``."""
        backend = self._client._open_backend()
        chat = read_history(history, self._client.fetch)
        work = prediction_work(backend, self.identifier, chat, config, response_format)
        stream = PredictionStream(
            work,
            model=self.identifier,
            timeout=self._client.timeout,
            on_prediction_fragment=on_prediction_fragment,
            on_first_token=on_first_token,
        )
        self._client._streams.add(stream)  # closing the client cancels it
        return stream

    def prepare(
        self,
        image: Any,
        *,
        detail: Detail | None = None,
        image_max_tokens: int | None = None,
        image_min_tokens: int | None = None,
    ) -> PreparedImageInfo:
        """Encode ``image`` for this model ahead of the question, generating nothing: a later
        ``respond`` about it at the same budget (``detail``, ``image_max_tokens``,
        ``image_min_tokens``, as in :class:`~vlmkit.prediction.PredictionConfig`) encodes nothing
        (``stats.images_encoded`` 0). ``image`` is an image handle, or anything ``prepare_image``
        reads. Returns the image's tokens and size, and whether it was cached already. Local models
        only: a provider's or a server's model raises :class:`~vlmkit.errors.ModelCapabilityError`.
        """
        work = prepare_work(
            self._client._open_backend(),
            self.identifier,
            image,
            self._client.fetch,
            detail=detail,
            image_max_tokens=image_max_tokens,
            image_min_tokens=image_min_tokens,
        )
        return work()

    def get_info(self) -> ModelInfo:
        """Architecture, context length, size, and whether it takes images (``vision``)."""
        self._info = self._client._open_backend().get_info(self.identifier)
        return self._info

    def get_context_length(self) -> int:
        return self.get_info().context_length

    def unload(self) -> None:
        self._client.llm.unload(self.identifier)
