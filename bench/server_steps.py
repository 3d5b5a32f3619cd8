"""The server's own work for one gateway image request, step by step, without HTTP or an upstream.

Run from the repo root on a quiet machine (check `uptime` first):

    python bench/server_steps.py [--requests 300]

Each request starts from a fresh copy of the body bytes (the ~1.19 MB JPEG of bench/server.py in a
data URL) and goes through what ``POST /v1/chat/completions`` does before sending: lift the large
data URLs out of the body, parse the JSON, check the request, resolve the images into a Chat, and
build the provider's wire request (URL, headers, JSON body). Medians in ms, after 20 warm-up requests.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from server import bodies, one_mb_jpeg
from vlmkit.images.fetch import FetchOptions
from vlmkit.providers import call
from vlmkit.server.files import FileStore
from vlmkit.server.inputs import parse_chat_request, parse_lifted, resolve_images
from vlmkit.server.lifted import lift
from vlmkit.wire.openai_chat import to_chat

WARMUP = 20


async def one(body: bytes, files: FileStore, times: dict[str, list[float]]) -> None:
    def tick(name: str, start: float) -> float:
        now = time.perf_counter()
        times.setdefault(name, []).append((now - start) * 1000)
        return now

    t = time.perf_counter()
    data = bytes(bytearray(body))  # fresh bytes, as a request body would be
    t = tick("copy of the body (not the server's)", t)
    lifted = lift(data)
    t = tick("lift data URLs", t)
    obj = parse_lifted(lifted)
    t = tick("parse JSON", t)
    req = parse_chat_request(obj)
    t = tick("check the request", t)
    chat = await resolve_images(
        to_chat(req.messages), files, fetch=FetchOptions(), max_pixels=100_000_000, max_images=16, lifted=lifted
    )
    t = tick("resolve images", t)
    cfg, creq, mod = call._start("openai/gpt-4o", chat, False, "http://127.0.0.1:9/v1", "sk-x", None, None, {})
    t = tick("provider request", t)
    call._wire(mod, creq, cfg)
    tick("wire body", t)


async def main(requests: int) -> None:
    body = bodies(one_mb_jpeg())["image 1 MB"]
    files = FileStore(1 << 30)
    times: dict[str, list[float]] = {}
    for _ in range(WARMUP):
        await one(body, files, times)
    times.clear()
    for _ in range(requests):
        await one(body, files, times)
    server_total = 0.0
    print(f"body: {len(body):,} bytes; {requests} requests; medians in ms")
    for name, values in times.items():
        median = statistics.median(values)
        if not name.startswith("copy"):
            server_total += median
        print(f"  {name:<38} {median:7.3f}")
    print(f"  {'server total':<38} {server_total:7.3f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300)
    asyncio.run(main(parser.parse_args().requests))
