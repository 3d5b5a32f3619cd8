"""The real type comes from the bytes: every supported format, and the things that are not images."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from tests.conftest import encode
from vlmkit import ImageError, UnsupportedImageError
from vlmkit.images import ImageFormat, image_from_bytes, sniff_format
from vlmkit.images.sniff import describe_non_image

PILLOW_FORMATS = [
    ("JPEG", ImageFormat.JPEG),
    ("PNG", ImageFormat.PNG),
    ("WEBP", ImageFormat.WEBP),
    ("GIF", ImageFormat.GIF),
    ("BMP", ImageFormat.BMP),
    ("TIFF", ImageFormat.TIFF),
    ("HEIF", ImageFormat.HEIC),
    ("AVIF", ImageFormat.AVIF),
]


@pytest.mark.parametrize(("pillow_format", "expected"), PILLOW_FORMATS)
def test_every_supported_format_is_sniffed_and_probed(
    chelsea: Image.Image, pillow_format: str, expected: ImageFormat
) -> None:
    data = encode(chelsea, pillow_format)
    assert sniff_format(data) is expected
    handle = image_from_bytes(data)
    assert handle.mime_type == expected.mime_type
    assert (handle.width, handle.height) == chelsea.size
    assert handle.size_bytes == len(data)


@pytest.mark.parametrize(
    ("data", "named"),
    [
        (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"></svg>', "SVG"),
        (b"<svg width='10' height='10'></svg>", "SVG"),
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj", "PDF"),
        (b"hello, I am plain text and not a picture", "text"),
        (b"<!DOCTYPE html><html><body>404</body></html>", "HTML"),
        (b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom", "ISO media"),
        (b"PK\x03\x04\x14\x00\x00\x00", "ZIP"),
        (b"", "empty"),
        (bytes(range(200, 256)), "unrecognised binary"),
    ],
)
def test_non_images_are_refused_naming_what_was_found(data: bytes, named: str) -> None:
    assert sniff_format(data) is None
    with pytest.raises(UnsupportedImageError) as info:
        image_from_bytes(data)
    assert named in str(info.value)
    assert "Supported: JPEG, PNG" in str(info.value)


def test_the_file_name_never_decides_the_type(chelsea: Image.Image) -> None:
    png = encode(chelsea, "PNG")
    handle = image_from_bytes(png, name="holiday.jpg")
    assert handle.mime_type == "image/png"
    assert handle.name == "holiday.jpg"


def test_describe_non_image_is_short_for_long_text() -> None:
    text = describe_non_image(b"x" * 1000)
    assert text.startswith("text (") and len(text) < 80


def assert_image_or_vlmkit_error(data: bytes) -> None:
    """Either a well-formed handle comes back, or one of vlmkit's image errors with a message."""
    try:
        handle = image_from_bytes(data)
    except ImageError as exc:
        assert exc.status_code == 400 and len(str(exc)) > 20
        return
    assert handle.width is not None and handle.width > 0
    assert handle.height is not None and handle.height > 0
    assert sniff_format(data) is handle.format


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_give_an_image_or_vlmkit_error(data: bytes) -> None:
    assert_image_or_vlmkit_error(data)


MAGICS = [b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*"]


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(MAGICS), st.binary(max_size=1024))
def test_real_magic_with_garbage_after_gives_only_vlmkit_errors(magic: bytes, tail: bytes) -> None:
    assert_image_or_vlmkit_error(magic + tail)


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=4, max_size=64), st.binary(max_size=512))
def test_riff_and_isobmff_shapes_give_only_vlmkit_errors(head: bytes, tail: bytes) -> None:
    for brand in (b"ftypheic", b"ftypavif"):
        assert_image_or_vlmkit_error(head[:4] + brand + tail)
    assert_image_or_vlmkit_error(b"RIFF" + head[:4] + b"WEBP" + tail)
