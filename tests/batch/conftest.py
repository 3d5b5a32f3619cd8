"""Fixtures of the batch tests: a model store holding the generated test VLM, folders of distinct
images made from the real photos, and the providers' loopback upstream."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import encode, photo_path

# the providers' fixtures: loopback only, no keys from the environment, the scriptable upstream
from tests.providers.conftest import loopback_only, no_provider_env, upstream  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]
MODEL = "local/tiny-random-vlm"
PHOTOS = ("grace_hopper.jpg", "rocket.jpg", "retina.jpg", "chelsea.png", "coffee.png")


@pytest.fixture(scope="session")
def model_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A VLMKIT_HOME where ``tiny-random-vlm`` is downloaded (written locally by ``vlmkit get``)."""
    from vlmkit.cli import main

    home = tmp_path_factory.mktemp("batch-home")
    saved = os.environ.get("VLMKIT_HOME")
    os.environ["VLMKIT_HOME"] = str(home)
    try:
        assert main(["get", "tiny-random-vlm"]) == 0
    finally:
        if saved is None:
            del os.environ["VLMKIT_HOME"]
        else:
            os.environ["VLMKIT_HOME"] = saved
    return home


@pytest.fixture()
def home(model_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("VLMKIT_HOME", str(model_home))
    return model_home


def distinct_images(folder: Path, count: int, size: int = 96) -> list[Path]:
    """``count`` small JPEGs cut from the real photos, each different (so each has its own content hash)."""
    folder.mkdir(parents=True, exist_ok=True)
    sources = []
    for name in PHOTOS:
        with Image.open(photo_path(name)) as im:
            sources.append(im.convert("RGB"))
    paths = []
    for i in range(count):
        im = sources[i % len(sources)]
        step = i // len(sources)
        box = (step * 7 % (im.width - size), step * 5 % (im.height - size))
        crop = im.crop((*box, box[0] + size, box[1] + size))
        path = folder / f"img{i:03d}.jpg"
        path.write_bytes(encode(crop, "JPEG", quality=85))
        paths.append(path)
    return paths
