"""LM Studio's protocol on ``vlmkit serve``: the greeting and one websocket per namespace, so LM
Studio's own SDKs run unchanged against vlmkit.

A thin face: frames are read and written by :mod:`vlmkit.wire.lmstudio`; the work is the server's
shared parts (:class:`~vlmkit.server.local.LocalModels` over the one engine owner, the gateway, the
file store of :mod:`vlmkit.server.files`, and the downloads of ``vlmkit get``).
``GET /lmstudio-greeting`` answers ``{"lmstudio": true}`` (open, like ``/health``: the SDK probes
it before it has said who it is).

A local prediction's fragments go out as they come, except that those of a fast model that come
within :data:`FRAGMENT_WINDOW` of the last ``fragment`` message are sent together as one
(:func:`paced`): LM Studio's Python SDK pays two thread hops per message.

A prediction's tool calls (a local model's, read from its reply by the engine, or a gateway model's,
joined from its provider's streamed pieces) are sent after its fragments, each as the
``toolCallGeneration*`` messages the SDK's ``.act()`` runs the tool from, before the final ``success``.

A connection's first message authenticates it: a server without API keys accepts every client (as
LM Studio does); with keys, the client's passkey, or the LM Studio API token its SDK split in two
(``sk-lm-ID:KEY`` sent as identifier ``ID``, passkey ``KEY``), or an ``Authorization: Bearer``
header on the upgrade, must be one of them. Each call and channel then runs as its own task, so a
running prediction never holds up another call, a cancel, or an upload on the same connection.

Bad input never ends a connection: a frame that is too large, not JSON or not the protocol's, a
frame before authentication, an unknown endpoint or channel, an upload over the size limit or a
corrupt image is answered with the protocol's error frame (``rpcError`` / ``channelError`` for the
call or channel it named, ``communicationWarning`` otherwise), saying what was wrong and what to do.
An unexpected failure is logged with its traceback on the server and reaches the client as one line.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket

from vlmkit._version import __version__
from vlmkit.chat import Chat, ImageRef
from vlmkit.engine.catalog import lookup
from vlmkit.errors import ModelDownloadError, ModelNotFoundError, UnknownFileError, VlmkitError
from vlmkit.images import ImageHandle, image_from_bytes
from vlmkit.prediction import PredictionConfig, PredictionFragment, PredictionResult, StopReason
from vlmkit.providers.response import StreamedAnswer
from vlmkit.server.accounts import Meter
from vlmkit.server.config import ConfigError, ServerSettings
from vlmkit.server.fleet import RequestCost, request_cost
from vlmkit.server.gateway import GatewayStream
from vlmkit.server.jsonutil import dumps
from vlmkit.server.keys import ANONYMOUS, KeyPolicy
from vlmkit.server.state import ServerState, image_slot
from vlmkit.stream import AsyncPredictionStream, CancelToken, call_in_thread
from vlmkit.wire import lmstudio as wire
from vlmkit.wire.openai_chat import config_to_openai, stats_from_openai

log = logging.getLogger("vlmkit.server")

_SLACK = 1024 * 1024


def frame_limit(settings: ServerSettings) -> int:
    """The largest frame read: an image of ``max_body_bytes`` in base64, and room for the rest."""
    return settings.max_body_bytes * 4 // 3 + _SLACK


def ws_max_size(settings: ServerSettings) -> int:
    """The websocket transport's own limit (a frame over it closes the connection): above
    :func:`frame_limit`, so that a frame over the protocol's limit is answered, not dropped."""
    return max(16 * 1024 * 1024, 2 * frame_limit(settings))


async def greeting(request: Request) -> Response:
    return Response(b'{"lmstudio":true}', media_type="application/json")


class Session:
    """One client's websocket on one namespace: its authentication, calls and channels."""

    def __init__(self, ws: WebSocket, namespace: str, state: ServerState) -> None:
        self.ws = ws
        self.namespace = namespace
        self.state = state
        self.authenticated = False
        self.key: KeyPolicy = ANONYMOUS
        """The key the client authenticated with: its limits, allowed models and usage apply here too."""
        self.channels: dict[int, CancelToken] = {}
        self.calls: set[int] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.closed = False
        self._send_lock = asyncio.Lock()
        self._max_frame = frame_limit(state.settings)

    # --- the connection ------------------------------------------------------------------------

    async def run(self) -> None:
        await self.ws.accept()
        try:
            while True:
                message = await self.ws.receive()
                if message["type"] == "websocket.disconnect":
                    break
                data = message.get("text")
                if data is None:
                    data = message.get("bytes") or b""
                await self.handle(data)
        finally:
            self.closed = True
            for token in self.channels.values():
                token.cancel()
            for task in list(self.tasks):
                task.cancel()

    async def send(self, frame: dict[str, Any]) -> None:
        if self.closed:
            return
        async with self._send_lock:
            try:
                await self.ws.send_text(dumps(frame).decode("utf-8"))
            except Exception:  # the client went away meanwhile (each transport says so its own way)
                self.closed = True

    async def handle(self, data: str | bytes) -> None:
        try:
            frame = wire.read_frame(data, max_bytes=self._max_frame)
        except wire.ProtocolError as exc:
            await self.refuse(exc, call_id=exc.call_id, channel_id=exc.channel_id)
            return
        if isinstance(frame, wire.Authenticate):
            await self.authenticate(frame)
            return
        call_id = frame.call_id if isinstance(frame, wire.RpcCall) else None
        channel_id = None if isinstance(frame, wire.RpcCall) else frame.channel_id
        if not self.authenticated:
            problem = wire.ProtocolError(
                "the connection is not authenticated: its first message must be "
                "{'authVersion': 1, 'clientIdentifier': ..., 'clientPasskey': ...} (the passkey is an API key "
                "when the server has keys)"
            )
            await self.refuse(problem, call_id=call_id, channel_id=channel_id)
            return
        if isinstance(frame, wire.RpcCall):
            await self.start_call(frame)
        elif isinstance(frame, wire.ChannelCreate):
            await self.start_channel(frame)
        elif isinstance(frame, wire.ChannelSend):
            await self.channel_message(frame)
        else:
            token = self.channels.get(frame.channel_id)
            if token is not None:
                token.cancel()

    async def refuse(self, exc: BaseException, *, call_id: int | None, channel_id: int | None) -> None:
        """Answer ``exc`` on the call or channel it belongs to, else as a communication warning."""
        error = error_of(exc)
        if call_id is not None:
            await self.send(wire.rpc_error(call_id, error))
        elif channel_id is not None:
            await self.send(wire.channel_error(channel_id, error))
        else:
            await self.send(wire.communication_warning(error["title"]))

    # --- authentication ------------------------------------------------------------------------

    async def authenticate(self, frame: wire.Authenticate) -> None:
        policies = self.state.settings.key_policies()
        found = _find_key(policies, [*frame.secrets(), *self._bearer()]) if policies else ANONYMOUS
        if found is not None:
            self.authenticated, self.key = True, found
            await self.send(wire.auth_result())
            return
        await self.send(
            wire.auth_result(
                wire.error_body(
                    "the API key is not valid for this server",
                    suggestion="send one of the server's API keys as the client passkey, or one shaped as an "
                    "LM Studio API token (sk-lm-ID:KEY) as the SDK's api_token / LMSTUDIO_API_TOKEN, or as "
                    "'Authorization: Bearer <key>' on the websocket upgrade",
                )
            )
        )

    def _bearer(self) -> list[str]:
        header = self.ws.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        return [token.strip()] if scheme.lower() == "bearer" and token.strip() else []

    # --- calls and channels --------------------------------------------------------------------

    async def start_call(self, frame: wire.RpcCall) -> None:
        handler = RPCS.get((self.namespace, frame.endpoint))
        if handler is None:
            await self.refuse(
                _unknown(self.namespace, frame.endpoint, "rpcCall"), call_id=frame.call_id, channel_id=None
            )
            return
        if frame.call_id in self.calls:
            problem = wire.ProtocolError(f"callId {frame.call_id} is already in use on this connection; use a new one")
            await self.refuse(problem, call_id=frame.call_id, channel_id=None)
            return
        self.calls.add(frame.call_id)

        async def run() -> None:
            try:
                result = await handler(self, frame.parameter)
            except Exception as exc:
                await self.refuse(exc, call_id=frame.call_id, channel_id=None)
            else:
                await self.send(wire.rpc_result(frame.call_id, result))
            finally:
                self.calls.discard(frame.call_id)

        self._spawn(run())

    async def start_channel(self, frame: wire.ChannelCreate) -> None:
        handler = CHANNELS.get((self.namespace, frame.endpoint))
        if handler is None:
            problem = _unknown(self.namespace, frame.endpoint, "channelCreate")
            await self.refuse(problem, call_id=None, channel_id=frame.channel_id)
            return
        if frame.channel_id in self.channels:
            problem = wire.ProtocolError(f"channelId {frame.channel_id} is already open on this connection")
            await self.refuse(problem, call_id=None, channel_id=frame.channel_id)
            return
        token = CancelToken()
        self.channels[frame.channel_id] = token

        async def run() -> None:
            try:
                await handler(self, frame.channel_id, frame.creation_parameter, token)
            except Exception as exc:
                await self.refuse(exc, call_id=None, channel_id=frame.channel_id)
            else:
                await self.send(wire.channel_close(frame.channel_id))
            finally:
                self.channels.pop(frame.channel_id, None)

        self._spawn(run())

    async def channel_message(self, frame: wire.ChannelSend) -> None:
        token = self.channels.get(frame.channel_id)
        if token is None:
            problem = wire.ProtocolError(
                f"no channel {frame.channel_id} is open on this connection (it finished, or was never created)"
            )
            await self.refuse(problem, call_id=None, channel_id=frame.channel_id)
        elif frame.message.get("type") == "cancel":
            token.cancel()
        else:
            problem = wire.ProtocolError(
                f"channel {frame.channel_id} takes only {{'type': 'cancel'}} messages "
                f"(got {frame.message.get('type')!r})"
            )
            await self.send(wire.communication_warning(problem.message))

    def _spawn(self, work: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # --- what the endpoints share --------------------------------------------------------------

    def entry_info(self, key: str) -> dict[str, Any]:
        """The model ``key`` as the SDK describes a loaded one (from the engine when it is loaded)."""
        for info in self.state.local.loaded():
            if info.key == key:
                return wire.loaded_info(info)
        if self.state.gateway.has(key):
            return wire.model_info(
                key,
                path=key,
                size_bytes=0,
                vision=self.state.gateway.vision(key),
                architecture="gateway",
                context_length=None,
                loaded=True,
            )
        entry = self.state.local.find(key)
        if entry is None:
            raise not_found(self.state, key)
        return wire.model_info(
            key,
            path=entry.path,
            size_bytes=entry.size_bytes,
            vision=entry.vision,
            architecture=entry.architecture,
            context_length=entry.context_length,
            loaded=True,
        )

    def local_key(self, key: str) -> str:
        if self.state.local.find(key) is None:
            raise not_found(self.state, key)
        return key

    async def images(self, chat: Chat) -> Chat:
        """``chat`` with every uploaded file it refers to in place."""
        refs = chat.image_refs
        limit = self.state.settings.max_images_per_request
        if len(refs) > limit:
            raise UnknownFileError(
                f"{refs[limit].location}: more than {limit} images in one prediction; this server's limit"
            )
        found: dict[ImageRef, ImageHandle] = {}
        for ref in refs:
            stored = self.state.files.find(ref.url)
            if stored is None:
                exc = UnknownFileError(
                    f"no uploaded file has the handle {ref.url!r} (it was never uploaded to this server, or the "
                    "server restarted without files_dir); prepare the image again with prepare_image"
                )
                exc.add_location(ref.location)
                raise exc
            if stored.image is None:
                exc = UnknownFileError(
                    f"the upload {ref.url!r} is of type {stored.mime_type}, not an image; this protocol sends images"
                )
                exc.add_location(ref.location)
                raise exc
            found[ref] = stored.image
        return chat.with_images(found)


def _find_key(policies: tuple[KeyPolicy, ...], candidates: list[str]) -> KeyPolicy | None:
    """The key among ``policies`` that one of ``candidates`` is, compared in constant time."""
    found = None
    for candidate in candidates:
        token = candidate.encode()
        for policy in policies:  # every comparison made: the time taken does not tell which came close
            if hmac.compare_digest(token, policy.secret.encode()):
                found = policy
    return found


def _unknown(namespace: str, endpoint: str, kind: str) -> wire.ProtocolError:
    table = RPCS if kind == "rpcCall" else CHANNELS
    known = sorted(e for ns, e in table if ns == namespace)
    offered = (
        f"; on /{namespace} it implements: {', '.join(known)}" if known else f"; it implements nothing on /{namespace}"
    )
    return wire.ProtocolError(f"vlmkit does not implement the {kind} endpoint {namespace}.{endpoint}{offered}")


def not_found(state: ServerState, key: str) -> ModelNotFoundError:
    entry = lookup(key)
    if entry is not None:
        return ModelNotFoundError(
            f"the model {key!r} is not downloaded on this server; download it there with `vlmkit get {entry.key}` "
            f"(or repository.downloadModel), or name one it serves: {_served(state)}"
        )
    return ModelNotFoundError(f"the model {key!r} does not exist on this server; served: {_served(state)}")


def _served(state: ServerState) -> str:
    known = sorted({*state.gateway.names(), *state.local.entries()})
    return ", ".join(known[:20]) + (" ..." if len(known) > 20 else "") if known else "none"


def error_of(exc: BaseException) -> dict[str, Any]:
    """The protocol's error body for ``exc``: vlmkit's message, or one line for an unexpected failure."""
    if isinstance(exc, ModelNotFoundError):
        return wire.error_body(str(exc), code=wire.NOT_FOUND_CODE)
    if isinstance(exc, VlmkitError):
        return wire.error_body(str(exc))
    log.exception("unexpected error on LM Studio's protocol", exc_info=exc)
    return wire.error_body(f"internal server error ({type(exc).__name__}); see the server's log")


# --- llm -----------------------------------------------------------------------------------------


async def _list_loaded(s: Session, param: Any) -> Any:
    return [wire.loaded_info(info) for info in s.state.local.loaded()]


async def _model_info(s: Session, param: Any) -> Any:
    return s.entry_info(wire.model_key(_get(param, "specifier"), "specifier"))


async def _load_config(s: Session, param: Any) -> Any:
    key = wire.model_key(_get(param, "specifier"), "specifier")
    info = s.entry_info(key)
    return wire.load_config_kv(info.get("contextLength") or None)


async def _unload(s: Session, param: Any) -> Any:
    key = _get(param, "identifier")
    if not isinstance(key, str) or not await s.state.local.unload(s.local_key(key)):
        raise ModelNotFoundError(f"the model {key!r} is not loaded on this server; listLoaded says which are")
    return None


async def _tokenize(s: Session, param: Any) -> Any:
    key, text = _token_input(s, param)
    return {"tokens": await call_in_thread(lambda: s.state.local.lease.tokenize(key, text), name="vlmkit-lmstudio")}


async def _count_tokens(s: Session, param: Any) -> Any:
    key, text = _token_input(s, param)
    tokens = await call_in_thread(lambda: s.state.local.lease.tokenize(key, text), name="vlmkit-lmstudio")
    return {"tokenCount": len(tokens)}


def _token_input(s: Session, param: Any) -> tuple[str, str]:
    key = s.local_key(wire.model_key(_get(param, "specifier"), "specifier"))
    text = _get(param, "inputString")
    if not isinstance(text, str):
        raise wire.ProtocolError(f"'inputString' must be a string (got {type(text).__name__})")
    return key, text


async def _apply_prompt_template(s: Session, param: Any) -> Any:
    key = s.local_key(wire.model_key(_get(param, "specifier"), "specifier"))
    chat = await s.images(wire.chat_from_history(_get(param, "history")))
    text = await call_in_thread(lambda: s.state.local.lease.format_prompt(key, chat), name="vlmkit-lmstudio")
    return {"formatted": text}


async def _get_or_load(s: Session, channel_id: int, param: Any, token: CancelToken) -> None:
    key = _get(param, "identifier")
    if not isinstance(key, str) or not key:
        raise wire.ProtocolError("getOrLoad needs 'identifier', the model's key")
    await _load(s, channel_id, key, _ttl(param, "loadTtlMs"), reuse=True)


async def _load_model(s: Session, channel_id: int, param: Any, token: CancelToken) -> None:
    key = _get(param, "modelKey")
    if not isinstance(key, str) or not key:
        raise wire.ProtocolError("loadModel needs 'modelKey', the model's key")
    identifier = _get(param, "identifier")
    if identifier not in (None, key):
        raise wire.ProtocolError(
            f"vlmkit serves one instance of each model, under its key {key!r}; leave out the instance identifier "
            f"{identifier!r}"
        )
    await _load(s, channel_id, key, _ttl(param, "ttlMs"), reuse=False)


async def _load(s: Session, channel_id: int, key: str, ttl: float | None, *, reuse: bool) -> None:
    if s.state.gateway.has(key):
        await s.send(wire.channel_send(channel_id, {"type": "alreadyLoaded", "info": s.entry_info(key)}))
        return
    s.local_key(key)
    if reuse and s.state.local.is_loaded(key):
        await s.send(wire.channel_send(channel_id, {"type": "alreadyLoaded", "info": s.entry_info(key)}))
        return
    await s.send(wire.channel_send(channel_id, {"type": "startLoading"}))
    info = await s.state.local.load(key, ttl=... if ttl is None else ttl)
    await s.send(wire.channel_send(channel_id, {"type": "success", "info": wire.loaded_info(info)}))


def _ttl(param: Any, name: str) -> float | None:
    value = _get(param, name)
    return value / 1000 if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 else None


async def _predict(s: Session, channel_id: int, param: Any, token: CancelToken) -> None:
    key = wire.model_key(_get(param, "modelSpecifier"))
    chat = wire.chat_from_history(_get(param, "history"))
    config = wire.config_from_stack(_get(param, "predictionConfigStack"))
    if not s.state.gateway.has(key):
        s.local_key(key)
    meter = s.state.accounts.admit(s.key, key)  # the key's models and limits, as on the HTTP API
    chat = await s.images(chat)
    cost = request_cost(chat)
    meter.saw(cost)
    if s.state.gateway.has(key):
        await _predict_gateway(s, channel_id, key, chat, config, token, meter, cost)
        return
    await s.send(wire.channel_send(channel_id, wire.prompt_progress(0.0)))
    started = False
    result: PredictionResult | None = None
    try:
        async for batch in paced(s.state.local.open_stream(key, chat, config, token), FRAGMENT_WINDOW):
            if isinstance(batch, PredictionResult):
                result = batch
                break
            if not started:
                started = True
                await s.send(wire.channel_send(channel_id, wire.prompt_progress(1.0)))
            content = "".join(f.content for f in batch)
            if content:
                tokens = sum(f.tokens_count for f in batch)
                await s.send(wire.channel_send(channel_id, wire.fragment(content, tokens)))
    finally:
        token.cancel()  # a no-op when it finished; stops it when the connection went away
    assert result is not None
    meter.done(result.stats.prompt_tokens, result.stats.predicted_tokens)
    await _send_calls(s, channel_id, result)
    info = wire.loaded_info(result.model_info) if result.model_info is not None else s.entry_info(key)
    context = result.model_info.context_length if result.model_info is not None else None
    await s.send(wire.channel_send(channel_id, wire.prediction_success(result, info, config, context)))


FRAGMENT_WINDOW = 0.01
"""Seconds: the fragments that come sooner than this after the last ``fragment`` message go out
together, as one (a fragment carries its ``tokensCount``). LM Studio's Python SDK takes every
message from its websocket thread to the caller's and back, so one message per token of a fast
model costs more than the tokens; a model slower than a token per window still streams token by
token, the first fragment always goes at once, and no text waits longer than this (less than a
display frame)."""


async def paced(
    stream: AsyncPredictionStream, window: float
) -> AsyncIterator[list[PredictionFragment] | PredictionResult]:
    """``stream``'s fragments in batches, then its result: the first fragment alone and at once,
    then what came within ``window`` s of the last batch, never held longer; what is held goes
    before the result, or before the stream's error is raised. The window is waited out on the
    prediction's bridge itself (a timer, no task per fragment), so the result is never held."""
    loop = asyncio.get_running_loop()
    held: list[PredictionFragment] = []
    due = 0.0  # when the batch held must go
    try:
        while True:
            item = await stream.next_within(max(0.0, due - loop.time()) if held else None)
            if isinstance(item, PredictionResult):
                if held:
                    yield held
                yield item
                return
            if item is not None and not held and loop.time() >= due:
                due = loop.time() + window
                yield [item]
                continue
            if item is not None:
                held.append(item)
            if loop.time() >= due:
                batch, held = held, []
                due = loop.time() + window
                yield batch
    except Exception:
        if held:
            yield held
        raise


async def _predict_gateway(
    s: Session,
    channel_id: int,
    key: str,
    chat: Chat,
    config: PredictionConfig,
    token: CancelToken,
    meter: Meter,
    cost: RequestCost,
) -> None:
    """A gateway model's answer, streamed from its provider as fragments, with the stats it reported."""
    if isinstance(config.detail, int) or config.image_max_tokens or config.image_min_tokens:
        raise wire.ProtocolError(f"image token budgets apply to local models; {key!r} is a gateway model")
    await s.send(wire.channel_send(channel_id, wire.prompt_progress(0.0)))
    started, first = time.perf_counter(), None
    stream = await s.state.gateway.complete(
        key,
        chat,
        config_to_openai(config),
        stream=True,
        done=lambda served: meter.done(served.prompt_tokens, served.completion_tokens),
        cost=cost,
    )
    assert isinstance(stream, GatewayStream)
    answer = StreamedAnswer()
    try:
        async for chunk in stream:
            if token.cancelled:
                break
            for text in answer.feed(chunk):
                if first is None:
                    first = time.perf_counter()
                    await s.send(wire.channel_send(channel_id, wire.prompt_progress(1.0)))
                await s.send(wire.channel_send(channel_id, wire.fragment(text)))
    finally:
        await stream.aclose()
    usage = answer.usage
    stats = stats_from_openai(
        answer.finish,
        usage.prompt_tokens if usage is not None else 0,
        usage.completion_tokens if usage is not None else len(answer.parts),
        started=started,
        first_token=first,
        ended=time.perf_counter(),
    )
    if token.cancelled:
        stats.stop_reason = StopReason.USER_STOPPED
    result = PredictionResult(answer.text, stats, tool_calls=[] if token.cancelled else answer.tool_calls())
    await _send_calls(s, channel_id, result)
    await s.send(wire.channel_send(channel_id, wire.prediction_success(result, s.entry_info(key), config, None)))


async def _send_calls(s: Session, channel_id: int, result: PredictionResult) -> None:
    """The calls the model made, each as the messages that hand it to the client (``.act()`` runs it)."""
    for call in result.tool_calls:
        for message in wire.tool_call_messages(call):
            await s.send(wire.channel_send(channel_id, message))


# --- system, files -------------------------------------------------------------------------------


async def _list_downloaded(s: Session, param: Any) -> Any:
    entries = await anyio.to_thread.run_sync(lambda: s.state.local.entries(refresh=True))
    return [
        wire.model_info(
            e.name,
            path=e.path,
            size_bytes=e.size_bytes,
            vision=e.vision,
            architecture=e.architecture,
            context_length=e.context_length,
            loaded=False,
        )
        for e in sorted(entries.values(), key=lambda e: e.name)
    ]


async def _version(s: Session, param: Any) -> Any:
    return {"version": __version__, "build": 0}


async def _upload(s: Session, param: Any) -> Any:
    settings = s.state.settings
    name, data = wire.upload_content(param, max_bytes=settings.max_body_bytes)
    async with image_slot(s.state, len(data)):  # bounded with the HTTP API's image work
        image = await anyio.to_thread.run_sync(lambda: image_from_bytes(data, name, max_pixels=settings.max_pixels))
    files = s.state.files
    stored = next((f for f in files.list() if f.image is not None and f.image.identifier == image.identifier), None)
    if stored is None:  # one upload per image content: the same picture sent again is the same handle
        if files.directory is None:
            stored = files.add(image, name, "vision")
        else:
            stored = await anyio.to_thread.run_sync(lambda: files.add(image, name, "vision"))
    return wire.upload_result(stored.id, image.size_bytes or len(data))


# --- repository: vlmkit's catalog, and `vlmkit get` --------------------------------------------


def _catalog() -> dict[str, tuple[str, str]]:
    """Every key ``vlmkit get`` knows: the catalog's, and the demo model it writes with no download."""
    from vlmkit.engine.catalog import catalog
    from vlmkit.engine.download import DEMO_KEY

    known = {key: (entry.model, entry.repo) for key, entry in catalog().items()}
    known[DEMO_KEY] = ("tiny-random-vlm.gguf", "vlmkit/generated")
    return known


async def _search(s: Session, param: Any) -> Any:
    term, limit = wire.search_term(param)
    found = [key for key, (name, repo) in _catalog().items() if term in key or term in f"{repo}/{name}".lower()]
    found.sort(key=lambda key: (key != term, key))
    return {"results": [wire.search_result(key, exact=key == term) for key in found[:limit]]}


async def _download_options(s: Session, param: Any) -> Any:
    key = wire.search_identifier(param)
    known = _catalog().get(key)
    if known is None:
        raise ModelNotFoundError(f"{key!r} is not in vlmkit's catalog; searchModels lists what it knows")
    return {"results": [wire.download_option(key, *known)]}


async def _download(s: Session, channel_id: int, param: Any, token: CancelToken) -> None:
    key = _get(param, "downloadIdentifier")
    if not isinstance(key, str) or not key:
        raise wire.ProtocolError("downloadModel needs 'downloadIdentifier', from getModelDownloadOptions")
    job = s.state.downloads.start(key)  # one download per model: a second client follows the first
    started, last = time.monotonic(), -1
    while job.status == "downloading" and not token.cancelled:
        done = await anyio.to_thread.run_sync(job.bytes_done)
        if done != last:
            speed = done / max(time.monotonic() - started, 1e-3)
            await s.send(wire.channel_send(channel_id, wire.download_progress(done, 0, speed)))
            last = done
        await asyncio.sleep(0.25)
    if token.cancelled:
        return  # the download itself goes on on the server: another client may be waiting for it
    if job.status == "failed":
        raise ModelDownloadError((job.error or {}).get("message", f"the download of {key!r} failed"))
    done = await anyio.to_thread.run_sync(job.bytes_done)
    speed = done / max(time.monotonic() - started, 1e-3)
    await s.send(wire.channel_send(channel_id, wire.download_progress(done, done, speed)))
    await s.send(wire.channel_send(channel_id, {"type": "startFinalizing"}))
    await s.send(wire.channel_send(channel_id, wire.download_success(job.key or key)))


def _get(param: Any, name: str) -> Any:
    return param.get(name) if isinstance(param, dict) else None


Rpc = Callable[[Session, Any], Awaitable[Any]]
Channel = Callable[[Session, int, Any, CancelToken], Awaitable[None]]

RPCS: dict[tuple[str, str], Rpc] = {
    ("llm", "listLoaded"): _list_loaded,
    ("llm", "getModelInfo"): _model_info,
    ("llm", "getLoadConfig"): _load_config,
    ("llm", "unloadModel"): _unload,
    ("llm", "tokenize"): _tokenize,
    ("llm", "countTokens"): _count_tokens,
    ("llm", "applyPromptTemplate"): _apply_prompt_template,
    ("system", "listDownloadedModels"): _list_downloaded,
    ("system", "version"): _version,
    ("files", "uploadFileBase64"): _upload,
    ("repository", "searchModels"): _search,
    ("repository", "getModelDownloadOptions"): _download_options,
}

CHANNELS: dict[tuple[str, str], Channel] = {
    ("llm", "getOrLoad"): _get_or_load,
    ("llm", "loadModel"): _load_model,
    ("llm", "predict"): _predict,
    ("repository", "downloadModel"): _download,
}


def _endpoint(namespace: str) -> Callable[[WebSocket], Awaitable[None]]:
    async def endpoint(ws: WebSocket) -> None:
        state: ServerState = ws.app.state.vlmkit
        await Session(ws, namespace, state).run()

    return endpoint


ROUTES: list[BaseRoute] = [
    Route("/lmstudio-greeting", greeting, methods=["GET"]),
    *(WebSocketRoute(f"/{ns}", _endpoint(ns)) for ns in wire.NAMESPACES),
]


# --- discovery -----------------------------------------------------------------------------------


def discovery_socket(host: str = "127.0.0.1") -> socket.socket:
    """A socket bound to LM Studio's first discovery port, so scripts that name no host find the server.

    A port already taken is a :class:`ConfigError` saying by what, most likely, and what to do.
    """
    port = wire.DISCOVERY_PORTS[0]
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"--lmstudio-discovery: port {port} on {host}, LM Studio's first discovery port, is in use "
            f"({exc.strerror}); "
            "LM Studio itself (or another vlmkit serve) is probably running: stop it, or leave out "
            "--lmstudio-discovery and give your scripts the host (lms.configure_default_client('HOST:PORT'))"
        ) from None
    with contextlib.suppress(OSError):
        sock.set_inheritable(True)
    return sock
