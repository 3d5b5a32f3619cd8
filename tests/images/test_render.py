"""Rendering for a target: untouched when acceptable, otherwise the least change that fits the policy."""

from __future__ import annotations

import hashlib
import io

import pytest
from PIL import Image

from tests.conftest import encode, photo_path
from vlmkit import ImageSourceError, ImageTooLargeError, InvalidImageError
from vlmkit.images import (
    ANTHROPIC,
    BEDROCK,
    GEMINI,
    LLAMA_CPP,
    OLLAMA,
    OPENAI,
    ImageFormat,
    ImagePolicy,
    prepare_image,
    render_cache,
)
from vlmkit.images.render import RenderCache, needs_change


def decoded(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


@pytest.fixture(scope="module")
def twelve_mp_jpeg() -> bytes:
    with Image.open(photo_path("retina.jpg")) as im:
        return encode(im.convert("RGB").resize((4000, 3000)), "JPEG", quality=92)


def test_acceptable_image_passes_through_untouched(hopper_bytes: bytes) -> None:
    handle = prepare_image(hopper_bytes)
    for policy in (OPENAI, ANTHROPIC, GEMINI, BEDROCK, OLLAMA, LLAMA_CPP):
        out = handle.render(policy)
        assert out.data is handle.data, policy.name
        assert out is handle.original  # kept with the handle, not in the cache
        assert not out.changed
        assert out.mime_type == "image/jpeg"


def test_passing_an_image_through_never_hashes_it(hopper_bytes: bytes) -> None:
    handle = prepare_image(hopper_bytes)
    assert handle.render(OPENAI).data_url.startswith("data:image/jpeg;base64,")
    assert handle._identifier is None  # the identity is left until something needs it
    assert handle.identifier == hashlib.sha256(hopper_bytes).hexdigest()
    assert handle.name == f"image-{handle.identifier[:12]}.jpg"


def test_handles_are_equal_when_bytes_name_and_source_are(hopper_bytes: bytes) -> None:
    a, b, named = prepare_image(hopper_bytes), prepare_image(hopper_bytes), prepare_image(hopper_bytes, name="h.jpg")
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert a != named and named.name == "h.jpg"
    assert "image/jpeg" in repr(a) and a.identifier[:12] in repr(a)


def test_reprs_are_one_short_line_without_bytes_or_hashing(twelve_mp_jpeg: bytes) -> None:
    handle = prepare_image(twelve_mp_jpeg, name="big.jpg")
    size = f"{len(twelve_mp_jpeg):,} bytes"
    assert repr(handle) == f"ImageHandle('big.jpg', image/jpeg, 4000x3000, {size})"
    assert handle._identifier is None  # a repr does not hash the image to show its identity
    assert repr(handle.render(None)) == f"RenderedImage(image/jpeg, 4000x3000, {size}, original bytes)"
    out = handle.render(ANTHROPIC)
    shown = f"RenderedImage(image/jpeg, {out.width}x{out.height}, {len(out.data):,} bytes, re-encoded)"
    assert repr(out) == str(out) == shown and len(shown) < 80
    assert handle._identifier is not None  # rendering keyed its cache by the identity: now it is shown
    assert repr(handle).endswith(f", {size}, id {handle.identifier[:12]})")
    assert repr(prepare_image("gs://bucket/x", format="image/png")) == (
        "ImageHandle('x', image/png, reference to gs://bucket/x)"
    )


def test_data_url_is_exact_and_computed_once(hopper_bytes: bytes) -> None:
    out = prepare_image(hopper_bytes).render(OPENAI)
    assert out.data_url.startswith("data:image/jpeg;base64,/9j/")
    assert out.data_url is out.data_url
    assert prepare_image(hopper_bytes).render(None).data_url == out.data_url


@pytest.mark.parametrize("pillow_format", ["HEIF", "AVIF", "TIFF", "BMP"])
def test_unsupported_formats_become_jpeg(chelsea: Image.Image, pillow_format: str) -> None:
    handle = prepare_image(encode(chelsea, pillow_format))
    out = handle.render(ANTHROPIC)
    assert out.changed and out.mime_type == "image/jpeg"
    assert decoded(out.data).size == chelsea.size


def test_heic_passes_through_to_gemini(chelsea: Image.Image) -> None:
    handle = prepare_image(encode(chelsea, "HEIF"))
    out = handle.render(GEMINI)
    assert out.data is handle.data and out.mime_type == "image/heic"


def test_alpha_is_kept_as_png(chelsea: Image.Image) -> None:
    rgba = chelsea.convert("RGBA")
    rgba.putalpha(128)
    out = prepare_image(encode(rgba, "TIFF")).render(OLLAMA)
    assert out.mime_type == "image/png"
    assert decoded(out.data).mode == "RGBA"


def test_webp_with_alpha_for_llama_cpp_becomes_png(chelsea: Image.Image) -> None:
    rgba = chelsea.convert("RGBA")
    rgba.putalpha(200)
    out = prepare_image(encode(rgba, "WEBP", lossless=True)).render(LLAMA_CPP)
    assert out.mime_type == "image/png"
    assert decoded(out.data).getpixel((5, 5))[3] == 200


@pytest.mark.parametrize("fmt", ["GIF", "WEBP"])
def test_animation_becomes_its_first_frame(chelsea: Image.Image, fmt: str) -> None:
    first = Image.new("RGB", chelsea.size, (255, 0, 0))
    later = [Image.new("RGB", chelsea.size, (0, 0, 255))] * 2
    handle = prepare_image(encode(first, fmt, save_all=True, append_images=later, duration=50, loop=0))
    assert handle.animated
    out = handle.render(OPENAI)
    assert out.changed and out.mime_type in ("image/png", "image/webp")
    red, _, blue = decoded(out.data).convert("RGB").getpixel((10, 10))
    assert red > 200 and blue < 50
    assert prepare_image(out.data).frames == 1
    assert handle.render(OPENAI.replace(animated=True)).data is handle.data


def test_exif_orientation_is_baked_in(chelsea: Image.Image) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    marked = chelsea.copy()
    marked.paste((255, 0, 0), (0, 0, 40, 40))  # red block in the stored top-left corner
    handle = prepare_image(encode(marked, "JPEG", exif=exif, quality=95))
    out = handle.render(LLAMA_CPP)
    im = decoded(out.data)
    assert im.size == (chelsea.height, chelsea.width)
    assert (out.width, out.height) == im.size
    red, green, _ = im.convert("RGB").getpixel((im.width - 10, 10))  # rotated 90° clockwise: now top-right
    assert red > 200 and green < 60
    assert "Orientation" not in str(im.getexif().get(0x0112, ""))
    assert prepare_image(out.data).orientation == 1


def test_twelve_megapixels_are_made_ready_for_anthropic(twelve_mp_jpeg: bytes) -> None:
    handle = prepare_image(twelve_mp_jpeg)
    out = handle.render(ANTHROPIC)
    assert out.mime_type == "image/jpeg"
    assert max(out.width, out.height) <= 1568 and out.width * out.height <= 784 * 1568
    assert abs(out.width / out.height - 4 / 3) < 0.01
    assert decoded(out.data).size == (out.width, out.height)
    assert ANTHROPIC.fits_bytes(len(out.data))
    assert not needs_change(prepare_image(out.data), ANTHROPIC)


def test_byte_limit_lowers_quality_then_size(twelve_mp_jpeg: bytes) -> None:
    policy = ImagePolicy(name="tight", formats=frozenset({ImageFormat.JPEG}), max_bytes=60_000)
    out = prepare_image(twelve_mp_jpeg).render(policy)
    assert len(out.data) <= 60_000
    assert out.mime_type == "image/jpeg"


def test_png_photo_over_byte_limit_switches_to_jpeg(chelsea: Image.Image) -> None:
    policy = OPENAI.replace(name="small-png", max_bytes=100_000)
    out = prepare_image(encode(chelsea, "PNG")).render(policy)
    assert out.mime_type == "image/jpeg" and len(out.data) <= 100_000
    assert (out.width, out.height) == chelsea.size


def test_base64_limit_counts_the_encoded_form(twelve_mp_jpeg: bytes) -> None:
    policy = ImagePolicy(name="b64", formats=frozenset({ImageFormat.JPEG}), max_base64_bytes=400_000)
    out = prepare_image(twelve_mp_jpeg).render(policy)
    assert len(out.base64) <= 400_000


def test_cmyk_jpeg_is_converted_for_llama_cpp(chelsea: Image.Image) -> None:
    handle = prepare_image(encode(chelsea.convert("CMYK"), "JPEG"))
    assert handle.mode == "CMYK"
    out = handle.render(LLAMA_CPP)
    assert out.changed and decoded(out.data).mode == "RGB"
    assert handle.render(OPENAI).data is handle.data


def test_impossible_limits_are_a_clear_error(chelsea: Image.Image) -> None:
    policy = ImagePolicy(name="tiny", formats=frozenset({ImageFormat.JPEG}), max_bytes=50)
    with pytest.raises(ImageTooLargeError, match="cannot be brought under tiny's byte limit"):
        prepare_image(encode(chelsea, "PNG")).render(policy)
    gif_only = ImagePolicy(name="gif-only", formats=frozenset({ImageFormat.GIF}))
    with pytest.raises(ImageTooLargeError, match="accepts none of JPEG, PNG or WebP"):
        prepare_image(encode(chelsea, "PNG")).render(gif_only)


def test_reference_cannot_be_rendered() -> None:
    with pytest.raises(ImageSourceError, match="reference without image bytes"):
        prepare_image("gs://bucket/a.jpg").render(OPENAI)


def test_truncated_pixels_behind_a_good_header_are_invalid() -> None:
    broken_tiff = encode(Image.new("RGB", (64, 64)), "TIFF")[:-500]
    handle = prepare_image(broken_tiff)
    with pytest.raises(InvalidImageError, match="cannot be decoded"):
        handle.render(ANTHROPIC)


def test_repeat_render_is_served_from_the_cache(twelve_mp_jpeg: bytes) -> None:
    handle = prepare_image(twelve_mp_jpeg)
    first = handle.render(ANTHROPIC)
    hits = render_cache.hits
    assert handle.render(ANTHROPIC) is first
    assert prepare_image(twelve_mp_jpeg).render(ANTHROPIC) is first  # same bytes, same identifier
    assert render_cache.hits == hits + 2


def test_cache_stays_within_its_budget(chelsea: Image.Image) -> None:
    cache = RenderCache(max_bytes=3_000_000)
    handle = prepare_image(encode(chelsea, "PNG"))
    for edge in range(100, 450, 10):
        key = (handle.identifier, OPENAI.replace(max_long_edge=edge))
        cache.put(key, handle.render(key[1]))
    assert 0 < len(cache) < 35
    assert cache._size <= cache.max_bytes
