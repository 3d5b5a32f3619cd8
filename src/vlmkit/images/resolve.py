"""Reading the images a request names: the one place where a reference becomes bytes.

Translating a request (:mod:`vlmkit.wire`) reads nothing: each image part becomes a reference (in
:mod:`vlmkit.chat`, an ``ImageRef``) holding what the request said, a URL, a ``data:`` URL, base64
text, a path, a ``gs://``/``s3://`` URI or the id of an upload. Here each reference becomes a
validated :class:`~vlmkit.images.ImageHandle`:

- the caller's ``lookup`` is asked first: a server plugs in its uploads (file ids) and the data
  URLs it lifted out of the body, or refuses a source it will not read for a client;
- ``http(s)://`` URLs are fetched safely (:mod:`vlmkit.images.fetch`), or kept as references where
  the consumer fetches them itself (``keep_urls``, for providers that do);
- ``data:`` URLs are decoded; ``gs://`` and ``s3://`` stay references (providers read them);
- anything else is local: a path, a ``file://`` URL, or bare base64 text (taken as data when it is
  base64 and no file has that name).

:func:`resolve_images` and :func:`aresolve_images` are twins that share every decision
(:func:`_route`); they differ only in how they wait. The async one fetches with the async fetcher,
reads files and decodes large data URLs on a worker thread, so nothing blocks the event loop, and
reads all of a request's images concurrently. Every error names where the image was
(``messages[i].content[j]: ...``).
"""

from __future__ import annotations

import asyncio
import binascii
import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, TypeVar

import anyio.to_thread
import pybase64

from vlmkit.errors import ImageSourceError, VlmkitError
from vlmkit.images.document import PDF_MIME, Document, is_pdf, prepare_document
from vlmkit.images.fetch import FetchOptions
from vlmkit.images.handle import REFERENCE_SCHEMES, ImageHandle, image_from_bytes
from vlmkit.images.probe import DEFAULT_MAX_PIXELS
from vlmkit.images.source import aprepare_image, is_file, is_http, looks_like_base64, prepare_image, read_source

__all__ = [
    "INLINE_DATA_URL",
    "Lookup",
    "ResolveOptions",
    "Source",
    "aresolve_image",
    "aresolve_images",
    "resolve_image",
    "resolve_images",
    "source_kind",
]

INLINE_DATA_URL = 2 * 1024 * 1024
"""Data URLs up to this length are decoded on the event loop in async code (about 1 ms per MB, only
the header is parsed): less than a thread hop costs under load. Longer ones go to a worker thread."""


class Source(Protocol):
    """What resolving needs of a reference (``vlmkit.chat.ImageRef`` has it)."""

    @property
    def url(self) -> str: ...

    @property
    def format(self) -> str | None: ...

    @property
    def location(self) -> str: ...

    @property
    def file_id(self) -> bool: ...


S = TypeVar("S", bound=Source)

Resolved = ImageHandle | Document
"""What a reference reads as: an image, or a PDF document (its pages for models that take images)."""

Lookup = Callable[[Source], ImageHandle | bytes | None]
"""The caller's own sources: a handle, image bytes (sniffed here), or None for "not mine, read it as
usual"; it may raise to refuse a source. It runs on the caller's thread (the event loop in async
code), so it must only look things up, never wait."""


@dataclass(frozen=True)
class ResolveOptions:
    """How references are read. ``fetch`` governs URL fetching (allow-list, limits); ``max_pixels``
    bounds every image; ``keep_urls`` leaves ``http(s)://`` URLs as references; ``lookup`` is asked
    first (see :data:`Lookup`)."""

    fetch: FetchOptions | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS
    keep_urls: bool = False
    lookup: Lookup | None = None


_DEFAULT = ResolveOptions()

Kind = Literal["http", "data", "reference", "local"]
Route = Literal["fetch", "data", "reference", "local"]


def source_kind(url: str) -> Kind:
    """What a reference's text is: an http(s) URL, a data URL, a gs:// or s3:// URI, or local (a path,
    a ``file://`` URL or bare base64: reading it may touch the disk)."""
    if is_http(url):
        return "http"
    if url.startswith("data:"):
        return "data"
    if url.startswith(REFERENCE_SCHEMES):
        return "reference"
    return "local"


# --- decisions (shared) --------------------------------------------------------------------------


def _route(src: Source, options: ResolveOptions) -> Resolved | Route | None:
    """What to do with ``src``: the handle when the caller's lookup has it, None when it stays a
    reference, else how to read it."""
    if options.lookup is not None:
        found = options.lookup(src)
        if isinstance(found, ImageHandle):
            return found
        if found is not None:
            return _from_bytes(found, None, None, src, options)
    if src.file_id:
        raise ImageSourceError(
            f"{src.url!r} is the id of an image uploaded to a vlmkit server, and only that server can read it; "
            "send the image itself (a path, a data URL or an http(s) URL)"
        )
    kind = source_kind(src.url)
    if kind == "http":
        return None if options.keep_urls else "fetch"
    return kind


def _read(src: Source, route: Route, options: ResolveOptions) -> Resolved:
    """Read ``src`` by ``route`` here and now (the sync way; the async twin calls it where it may block)."""
    if route == "local" and "://" not in src.url[:16] and looks_like_base64(src.url) and not is_file(src.url):
        try:
            data = pybase64.b64decode(src.url, validate=True)
        except (binascii.Error, ValueError):
            data = b""
        if data:
            return _from_bytes(data, None, None, src, options)
    if route in ("data", "local"):
        return _from_bytes(*read_source(src.url), src, options)
    return prepare_image(src.url, format=src.format, max_pixels=options.max_pixels, fetch=options.fetch)


def _from_bytes(data: bytes, name: str | None, uri: str | None, src: Source, options: ResolveOptions) -> Resolved:
    """Bytes read for ``src``: an image, or a PDF (OpenAI's ``file`` parts carry PDFs), as its pages."""
    if is_pdf(data[:1024]) and src.format in (None, PDF_MIME):
        return prepare_document(data, name)
    return image_from_bytes(data, name, format=src.format, max_pixels=options.max_pixels, source=uri)


def _off_the_loop(src: Source, route: Route) -> bool:
    """Whether the async twin reads ``src`` on a worker thread: files, and data URLs too long to decode inline."""
    return route == "local" or (route == "data" and len(src.url) > INLINE_DATA_URL)


@contextlib.contextmanager
def _located(src: Source) -> Iterator[None]:
    try:
        yield
    except VlmkitError as exc:
        if src.location and not exc.location:
            exc.add_location(src.location)
        raise


# --- sync and async ------------------------------------------------------------------------------


def resolve_image(src: Source, options: ResolveOptions | None = None) -> Resolved | None:
    """The handle for ``src``, or None where it stays a reference (an http(s) URL with ``keep_urls``)."""
    opts = options or _DEFAULT
    with _located(src):
        route = _route(src, opts)
        return route if not isinstance(route, str) else _read(src, route, opts)


async def aresolve_image(src: Source, options: ResolveOptions | None = None) -> Resolved | None:
    """:func:`resolve_image` without blocking the event loop."""
    opts = options or _DEFAULT
    with _located(src):
        route = _route(src, opts)
        if not isinstance(route, str):
            return route
        if route == "fetch":
            return await aprepare_image(src.url, format=src.format, max_pixels=opts.max_pixels, fetch=opts.fetch)
        if _off_the_loop(src, route):
            return await anyio.to_thread.run_sync(_read, src, route, opts)
        return _read(src, route, opts)  # a small data URL, or a gs:// / s3:// reference: no I/O


def resolve_images(sources: Sequence[S], options: ResolveOptions | None = None) -> dict[S, Resolved]:
    """Each source's handle, read in order; sources that stay references are left out.

    With a chat: ``chat.with_images(resolve_images(chat.image_refs, options))``.
    """
    out: dict[S, Resolved] = {}
    for src in sources:
        handle = resolve_image(src, options)
        if handle is not None:
            out[src] = handle
    return out


async def aresolve_images(sources: Sequence[S], options: ResolveOptions | None = None) -> dict[S, Resolved]:
    """:func:`resolve_images` for async code: the images are read concurrently, off the event loop."""
    if not sources:
        return {}
    if len(sources) == 1:
        handles = [await aresolve_image(sources[0], options)]
    else:
        handles = list(await asyncio.gather(*(aresolve_image(src, options) for src in sources)))
    return {src: handle for src, handle in zip(sources, handles, strict=True) if handle is not None}
