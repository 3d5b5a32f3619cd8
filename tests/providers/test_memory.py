"""A finished request frees its megabytes at once, not at the garbage collector's next full pass.

httpx keeps a response and its request in a reference cycle, and a nested function that calls itself
is one too: anything they reach (the request body sent upstream, a rendered data URL) lives until
the collector's next full pass. Under a gateway's load that was dozens of image bodies at once.
With the collector switched off, memory allocated by vlmkit must not grow request after request.
"""

from __future__ import annotations

import asyncio
import gc
import io
import random
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

import vlmkit
from tests.providers.conftest import Upstream
from vlmkit import Chat
from vlmkit.images import ImageHandle, prepare_image
from vlmkit.providers import Transport, acompletion, completion

REQUESTS = 4


@pytest.fixture(scope="module")
def big_image() -> ImageHandle:
    rng = random.Random(7)
    noise = Image.frombytes("RGB", (800, 800), rng.randbytes(800 * 800 * 3))
    buf = io.BytesIO()
    noise.save(buf, "JPEG", quality=95)
    assert len(buf.getvalue()) > 500_000
    return prepare_image(buf.getvalue())


@pytest.fixture()
def collector_off() -> Iterator[None]:
    gc.collect()
    gc.disable()
    tracemalloc.start()
    try:
        yield
    finally:
        tracemalloc.stop()
        gc.enable()


# vlmkit's own source files, by their directory: a pattern such as "*/vlmkit/*" also matched every
# package of a virtual environment made inside a checkout named vlmkit (anyio's, httpx's, asyncio's
# allocations), so the test measured the event loop's caches instead of vlmkit.
PACKAGE_FILES = str(Path(vlmkit.__file__).parent / "*")


def vlmkit_bytes() -> int:
    snapshot = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(True, PACKAGE_FILES)])
    return sum(stat.size for stat in snapshot.statistics("filename"))


def test_sync_requests_free_their_bodies(upstream: Upstream, big_image: ImageHandle, collector_off: None) -> None:
    chat = Chat()
    chat.add_user_message("What is this?", images=[big_image])
    transport = Transport()
    api = {"api_base": upstream.base + "/v1", "api_key": "sk-test", "transport": transport}
    completion("openai/gpt-4o", chat, **api)  # warm: the handle's data URL is made once and kept
    upstream.seen.clear()
    before = vlmkit_bytes()
    for _ in range(REQUESTS):
        assert completion("openai/gpt-4o", chat, **api).choices[0].message.content == "A cat."
    upstream.seen.clear()
    grown = vlmkit_bytes() - before
    assert grown < big_image.size_bytes, f"{grown:,} bytes still held after {REQUESTS} requests"  # type: ignore[operator]
    transport.close()


def test_async_requests_free_their_bodies(upstream: Upstream, big_image: ImageHandle, collector_off: None) -> None:
    chat = Chat()
    chat.add_user_message("What is this?", images=[big_image])

    async def run() -> int:
        transport = Transport()
        api = {"api_base": upstream.base + "/v1", "api_key": "sk-test", "transport": transport}
        await acompletion("openai/gpt-4o", chat, **api)
        before = vlmkit_bytes()
        for _ in range(REQUESTS):
            reply = await acompletion("openai/gpt-4o", chat, **api)
            assert reply.choices[0].message.content == "A cat."
        grown = vlmkit_bytes() - before
        await transport.aclose()
        return grown

    grown = asyncio.run(run())
    upstream.seen.clear()
    assert grown < big_image.size_bytes, f"{grown:,} bytes still held after {REQUESTS} requests"  # type: ignore[operator]
