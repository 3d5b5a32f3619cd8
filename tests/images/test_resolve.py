"""Reading the images a request names (``vlmkit.images.resolve``): the sync and async twins read every
kind of source alike, keep URLs where asked, plug in a caller's own sources, and say where a bad
image was. URLs are fetched from a real HTTP server on 127.0.0.1 (allow-listed, as tests must)."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.conftest import ImageServer, guard_loopback, photo_path
from vlmkit.chat import ImageRef
from vlmkit.errors import (
    ImageFetchError,
    ImageFormatMismatchError,
    ImageSourceError,
    InvalidMessageError,
    UnsupportedImageError,
)
from vlmkit.images import ImageHandle, image_from_bytes
from vlmkit.images.fetch import FetchOptions
from vlmkit.images.resolve import (
    INLINE_DATA_URL,
    ResolveOptions,
    Source,
    aresolve_image,
    aresolve_images,
    resolve_image,
    resolve_images,
    source_kind,
)
from vlmkit.images.source import looks_like_base64

HOPPER = photo_path("grace_hopper.jpg").read_bytes()
ALLOW = FetchOptions(allow_hosts=frozenset({"127.0.0.1"}))


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    guard_loopback(monkeypatch)


def both(src: Source, options: ResolveOptions | None = None) -> tuple[ImageHandle | None, ImageHandle | None]:
    """What the sync twin and the async twin (in its own event loop) make of ``src``."""
    return resolve_image(src, options), anyio.run(aresolve_image, src, options)


def data_url(data: bytes, mime: str = "image/jpeg") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def padded_jpeg(at_least: int) -> bytes:
    """The photo with comment segments after its start marker: a valid JPEG of ``at_least`` bytes or more."""
    comment = b"\xff\xfe\xff\xff" + b"\0" * 65533
    return HOPPER[:2] + comment * (at_least // len(comment) + 1) + HOPPER[2:]


def test_source_kinds() -> None:
    assert {
        url: source_kind(url)
        for url in ("https://a/b.png", "HTTP://A/B", "data:image/png;base64,AA", "gs://b/c.png", "s3://b/c",
                    "file:///tmp/x.png", "photo.jpg", "/x/y.png", "iVBORw0KGgoAAAANSUhEUg==")
    } == {
        "https://a/b.png": "http", "HTTP://A/B": "http", "data:image/png;base64,AA": "data",
        "gs://b/c.png": "reference", "s3://b/c": "reference", "file:///tmp/x.png": "local",
        "photo.jpg": "local", "/x/y.png": "local", "iVBORw0KGgoAAAANSUhEUg==": "local",
    }  # fmt: skip


def test_base64_is_judged_by_one_rule() -> None:
    assert looks_like_base64(base64.b64encode(HOPPER[:600]).decode())
    assert looks_like_base64("iVBORw0KGgoAAAANSUhEUg==") and looks_like_base64("a-b_c" * 4)  # URL-safe too
    assert not looks_like_base64("short") and not looks_like_base64("photos/grace hopper.jpg")
    assert not looks_like_base64("grace_hopper_1906.jpg")


def test_the_twins_read_every_kind_of_source_alike(image_server: ImageServer, tmp_path: Path) -> None:
    path = tmp_path / "hopper.jpg"
    path.write_bytes(HOPPER)
    big = padded_jpeg(INLINE_DATA_URL)  # its data URL is decoded on a worker thread in async code
    sources = {
        "data URL": ImageRef(data_url(HOPPER)),
        "long data URL": ImageRef(data_url(big)),
        "bare base64": ImageRef(base64.b64encode(HOPPER).decode()),
        "path": ImageRef(str(path)),
        "file URL": ImageRef(path.as_uri()),
        "http URL": ImageRef(image_server.url(), format="image/jpeg"),
    }
    options = ResolveOptions(fetch=ALLOW)
    for what, src in sources.items():
        sync, async_ = both(src, options)
        assert sync is not None and async_ is not None, what
        expected = image_from_bytes(big if what == "long data URL" else HOPPER).identifier
        assert sync.identifier == async_.identifier == expected, what
        assert (sync.width, sync.mime_type) == (async_.width, "image/jpeg"), what
    assert image_server.served == ["/grace_hopper.jpg", "/grace_hopper.jpg"]
    sync, async_ = both(ImageRef("gs://bucket/cat.png"))
    assert sync == async_ and sync is not None and sync.is_reference and sync.mime_type == "image/png"


def test_urls_stay_references_where_asked(image_server: ImageServer) -> None:
    url, data = ImageRef(image_server.url()), ImageRef(data_url(HOPPER), "low")
    keep = ResolveOptions(keep_urls=True)
    assert both(url, keep) == (None, None)
    read = resolve_images([url, data], keep)
    assert list(read) == [data] and anyio.run(aresolve_images, [url, data], keep).keys() == read.keys()
    assert image_server.served == []


def test_a_callers_own_sources_come_first() -> None:
    known = image_from_bytes(HOPPER)

    def lookup(src: Source) -> ImageHandle | bytes | None:
        if src.url == "upload-1":
            return known
        if src.url == "lifted-1":
            return HOPPER
        if src.url.startswith("/"):
            raise InvalidMessageError("this server reads no paths")
        return None

    options = ResolveOptions(lookup=lookup)
    assert both(ImageRef("upload-1", file_id=True), options) == (known, known)
    sync, async_ = both(ImageRef("lifted-1"), options)
    assert sync is not None and async_ is not None and sync.identifier == async_.identifier == known.identifier
    assert both(ImageRef(data_url(HOPPER)), options)[0] == known  # not the lookup's: read as usual
    for src, error, message in [
        (ImageRef("/etc/passwd", location="messages[0].content[1]"), InvalidMessageError,
         "messages[0].content[1]: this server reads no paths"),
        (ImageRef("lifted-1", format="image/png", location="messages[2].content[0]"), ImageFormatMismatchError,
         "messages[2].content[0]: format='image/png' was declared but the bytes are image/jpeg"),
    ]:  # fmt: skip
        for resolve in (lambda s: resolve_image(s, options), lambda s: anyio.run(aresolve_image, s, options)):
            with pytest.raises(error) as err:
                resolve(src)
            assert err.value.message.startswith(message)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("src", "error", "message"),
    [
        (ImageRef("/no/such/photo.jpg", location="messages[0].content[1]"), ImageSourceError,
         "messages[0].content[1]: '/no/such/photo.jpg' is neither an existing file nor a URL"),
        (ImageRef("data:image/png;base64,aGVsbG8=", location="messages[1].content[0]"), UnsupportedImageError,
         "messages[1].content[0]: the file is neither an image nor a PDF: found text ('hello'). Send an image"),
        (ImageRef("file-abc", location="messages[0].content[0]", file_id=True), ImageSourceError,
         "messages[0].content[0]: 'file-abc' is the id of an image uploaded to a vlmkit server, and only that "
         "server can read it; send the image itself (a path, a data URL or an http(s) URL)"),
        (ImageRef("http://127.0.0.1:9/x.png", location="messages[3].content[2]"), ImageFetchError,
         "messages[3].content[2]: refused http://127.0.0.1:9/x.png: 127.0.0.1 is a loopback address"),
    ],
)  # fmt: skip
def test_errors_say_where_the_image_was(src: ImageRef, error: type[Exception], message: str) -> None:
    for resolve in (resolve_image, lambda s: anyio.run(aresolve_image, s)):
        with pytest.raises(error) as err:
            resolve(src)
        exc: Any = err.value
        assert exc.message.startswith(message), exc.message
        assert exc.location == src.location and exc.status_code == 400
