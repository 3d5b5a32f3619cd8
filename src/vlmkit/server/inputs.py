"""What a ``POST /v1/chat/completions`` body says, checked, with every image read into a handle.

The body is OpenAI's, and :mod:`vlmkit.wire.openai_chat` reads it (the same rules as every other
face). What is the server's own is here: the JSON (with large data URLs lifted out before parsing,
see :mod:`vlmkit.server.lifted`), the status codes, and the sources of images it plugs into
:mod:`vlmkit.images.resolve`: uploaded files by id, lifted data URLs, and a refusal of everything
but ``data:`` and ``http(s)://`` URLs (fetched with the image layer's safe fetcher), because a
server must not read its own disk for a client.

Status codes: JSON that does not parse is 400; a field of the wrong type or a missing one is 422
(``param`` names it); a bad message, part or image is 400 naming ``messages[i].content[j]``.
"""

from __future__ import annotations

from typing import Any

from vlmkit._types import type_name
from vlmkit.chat import Chat
from vlmkit.errors import InvalidMessageError, InvalidSettingError, UnknownFileError
from vlmkit.images import ImageHandle
from vlmkit.images.fetch import FetchOptions
from vlmkit.images.resolve import Lookup, ResolveOptions, Source, aresolve_images, source_kind
from vlmkit.server.errors import APIError
from vlmkit.server.files import FILE_ID, FileStore, looks_like_file_id
from vlmkit.server.jsonutil import loads
from vlmkit.server.lifted import Lifted, reinstate
from vlmkit.wire.openai_chat import ChatRequest, read_request, to_chat

__all__ = ["ChatRequest", "parse_chat_request", "parse_json", "parse_lifted", "resolve_chat"]


def parse_json(body: bytes) -> dict[str, Any]:
    if not body:
        raise APIError("the request has no body; send a JSON object", 400, code="invalid_json")
    try:
        obj = loads(body)
    except ValueError as exc:
        raise APIError(f"the request body is not valid JSON: {exc}", 400, code="invalid_json") from None
    if not isinstance(obj, dict):
        raise APIError(f"the request body must be a JSON object, not {type_name(obj)}", 400, code="invalid_json")
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


def parse_chat_request(body: dict[str, Any]) -> ChatRequest:
    """The request's fields and settings, checked; a bad one is a 422 naming it in ``param``."""
    try:
        return read_request(body)
    except InvalidSettingError as exc:
        raise APIError(exc.message, 422, code="invalid_request", param=exc.location) from None


async def resolve_chat(
    messages: list[Any],
    files: FileStore,
    *,
    fetch: FetchOptions,
    max_pixels: int,
    max_images: int,
    lifted: Lifted | None = None,
    keep_urls: bool = False,
) -> Chat:
    """A :class:`Chat` from OpenAI-format messages, every image sniffed and validated (URLs fetched safely).

    ``lifted`` holds the images whose data URLs were taken out of the body before it was parsed;
    ``keep_urls`` leaves http(s) URLs unfetched, for a gateway model with deployments that forward them.
    """
    chat = to_chat(messages)
    refs = chat.image_refs
    if len(refs) > max_images:
        raise _bad(f"more than {max_images} images in one request; this server's limit", refs[max_images].location)
    options = ResolveOptions(fetch=fetch, max_pixels=max_pixels, keep_urls=keep_urls, lookup=_sources(files, lifted))
    return chat.with_images(await aresolve_images(refs, options))


def _sources(files: FileStore, lifted: Lifted | None) -> Lookup:
    """The server's own image sources (lifted data URLs, uploads by id), and its refusal of the rest."""

    def lookup(src: Source) -> ImageHandle | bytes | None:
        data = lifted.image(src.url) if lifted is not None else None
        if data is not None:
            return data
        if src.file_id or looks_like_file_id(src.url):
            return _file(files, src.url)
        if source_kind(src.url) not in ("http", "data"):
            url = src.url
            raise InvalidMessageError(
                "an image_url must be a data: URL, an http(s):// URL or the id of a file uploaded to /v1/files "
                f"(got {url[:40]!r}{'...' if len(url) > 40 else ''})"
            )
        return None

    return lookup


def _file(files: FileStore, file_id: str) -> ImageHandle:
    stored = files.find(file_id)
    if stored is None:
        shape = "" if FILE_ID.match(file_id) else "; this server's ids are 'file-' and 24 hex digits"
        raise UnknownFileError(
            f"no such file: no uploaded file has the id {file_id!r} (it was never uploaded here, or was "
            f"deleted{shape}); upload the image with POST /v1/files and send the id it answers with, "
            "or check the id against GET /v1/files"
        )
    return stored.image


def _bad(message: str, where: str) -> InvalidMessageError:
    exc = InvalidMessageError(message)
    exc.add_location(where)
    return exc
