"""prepare_image: every kind of source, and every way a source can be wrong."""

from __future__ import annotations

import base64
import io
import struct
import warnings
import zlib
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import encode, photo_path
from vlmkit import (
    ImageFormatMismatchError,
    ImageSourceError,
    ImageTooLargeError,
    InvalidImageError,
    UnsupportedImageError,
)
from vlmkit.images import OPENAI, ImageHandle, aprepare_image, prepare_image

HOPPER = photo_path("grace_hopper.jpg")
PILLOWS_LIMIT = 89_478_485
"""Pillow's ``Image.MAX_IMAGE_PIXELS`` as it ships."""


def test_path_str_pathlike_bytes_fileobj_agree(hopper_bytes: bytes) -> None:
    handles = [
        prepare_image(str(HOPPER)),
        prepare_image(HOPPER),
        prepare_image(hopper_bytes),
        prepare_image(bytearray(hopper_bytes)),
        prepare_image(memoryview(hopper_bytes)),
        prepare_image(io.BytesIO(hopper_bytes)),
    ]
    assert len({h.identifier for h in handles}) == 1
    first = handles[0]
    assert first.name == "grace_hopper.jpg"
    assert (first.mime_type, first.width, first.height, first.frames) == ("image/jpeg", 512, 600, 1)
    assert first.size_bytes == len(hopper_bytes)
    assert first.data is not None and first.data == hopper_bytes


def test_open_binary_file_keeps_its_name() -> None:
    with HOPPER.open("rb") as fh:
        handle = prepare_image(fh)
    assert handle.name == "grace_hopper.jpg"


def test_explicit_name_wins_and_bytes_get_a_content_name(hopper_bytes: bytes) -> None:
    assert prepare_image(HOPPER, "portrait.jpg").name == "portrait.jpg"
    unnamed = prepare_image(hopper_bytes)
    assert unnamed.name == f"image-{unnamed.identifier[:12]}.jpg"


def test_bytes_are_always_data_never_a_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.jpg").write_bytes(HOPPER.read_bytes())
    with pytest.raises(UnsupportedImageError, match="found text"):
        prepare_image(b"x.jpg")


def test_pil_image_is_encoded_losslessly(chelsea: Image.Image) -> None:
    handle = prepare_image(chelsea)
    assert handle.mime_type == "image/png"
    with Image.open(io.BytesIO(handle.data)) as back:
        assert back.size == chelsea.size
        assert back.convert("RGB").tobytes() == chelsea.tobytes()


def test_data_url_and_file_url(hopper_bytes: bytes) -> None:
    b64 = base64.b64encode(hopper_bytes).decode()
    from_data = prepare_image(f"data:image/jpeg;base64,{b64}")
    from_file = prepare_image(HOPPER.as_uri())
    assert from_data.identifier == from_file.identifier
    assert from_file.source == HOPPER.as_uri()


def test_wrapped_or_spaced_base64_is_still_read(hopper_bytes: bytes) -> None:
    b64 = base64.b64encode(hopper_bytes).decode()
    wrapped = "\n".join(b64[i : i + 76] for i in range(0, len(b64), 76))  # MIME line breaks
    for text in (wrapped + "\n", " " + b64 + " "):
        assert prepare_image(f"data:image/jpeg;base64,{text}").data == hopper_bytes


def test_unpadded_base64_is_still_read(hopper_bytes: bytes) -> None:
    b64 = base64.b64encode(hopper_bytes).decode().rstrip("=")
    assert len(b64) % 4 and prepare_image(f"data:image/jpeg;base64,{b64}").data == hopper_bytes


REMEDY = "send the image's bytes in standard base64 (A-Z, a-z, 0-9, + and /), e.g. base64.b64encode(data)"


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        ("!!!!", "'!' at offset 0 of the data is not a base64 character"),
        ("iVBORw0KGgo*AAA", "'*' at offset 11 of the data is not a base64 character"),
        ('iVBO\nRw0K"Ggo', "'\"' at offset 9 of the data is not a base64 character"),
        (
            "iVBORw0K_Ggo",
            "'_' at offset 8 of the data is not a base64 character (URL-safe base64: use + and / instead of - and _)",
        ),
        ("iVBORw0KGgoAAAANS", "17 characters cannot be base64 (one too many, or the data is cut short)"),
        ("AAAA==AAAA", "'=' padding in the middle of the data, at character 4 of 10 (two base64 texts joined?)"),
    ],
)
def test_invalid_base64_says_what_and_where(payload: str, problem: str) -> None:
    with pytest.raises(ImageSourceError) as info:
        prepare_image(f"data:image/png;base64,{payload}")
    assert str(info.value) == f"the data URL's base64 is invalid: {problem}; {REMEDY}"


def test_a_data_url_with_no_data_says_so() -> None:
    with pytest.raises(ImageSourceError) as info:
        prepare_image("data:image/png;base64,  ")
    assert str(info.value) == "the data URL has no data after its ','; put the image's base64 there"


async def test_a_coroutine_is_told_to_be_awaited(hopper_bytes: bytes) -> None:
    pending = aprepare_image(hopper_bytes)
    with pytest.raises(ImageSourceError) as info:
        prepare_image(pending)
    assert str(info.value) == "cannot make an image from a coroutine: await it first, and pass what it returns"
    assert (await pending).width == 512


def test_data_url_label_is_not_trusted(chelsea: Image.Image) -> None:
    png = encode(chelsea, "PNG")
    handle = prepare_image("data:image/jpeg;base64," + base64.b64encode(png).decode())
    assert handle.mime_type == "image/png"


def test_references_are_kept_with_their_declared_format() -> None:
    handle = prepare_image("gs://my-gs-image", format="image/jpeg")
    assert handle.is_reference
    assert (handle.mime_type, handle.source, handle.size_bytes) == ("image/jpeg", "gs://my-gs-image", None)
    assert prepare_image("s3://bucket/cat.png").mime_type == "image/png"
    with pytest.raises(ImageSourceError, match="reference without image bytes"):
        _ = handle.data


def test_handle_is_returned_as_is(hopper_bytes: bytes) -> None:
    handle = prepare_image(hopper_bytes)
    assert prepare_image(handle) is handle


@pytest.mark.parametrize(
    ("src", "message"),
    [
        ("missing/photo.jpg", "is neither an existing file nor a URL"),
        ("ftp://example.com/a.png", "uses the scheme ftp://"),
        ("iVBORw0KGgo" + "A" * 400, "looks like base64: pass it as a data URL"),
        ("data:image/png;base64", "has no ','"),
    ],
)
def test_bad_strings_say_what_is_wrong(src: str, message: str) -> None:
    with pytest.raises(ImageSourceError, match=message):
        prepare_image(src)


def test_directory_and_wrong_types(tmp_path: Path) -> None:
    with pytest.raises(ImageSourceError, match="is a directory"):
        prepare_image(tmp_path)
    with pytest.raises(ImageSourceError, match="no such image file"):
        prepare_image(tmp_path / "nope.png")
    with pytest.raises(ImageSourceError, match="cannot make an image from a int"):
        prepare_image(42)
    with HOPPER.open("r", encoding="latin-1") as text_file, pytest.raises(ImageSourceError, match="text mode"):
        prepare_image(text_file)


def test_declared_format_must_agree(chelsea: Image.Image) -> None:
    png = encode(chelsea, "PNG")
    assert prepare_image(png, format="image/png").mime_type == "image/png"
    assert prepare_image(encode(chelsea, "JPEG"), format="image/jpg").mime_type == "image/jpeg"
    with pytest.raises(ImageFormatMismatchError) as info:
        prepare_image(png, format="image/jpeg")
    assert "format='image/jpeg' was declared but the bytes are image/png" in str(info.value)
    assert (info.value.declared, info.value.actual) == ("image/jpeg", "image/png")
    with pytest.raises(UnsupportedImageError, match="'application/pdf' is not an image type"):
        prepare_image(png, format="application/pdf")


@pytest.mark.parametrize("pillow_format", ["JPEG", "PNG", "GIF", "WEBP", "BMP"])
def test_truncated_images_are_invalid(chelsea: Image.Image, pillow_format: str) -> None:
    data = encode(chelsea, pillow_format)
    with pytest.raises(InvalidImageError, match="truncated"):
        prepare_image(data[: len(data) * 2 // 3])


def test_jpeg_with_trailing_bytes_after_the_end_marker_is_fine(hopper_bytes: bytes) -> None:
    assert prepare_image(hopper_bytes + b"\x00" * 100 + b"trailer").width == 512


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00")) + chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [12_000, 100_000])
def test_bomb_headers_are_refused_before_decoding(side: int) -> None:
    with pytest.raises(ImageTooLargeError, match="refused before"):
        prepare_image(_png_header_only(side, side))


@pytest.mark.parametrize("size", [(10_000, 9_500), (14_000, 14_000), (20_000, 10_000)])
def test_over_pillows_limits_is_vlmkits_own_error_with_no_warning(size: tuple[int, int]) -> None:
    # 95 MP is over Pillow's warning limit (89.5 MP) and under max_pixels; 196 and 200 MP are over its
    # error limit (179 MP): Pillow's words and warning never reach the user, vlmkit's limit decides
    width, height = size
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a DecompressionBombWarning would fail the test here
        if width * height <= 100_000_000:
            assert prepare_image(_png_header_only(width, height)).width == width
        else:
            with pytest.raises(ImageTooLargeError) as info:
                prepare_image(_png_header_only(width, height))
            assert str(info.value) == (
                f"the PNG image is {width}x{height} = {width * height:,} pixels, over the limit of 100,000,000; it "
                "is refused before decoding. Downscale it first, or raise max_pixels if you trust the source"
            )
            assert prepare_image(_png_header_only(width, height), max_pixels=width * height).height == height
    assert Image.MAX_IMAGE_PIXELS == PILLOWS_LIMIT  # Pillow's own setting, for everyone else, untouched


def test_a_gif_frame_reaching_far_outside_its_image_is_refused_with_the_limit_that_applies() -> None:
    screen = b"GIF89a" + struct.pack("<HHBBB", 10, 10, 0, 0, 0)  # a 10x10 image...
    frame = b"," + struct.pack("<HHHHB", 0, 0, 20_000, 20_000, 0) + b"\x02\x02\x44\x01\x00;"  # ...a 400 MP frame
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ImageTooLargeError) as info:
            prepare_image(screen + frame)
        assert str(info.value) == (
            "the GIF image has a frame of more than 100,000,000 pixels, reaching outside the size its header gives: "
            "over the limit; it is refused before decoding. Downscale it first, or raise max_pixels if you trust "
            "the source"
        )
        with pytest.raises(ImageTooLargeError) as pillows:  # max_pixels allows it: Pillow's own limit is named
            prepare_image(screen + frame, max_pixels=1_000_000_000)
        assert str(pillows.value) == (
            "the GIF image needs more than 178,956,970 pixels decoded at once, over Pillow's decompression-bomb "
            "limit (PIL.Image.MAX_IMAGE_PIXELS), which applies beside vlmkit's max_pixels; downscale the image "
            "first, or raise PIL.Image.MAX_IMAGE_PIXELS if you trust the source"
        )


def test_a_pixel_decode_over_pillows_limit_says_what_to_do(
    chelsea: Image.Image, monkeypatch: pytest.MonkeyPatch
) -> None:
    # TIFF pixels still pass Pillow's check when decoded; a user who raised max_pixels past it is told both limits
    handle = prepare_image(encode(chelsea, "TIFF"))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", handle.width * handle.height // 4)
    with pytest.raises(ImageTooLargeError) as info:
        handle.render(OPENAI.replace(name="decoded-here"))  # a policy of its own: no cached rendering
    assert "over Pillow's decompression-bomb limit (PIL.Image.MAX_IMAGE_PIXELS)" in str(info.value)
    assert str(info.value).endswith(
        "downscale the image first, or raise PIL.Image.MAX_IMAGE_PIXELS if you trust the source"
    )


def test_pixel_limit_is_configurable(hopper_bytes: bytes) -> None:
    with pytest.raises(ImageTooLargeError, match="512x600 = 307,200 pixels, over the limit of 100,000"):
        prepare_image(hopper_bytes, max_pixels=100_000)


def test_exif_orientation_is_reported_as_seen(chelsea: Image.Image) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    handle = prepare_image(encode(chelsea, "JPEG", exif=exif))
    assert handle.orientation == 6
    assert (handle.width, handle.height) == (chelsea.height, chelsea.width)


def test_animated_frames_are_counted(chelsea: Image.Image) -> None:
    frames = [chelsea, chelsea.rotate(90), chelsea.rotate(180)]
    for fmt in ("GIF", "WEBP"):
        data = encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)
        assert prepare_image(data).frames == 3


def test_handle_serialises_without_network_and_keeps_identity(hopper_bytes: bytes) -> None:
    handle = prepare_image(hopper_bytes, "hopper.jpg")
    back = ImageHandle.from_dict(handle.to_dict())
    assert back == handle
    assert back.data == hopper_bytes
    ref = prepare_image("gs://bucket/x", format="image/png")
    assert ImageHandle.from_dict(ref.to_dict()) == ref


def test_tampered_serialised_handle_is_refused(hopper_bytes: bytes, chelsea: Image.Image) -> None:
    obj = prepare_image(hopper_bytes).to_dict()
    obj["data"] = base64.b64encode(encode(chelsea, "PNG")).decode()
    with pytest.raises(ImageSourceError, match="does not match its identifier"):
        ImageHandle.from_dict(obj)
    with pytest.raises(ImageSourceError, match="needs 'identifier'"):
        ImageHandle.from_dict({"data": "xx"})


async def test_async_prepare_matches_sync(hopper_bytes: bytes) -> None:
    handle = await aprepare_image(HOPPER)
    assert handle.identifier == prepare_image(hopper_bytes).identifier


def test_png_exif_orientation_is_read_without_decoding(chelsea: Image.Image) -> None:
    exif = Image.Exif()
    exif[0x0112] = 8
    handle = prepare_image(encode(chelsea, "PNG", exif=exif))
    assert handle.orientation == 8
    assert (handle.width, handle.height) == (chelsea.height, chelsea.width)


def test_top_level_prepare_image_is_the_same_function() -> None:
    import vlmkit

    assert vlmkit.prepare_image is prepare_image
    assert vlmkit.prepare_image(HOPPER).name == "grace_hopper.jpg"
