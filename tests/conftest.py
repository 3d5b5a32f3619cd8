"""Shared fixtures: the real photographs in ../shared/images, and edge cases generated from them."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

SHARED_IMAGES = Path(__file__).resolve().parents[1].parent / "shared" / "images"


def photo_path(name: str) -> Path:
    path = SHARED_IMAGES / name
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: the tests need the repo's ../shared/images beside the checkout")
    return path


@pytest.fixture(scope="session")
def images_dir() -> Path:
    return photo_path("grace_hopper.jpg").parent


@pytest.fixture(scope="session")
def hopper_bytes() -> bytes:
    return photo_path("grace_hopper.jpg").read_bytes()


@pytest.fixture(scope="session")
def chelsea() -> Image.Image:
    with Image.open(photo_path("chelsea.png")) as im:
        return im.convert("RGB")


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    """``image`` saved in Pillow format ``fmt`` (HEIF via pillow-heif)."""
    if fmt == "HEIF":
        from pillow_heif import register_heif_opener

        register_heif_opener()
    buf = io.BytesIO()
    image.save(buf, format=fmt, **params)
    return buf.getvalue()
