"""Token estimates against the providers' documented worked examples."""

from __future__ import annotations

import pytest
from PIL import Image

from tests.conftest import encode
from vlmkit import VlmkitError
from vlmkit.images import estimate_image_tokens, prepare_image
from vlmkit.images.tokens import anthropic_tokens, gemini_tokens, openai_tokens


@pytest.mark.parametrize(
    ("size", "detail", "tokens"),
    [
        ((1024, 1024), "high", 765),  # 768x768 -> 4 tiles
        ((2048, 4096), "high", 1105),  # 1024x2048 -> 768x1536 -> 6 tiles
        ((4096, 8192), "low", 85),
        ((512, 512), "auto", 255),  # one tile
    ],
)
def test_openai_tiles(size: tuple[int, int], detail: str, tokens: int) -> None:
    assert openai_tokens(*size, detail=detail) == tokens  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("size", "tokens"),
    [
        ((200, 200), 54),
        ((1000, 1000), 1334),
        ((1092, 1092), 1590),
        ((4000, 3000), 1639),  # scaled to 1280x960 first
    ],
)
def test_anthropic_pixels_over_750(size: tuple[int, int], tokens: int) -> None:
    assert anthropic_tokens(*size) == tokens


@pytest.mark.parametrize(
    ("size", "detail", "tokens"),
    [((384, 384), "auto", 258), ((1024, 1024), "high", 1032), ((3000, 3000), "low", 258)],
)
def test_gemini_tiles(size: tuple[int, int], detail: str, tokens: int) -> None:
    assert gemini_tokens(*size, detail=detail) == tokens  # type: ignore[arg-type]


def test_estimate_from_a_handle(chelsea: Image.Image) -> None:
    handle = prepare_image(encode(chelsea, "PNG"))
    assert estimate_image_tokens(handle, "openai", detail="low") == 85
    assert estimate_image_tokens(handle, "anthropic") == anthropic_tokens(451, 300)


def test_estimate_errors_say_what_is_known(chelsea: Image.Image) -> None:
    handle = prepare_image(encode(chelsea, "PNG"))
    with pytest.raises(VlmkitError, match="known targets: anthropic, gemini, openai"):
        estimate_image_tokens(handle, "mystery")
    with pytest.raises(VlmkitError, match="detail must be 'low', 'high' or 'auto'"):
        estimate_image_tokens(handle, "openai", detail="ultra")  # type: ignore[arg-type]
    with pytest.raises(VlmkitError, match="unknown"):
        estimate_image_tokens(prepare_image("gs://b/x.png"), "gemini")
