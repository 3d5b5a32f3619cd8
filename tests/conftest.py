"""Shared fixtures: the real photographs in examples/images, and edge cases generated from them."""

from __future__ import annotations

import io
import ipaddress
import socket
from pathlib import Path
from typing import Any

import anyio
import pytest
from PIL import Image

PHOTOS = Path(__file__).resolve().parents[1] / "examples" / "images"


def photo_path(name: str) -> Path:
    path = PHOTOS / name
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: the tests read the photos kept in examples/images")
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


# --- the guard: tests reach loopback only ---------------------------------------------------------


def is_numeric_host(host: object) -> bool:
    try:
        ipaddress.ip_address(str(host).split("%")[0])
    except ValueError:
        return False
    return True


def guard_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any attempt to connect anywhere but 127.0.0.1, or to ask DNS about a name."""
    real_connect, real_aconnect, real_gai = socket.create_connection, anyio.connect_tcp, socket.getaddrinfo

    def connect(address: tuple[str, int], *args: Any, **kwargs: Any) -> socket.socket:
        assert address[0] == "127.0.0.1", f"the test tried to connect to {address}"
        return real_connect(address, *args, **kwargs)

    async def aconnect(remote_host: Any, remote_port: int, **kwargs: Any) -> Any:
        assert str(remote_host) == "127.0.0.1", f"the test tried to connect to {remote_host}"
        return await real_aconnect(remote_host, remote_port, **kwargs)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        assert host is None or is_numeric_host(host), f"the test tried to resolve {host!r}"
        return real_gai(host, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", connect)
    monkeypatch.setattr(anyio, "connect_tcp", aconnect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
