"""Fixtures for the engine tests: the generated tiny test VLM (real llama.cpp path, random weights)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from PIL import Image
from tests.conftest import encode

from vlmkit.chat import Chat
from vlmkit.engine import Engine, LoadOptions
from vlmkit.engine.synthetic import write_test_model, write_test_text_model
from vlmkit.images import ImageHandle, image_from_bytes, prepare_image

# one thread: the tiny model needs no more, and spinning threads crawl on a shared, busy CPU
ONE_THREAD = LoadOptions(cpu_threads=1)

IMAGES = Path(__file__).resolve().parents[2] / "examples" / "images"


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_test_model(tmp_path_factory.mktemp("tiny-vlm"))


@pytest.fixture(scope="session")
def tiny_text_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_test_text_model(tmp_path_factory.mktemp("tiny-text"))


@pytest.fixture()
def engine(tiny_model: tuple[Path, Path], tiny_text_model: Path) -> Iterator[Engine]:
    e = Engine(default_ttl=None, load_options=ONE_THREAD)
    e.register("tiny", tiny_model[0], tiny_model[1])
    e.register("tiny-text", tiny_text_model)
    yield e
    e.close()


@pytest.fixture(scope="session")
def hopper() -> ImageHandle:
    return prepare_image(IMAGES / "grace_hopper.jpg")


@pytest.fixture(scope="session")
def rocket() -> ImageHandle:
    return prepare_image(IMAGES / "rocket.jpg")


@pytest.fixture(scope="session")
def webp_cat(chelsea: Image.Image) -> ImageHandle:
    """A lossless WebP: stb_image cannot read it, so vlmkit decodes it and hands mtmd its pixels."""
    return image_from_bytes(encode(chelsea, "WEBP", lossless=True), "chelsea.webp")


def _image_chat(image: ImageHandle, text: str = "Describe this image.") -> Chat:
    chat = Chat()
    chat.add_user_message(text, images=[image])
    return chat


@pytest.fixture(scope="session")
def image_chat() -> Callable[..., Chat]:
    """``image_chat(image, text=...)``: a chat with one user message holding the image."""
    return _image_chat
