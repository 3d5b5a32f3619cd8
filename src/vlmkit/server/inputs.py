"""What a ``POST /v1/chat/completions`` body says, checked, with every image resolved to a handle.

The body is OpenAI's: ``model``, ``messages`` (``image_url`` parts hold a ``data:`` URL, an
``http(s)://`` URL fetched with the image layer's safe fetcher, or the id of an uploaded file), and
the usual settings. A server must not read its own disk for a client, so local paths and bare
base64 are refused here, before the image layer sees them.

Status codes: JSON that does not parse is 400; a field of the wrong type or a missing one is 422
(``param`` names it); a bad message, part or image is 400 naming ``messages[i].content[j]``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio.to_thread

from vlmkit.chat import Chat, ChatMessage, ImagePart, Part, TextPart, parse_image_url
from vlmkit.errors import InvalidMessageError, VlmkitError
from vlmkit.images import ImageHandle, aprepare_image, image_from_bytes, prepare_image
from vlmkit.images.fetch import FetchOptions
from vlmkit.server.errors import APIError
from vlmkit.server.files import FILE_ID, FileStore, looks_like_file_id
from vlmkit.server.jsonutil import loads
from vlmkit.server.lifted import Lifted, reinstate

INLINE_DATA_URL = 2 * 1024 * 1024
"""Data URLs up to this length are decoded and checked on the event loop (only the header is parsed)."""

_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


@dataclass
class ChatRequest:
    model: str
    messages: list[Any]
    stream: bool = False
    include_usage: bool = False
    params: dict[str, Any] = field(default_factory=dict)
    """OpenAI settings, checked: temperature, top_p, max_tokens, stop, seed, response_format, penalties."""
    extensions: dict[str, Any] = field(default_factory=dict)
    """vlmkit's own settings for local models: top_k, min_p, repeat_penalty, detail (an image token cap)."""


def parse_json(body: bytes) -> dict[str, Any]:
    if not body:
        raise APIError("the request has no body; send a JSON object", 400, code="invalid_json")
    try:
        obj = loads(body)
    except ValueError as exc:
        raise APIError(f"the request body is not valid JSON: {exc}", 400, code="invalid_json") from None
    if not isinstance(obj, dict):
        raise APIError(f"the request body must be a JSON object, not {_json_type(obj)}", 400, code="invalid_json")
    return obj


def parse_lifted(lifted: Lifted) -> dict[str, Any]:
    """:func:`parse_json` of a body whose large data URLs were lifted out (see :mod:`vlmkit.server.lifted`)."""
    if lifted.body is lifted.source:
        return parse_json(lifted.body)
    try:
        obj = parse_json(lifted.body)
    except APIError:
        return parse_json(lifted.source)  # the error, with positions in the body as it was sent
    reinstate(obj, lifted)
    return obj


def parse_chat_request(body: Mapping[str, Any]) -> ChatRequest:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _schema("'model' is required: the name of a model from GET /v1/models", "model")
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise _schema(f"'messages' must be a list of messages, not {_json_type(messages)}", "messages")
    if not messages:
        raise _schema("'messages' is empty: send at least one message", "messages")
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise _schema(f"'stream' must be true or false, not {_json_type(stream)}", "stream")
    include_usage = False
    options = body.get("stream_options")
    if options is not None:
        if not isinstance(options, dict):
            raise _schema("'stream_options' must be an object", "stream_options")
        include_usage = bool(options.get("include_usage", False))
    if body.get("tools") or body.get("functions"):
        raise APIError("tool and function calling are not supported by this server", 400, param="tools")
    n = body.get("n")
    if n is not None and n != 1:
        raise _schema("only n=1 is supported", "n")
    params: dict[str, Any] = {}
    for name in ("temperature", "top_p", "presence_penalty", "frequency_penalty"):
        _number(body, name, params)
    if "temperature" in params and params["temperature"] < 0:
        raise _schema("'temperature' must be >= 0", "temperature")
    if "top_p" in params and not 0 < params["top_p"] <= 1:
        raise _schema("'top_p' must be in (0, 1]", "top_p")
    max_tokens = body.get("max_completion_tokens")
    if max_tokens is None:
        max_tokens = body.get("max_tokens")
    if max_tokens is not None:
        if not _is_int(max_tokens) or max_tokens < 1:
            raise _schema(f"'max_tokens' must be a positive integer, not {max_tokens!r}", "max_tokens")
        params["max_tokens"] = max_tokens
    seed = body.get("seed")
    if seed is not None:
        if not _is_int(seed):
            raise _schema(f"'seed' must be an integer, not {_json_type(seed)}", "seed")
        params["seed"] = seed
    stop = body.get("stop")
    if stop is not None:
        if isinstance(stop, str):
            stop = [stop]
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise _schema("'stop' must be a string or a list of strings", "stop")
        if stop:
            params["stop"] = stop
    fmt = body.get("response_format")
    if fmt is not None:
        if not isinstance(fmt, dict) or fmt.get("type") not in ("text", "json_object", "json_schema"):
            raise _schema(
                "'response_format' must be {'type': 'text' | 'json_object' | 'json_schema', ...}", "response_format"
            )
        if fmt["type"] == "json_schema" and not isinstance(fmt.get("json_schema"), dict):
            raise _schema("a 'json_schema' response_format needs a 'json_schema' object", "response_format")
        if fmt["type"] != "text":
            params["response_format"] = fmt
    user = body.get("user")
    if isinstance(user, str):
        params["user"] = user
    extensions: dict[str, Any] = {}
    for name in ("min_p", "repeat_penalty"):
        _number(body, name, extensions)
    top_k = body.get("top_k")
    if top_k is not None:
        if not _is_int(top_k) or top_k < 0:
            raise _schema("'top_k' must be a non-negative integer", "top_k")
        extensions["top_k"] = top_k
    detail = body.get("detail")
    if detail is not None:
        if not _is_int(detail) or detail < 1:
            raise _schema(f"'detail' is a local model's image token cap: a positive integer, not {detail!r}", "detail")
        extensions["detail"] = detail
    return ChatRequest(model, messages, stream, include_usage, params, extensions)


async def resolve_chat(
    messages: list[Any],
    files: FileStore,
    *,
    fetch: FetchOptions,
    max_pixels: int,
    max_images: int,
    lifted: Lifted | None = None,
) -> Chat:
    """A :class:`Chat` from OpenAI-format messages, every image sniffed and validated (URLs fetched safely).

    ``lifted`` holds the images whose data URLs were taken out of the body before it was parsed.
    """
    chat = Chat()
    pending: list[tuple[list[Part], int, str, Any]] = []  # (parts, index, location, awaitable)
    images = 0
    for i, raw in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(raw, Mapping):
            raise _bad(f"a message must be an object, not {_json_type(raw)}", where)
        role = _ROLES.get(raw.get("role"))  # type: ignore[arg-type]
        if role is None:
            raise _bad(
                f"role must be 'system', 'developer', 'user' or 'assistant', not {raw.get('role')!r}", f"{where}.role"
            )
        content = raw.get("content")
        parts: list[Part] = []
        if isinstance(content, str):
            if content:
                parts.append(TextPart(content))
        elif isinstance(content, list):
            for j, part in enumerate(content):
                here = f"{where}.content[{j}]"
                item = _part(part, here, files, role, lifted)
                if isinstance(item, TextPart):
                    parts.append(item)
                    continue
                images += 1
                if images > max_images:
                    raise _bad(f"more than {max_images} images in one request; this server's limit", here)
                if isinstance(item, ImagePart):
                    parts.append(item)
                else:
                    parts.append(TextPart(""))  # a placeholder, replaced once the image is ready
                    pending.append((parts, len(parts) - 1, here, item))
        elif content is not None:
            raise _bad(f"content must be a string or a list of parts, not {_json_type(content)}", f"{where}.content")
        elif role != "assistant":
            raise _bad("the message has no 'content'", f"{where}.content")
        chat.messages.append(ChatMessage(role, parts))  # type: ignore[arg-type]
    if pending:
        await _prepare_all(pending, fetch, max_pixels)
    return chat


@dataclass(frozen=True)
class _ToPrepare:
    url: str
    detail: Any
    declared: str | None
    data: bytes | None = None
    """The image's bytes, already decoded from a lifted data URL."""


def _part(
    part: Any, where: str, files: FileStore, role: str, lifted: Lifted | None
) -> TextPart | ImagePart | _ToPrepare:
    if not isinstance(part, Mapping):
        raise _bad(f"a content part must be an object, not {_json_type(part)}", where)
    kind = part.get("type")
    if kind in ("text", "input_text"):
        text = part.get("text")
        if not isinstance(text, str):
            raise _bad(f"a text part needs a string 'text', not {_json_type(text)}", where)
        return TextPart(text)
    if kind not in ("image_url", "input_image", "file"):
        raise _bad(f"unknown content part type {kind!r}; this server reads 'text', 'image_url' and 'file' parts", where)
    if role != "user":
        raise _bad(f"images can only be sent in user messages, not in a {role} message", where)
    if kind == "file":
        ref = part.get("file")
        file_id = ref.get("file_id") if isinstance(ref, Mapping) else None
        if not isinstance(file_id, str):
            raise _bad("a file part needs {'file': {'file_id': 'file-...'}} naming an uploaded image", where)
        return ImagePart(_file(files, file_id, where))
    raw = part.get("image_url")
    if kind == "input_image" and raw is None and isinstance(part.get("file_id"), str):
        return ImagePart(_file(files, part["file_id"], where), _detail(part.get("detail"), where))
    if kind == "input_image" and isinstance(raw, str):
        raw = {"url": raw, "detail": part.get("detail")}
    if isinstance(raw, Mapping) and isinstance(raw.get("file_id"), str) and "url" not in raw:
        return ImagePart(_file(files, raw["file_id"], where), _detail(raw.get("detail"), where))
    try:
        url, detail, declared = parse_image_url(raw)
    except VlmkitError as exc:
        exc.add_location(where)
        raise
    data = lifted.image(url) if lifted is not None else None
    if data is not None:
        return _ToPrepare(url, detail, declared, data)
    if looks_like_file_id(url):
        return ImagePart(_file(files, url, where), detail)
    scheme = url[:8].lower()
    if not (scheme.startswith(("http://", "https://", "data:"))):
        raise _bad(
            "an image_url must be a data: URL, an http(s):// URL or the id of a file uploaded to /v1/files "
            f"(got {url[:40]!r}{'...' if len(url) > 40 else ''})",
            where,
        )
    return _ToPrepare(url, detail, declared)


async def _prepare_all(pending: list[tuple[list[Part], int, str, Any]], fetch: FetchOptions, max_pixels: int) -> None:
    async def one(item: _ToPrepare, where: str) -> ImageHandle:
        try:
            if item.data is not None:
                return image_from_bytes(item.data, format=item.declared, max_pixels=max_pixels)
            if item.url[:5].lower() == "data:":
                if len(item.url) <= INLINE_DATA_URL:  # about 1 ms per MB: less than a thread hop costs under load
                    return prepare_image(item.url, format=item.declared, max_pixels=max_pixels)
                return await anyio.to_thread.run_sync(
                    lambda: prepare_image(item.url, format=item.declared, max_pixels=max_pixels)
                )
            return await aprepare_image(item.url, format=item.declared, max_pixels=max_pixels, fetch=fetch)
        except VlmkitError as exc:
            exc.add_location(where)
            raise

    if len(pending) == 1:
        handles = [await one(pending[0][3], pending[0][2])]
    else:
        handles = list(await asyncio.gather(*(one(item, where) for _, _, where, item in pending)))
    for (parts, index, _, item), handle in zip(pending, handles, strict=False):
        parts[index] = ImagePart(handle, item.detail)


def _file(files: FileStore, file_id: str, where: str) -> ImageHandle:
    stored = files.find(file_id)
    if stored is None:
        shape = "" if FILE_ID.match(file_id) else "; this server's ids are 'file-' and 24 hex digits"
        raise _bad(
            f"no such file: no uploaded file has the id {file_id!r} (it was never uploaded here, or was "
            f"deleted{shape}); upload the image with POST /v1/files and send the id it answers with, "
            "or check the id against GET /v1/files",
            where,
        )
    return stored.image


def _detail(value: Any, where: str) -> Any:
    if value not in (None, "low", "high", "auto"):
        raise _bad(f"detail must be 'low', 'high' or 'auto', not {value!r}", where)
    return value


def _number(body: Mapping[str, Any], name: str, out: dict[str, Any]) -> None:
    value = body.get(name)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _schema(f"'{name}' must be a number, not {_json_type(value)}", name)
    out[name] = value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _schema(message: str, param: str) -> APIError:
    return APIError(message, 422, code="invalid_request", param=param)


def _bad(message: str, where: str) -> InvalidMessageError:
    exc = InvalidMessageError(message)
    exc.location = where
    exc.message = f"{where}: {message}"
    exc.args = (exc.message,)
    return exc


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"
