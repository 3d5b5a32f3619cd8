"""What a ``POST /v1/chat/completions`` body says, checked, with every image read into a handle.

The body is OpenAI's, and :mod:`vlmkit.wire.openai_chat` reads it (the same rules as every other
face). What is the server's own is here: the JSON (with large data URLs lifted out before parsing,
see :mod:`vlmkit.server.lifted`), the status codes, and the sources of images it plugs into
:mod:`vlmkit.images.resolve`: uploaded files by id, lifted data URLs, and a refusal of everything
but ``data:`` and ``http(s)://`` URLs (fetched with the image layer's safe fetcher), because a
server must not read its own disk for a client. Whatever the source, a PDF is read as its pages
and a ``video_url`` as frames: 8 each, fewer where the request's other images and PDF pages (read
first) and videos leave less room under the limit of images per request. That limit counts every
page and frame: over it is a 400 naming the part that went over, the limit, and how to get under it.
A prompt over the model's context (its tokens, which only the model's projector knows, or the
provider's window) in a request holding a PDF or a video names the one with the most pages or
frames (:func:`media_blamed`).

Status codes: JSON that does not parse is 400; a field of the wrong type or a missing one is 422
(``param`` names it); a bad message, part or image is 400 naming ``messages[i].content[j]``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

from vlmkit._types import type_name
from vlmkit.chat import Chat, ImagePart, ImageRef, MediaPart
from vlmkit.errors import (
    ContextLengthError,
    ContextWindowExceededError,
    InvalidMessageError,
    InvalidSettingError,
    TooManyImagesError,
    UnknownFileError,
)
from vlmkit.images import ImageHandle
from vlmkit.images.document import Document
from vlmkit.images.fetch import FetchOptions
from vlmkit.images.resolve import Lookup, ResolveOptions, Source, aresolve_image, aresolve_images, source_kind
from vlmkit.images.video import DEFAULT_FRAMES
from vlmkit.server.errors import APIError
from vlmkit.server.files import FILE_ID, FileStore, looks_like_file_id
from vlmkit.server.jsonutil import loads
from vlmkit.server.lifted import Lifted, reinstate
from vlmkit.wire.openai_chat import ChatRequest, read_request

__all__ = [
    "ChatRequest",
    "ImageSource",
    "media_blamed",
    "parse_chat_request",
    "parse_json",
    "parse_lifted",
    "resolve_images",
    "resolve_one",
]


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


async def resolve_images(
    chat: Chat,
    files: FileStore,
    *,
    fetch: FetchOptions,
    max_pixels: int,
    max_images: int,
    lifted: Lifted | None = None,
    keep_urls: bool = False,
) -> Chat:
    """``chat`` with every image sniffed and validated (URLs fetched safely), whichever protocol's module
    (:mod:`vlmkit.wire`) made its :class:`~vlmkit.chat.ImageRef`: the server's sources and limits for all.

    ``lifted`` holds the images whose data URLs were taken out of the body before it was parsed;
    ``keep_urls`` leaves http(s) URLs unfetched, for a gateway model with deployments that forward them.
    """
    refs = chat.image_refs
    if len(refs) > max_images:
        raise _bad(f"more than {max_images} images in one request; this server's limit", refs[max_images].location)
    options = ResolveOptions(fetch=fetch, max_pixels=max_pixels, keep_urls=keep_urls, lookup=_sources(files, lifted))
    videos = [ref for ref in refs if ref.video]
    read = await aresolve_images([ref for ref in refs if not ref.video], options)
    if videos:  # read once the other images are: the room they leave is the videos' frame budget
        used = sum(_images_in(ImagePart(r) if isinstance(r, ImageHandle) else MediaPart(r)) for r in read.values())
        used += len(refs) - len(videos) - len(read)  # URLs left for the provider to fetch: one image each
        frames = max(1, min(DEFAULT_FRAMES, (max_images - used) // len(videos)))
        read |= await aresolve_images(videos, replace(options, video_frames=frames))
    parts = ((i, j, p) for i, m in enumerate(chat.messages) for j, p in enumerate(m.content))
    named = {(i, j): p.location for i, j, p in parts if isinstance(p, ImageRef)}
    chat = chat.with_images(read)
    _check_image_count(chat, max_images, named)
    return chat


def _media_parts(chat: Chat) -> Iterator[tuple[str, MediaPart, int]]:
    """Each PDF or video in ``chat``: where it was in the request, it, and how many images it gives."""
    for i, m in enumerate(chat.messages):
        for j, p in enumerate(m.content):
            if isinstance(p, MediaPart):
                yield p.location or f"messages[{i}].content[{j}]", p, _images_in(p)


@contextlib.contextmanager
def media_blamed(chat: Chat) -> Iterator[None]:
    """A prompt over the model's context, in a request holding PDFs or videos: the error is placed
    (``param``) at the one giving the most images, and says how to send fewer of them."""
    try:
        yield
    except (ContextLengthError, ContextWindowExceededError) as exc:
        biggest = max(_media_parts(chat), key=lambda found: found[2], default=None)
        if biggest is not None and not exc.location:
            where, part, count = biggest
            if isinstance(part.media, Document):
                exc.detail += f"; this PDF gives {count} pages, an image each: send fewer pages (split the PDF)"
            else:
                exc.detail += f"; this video gives {count} frames, an image each: send fewer videos or images"
            exc.add_location(where)
        raise


def _check_image_count(chat: Chat, limit: int, named: dict[tuple[int, int], str]) -> None:
    """Refuse a request whose images, each PDF page and video frame counted, are over ``limit``,
    naming the part that went over (where the request named it: ``named``, by message and part)."""
    count = 0
    for i, m in enumerate(chat.messages):
        for j, p in enumerate(m.content):
            count += _images_in(p)
            if count <= limit:
                continue
            if isinstance(p, MediaPart):
                what = "pages" if isinstance(p.media, Document) else "frames"
                held = _images_in(p)
                fix = (
                    "send fewer pages (split the PDF, or send the pages that matter as images)"
                    if what == "pages"
                    else "send fewer videos or images"
                )
                said = f"this {'PDF' if what == 'pages' else 'video'} gives {held} {what}, and with it"
            else:
                fix, said = "send fewer images", "with this image"
            exc = TooManyImagesError(
                f"{said} the request holds {count} images (a PDF's pages and a video's frames count one each), over "
                f"this server's limit of {limit} per request; {fix}, or split the request "
                "(the server's operator sets the limit: max_images_per_request)"
            )
            exc.add_location(named.get((i, j)) or f"messages[{i}].content[{j}]")
            raise exc


@dataclass(frozen=True)
class ImageSource:
    """One image named outside a chat (a data URL, an http(s) URL or an upload's id), and where it was named."""

    url: str
    location: str
    format: str | None = None
    file_id: bool = False
    video: bool = False


async def resolve_one(src: ImageSource, files: FileStore, *, fetch: FetchOptions, max_pixels: int) -> ImageHandle:
    """The handle of one image, read from the server's sources by the same rules as a chat's images."""
    options = ResolveOptions(fetch=fetch, max_pixels=max_pixels, lookup=_sources(files, None))
    handle = await aresolve_image(src, options)
    assert handle is not None  # http(s) URLs are fetched here, never kept as references
    if not isinstance(handle, ImageHandle):  # a PDF: several pages, not one image
        raise _bad("this is a PDF document, not an image; send one of its pages as an image", src.location)
    return handle


def _sources(files: FileStore, lifted: Lifted | None) -> Lookup:
    """The server's own image sources (lifted data URLs, uploads by id), and its refusal of the rest."""

    def lookup(src: Source) -> ImageHandle | bytes | None:
        data = lifted.image(src.url) if lifted is not None else None
        if data is not None:
            return data
        if src.file_id or looks_like_file_id(src.url):
            return _file(files, src.url, src.video)
        if source_kind(src.url) not in ("http", "data"):
            url = src.url
            raise InvalidMessageError(
                f"{'a video_url' if src.video else 'an image_url'} must be a data: URL, an http(s):// URL or the id of "
                f"a file uploaded to /v1/files (got {url[:40]!r}{'...' if len(url) > 40 else ''})"
            )
        return None

    return lookup


def _file(files: FileStore, file_id: str, video: bool) -> ImageHandle | bytes:
    """An upload: its image, or its bytes where they are read as something else (a PDF's pages, a
    video's frames, an animation named as a video)."""
    stored = files.find(file_id)
    if stored is None:
        shape = "" if FILE_ID.match(file_id) else "; this server's ids are 'file-' and 24 hex digits"
        raise UnknownFileError(
            f"no such file: no uploaded file has the id {file_id!r} (it was never uploaded here, or was "
            f"deleted{shape}); upload the image with POST /v1/files and send the id it answers with, "
            "or check the id against GET /v1/files"
        )
    return stored.image if stored.image is not None and not video else stored.data


def _bad(message: str, where: str) -> InvalidMessageError:
    exc = InvalidMessageError(message)
    exc.add_location(where)
    return exc


def _images_in(part: Any) -> int:
    """The images a part gives: a PDF's pages, a video's frames, an image's one."""
    return len(part.media.interleaved()) // 2 if isinstance(part, MediaPart) else int(isinstance(part, ImagePart))
