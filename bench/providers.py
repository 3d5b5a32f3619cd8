"""Time of ``completion()`` against a local fake upstream, text-only, with JPEGs of about 50 KB,
1.7 MB and 5 MB, and with tools (5 tools, an earlier call, and its result carrying a 50 KB JPEG),
beside LiteLLM's ``completion()`` in the same run when LiteLLM is installed.

Run from the repo root on a quiet machine (check `uptime` first):

    python bench/providers.py [--repeat 30]
    python bench/providers.py --quick   # text and tools only, 5 repeats: to see that it runs

The upstream is an OpenAI-compatible HTTP server in a separate process on 127.0.0.1 that reads the
whole body and answers a fixed completion. "raw httpx" posts an equivalent, already-built body with a
pooled httpx client: the floor any library pays for the HTTP round trip. Each image case is timed
"cold" (vlmkit's render cache cleared before every call: a new image each time) and "warm" (the same
image again). LiteLLM keeps no image cache, so it has one figure.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "examples" / "images"
sys.path.insert(0, str(ROOT / "src"))

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network fetch at import

UPSTREAM = r"""
import json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
REPLY = json.dumps({"id": "chatcmpl-b", "object": "chat.completion", "created": 1, "model": "gpt-4o",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "A cat."}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13}}).encode()
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    def log_message(self, *a): pass
    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(REPLY)))
        self.end_headers()
        self.wfile.write(REPLY)
ThreadingHTTPServer.request_queue_size = 256  # many clients at once (bench/batch.py) are queued, not refused
s = ThreadingHTTPServer(("127.0.0.1", 0), H)
s.daemon_threads = True
print(s.server_address[1], flush=True)
s.serve_forever()
"""


def jpeg_of_size(target: int) -> bytes:
    """A JPEG within OpenAI's limits (long edge <= 2048) of about ``target`` bytes, from a real photo."""
    import numpy as np
    from PIL import Image

    with Image.open(IMAGES / "astronaut.png") as im:
        photo = im.convert("RGB")
    side = 2048 if target > 500_000 else 640
    base = np.asarray(photo.resize((side, side * 3 // 4)), dtype=np.int16)
    rng = np.random.default_rng(0)
    best = b""
    for noise in (0, 4, 8, 16, 24, 32, 48, 64, 96, 128, 192, 255):
        pixels = np.clip(base + rng.integers(-noise, noise + 1, base.shape), 0, 255).astype(np.uint8)
        for quality in (60, 75, 85, 92, 97, 100):
            buf = io.BytesIO()
            Image.fromarray(pixels).save(buf, format="JPEG", quality=quality)
            data = buf.getvalue()
            if abs(len(data) - target) < abs(len(best) - target):
                best = data
    return best


def _tool(name: str, properties: dict[str, Any]) -> dict[str, Any]:
    schema = {"type": "object", "properties": properties, "required": list(properties)}
    return {"type": "function", "function": {"name": name, "description": f"The {name} tool.", "parameters": schema}}


TOOLS = [
    _tool("click", {"x": {"type": "integer"}, "y": {"type": "integer"}}),
    _tool("zoom", {"x": {"type": "integer"}, "y": {"type": "integer"}, "factor": {"type": "number"}}),
    _tool("crop", {"box": {"type": "array", "items": {"type": "integer"}, "minItems": 4, "maxItems": 4}}),
    _tool("type_text", {"text": {"type": "string"}}),
    _tool("search", {"query": {"type": "string"}, "limit": {"type": "integer", "minimum": 1}}),
]


def tools_case(image_url: str) -> list[dict[str, Any]]:
    """A user asks, the assistant called ``zoom``, and the result holds the zoomed view (an image)."""
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "zoom", "arguments": '{"x": 3, "y": 4, "factor": 2}'},
    }
    return [
        {"role": "system", "content": "You operate a computer from screenshots."},
        {"role": "user", "content": "Find the search box."},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {
            "role": "tool",
            "tool_call_id": "call_1",
            "content": [{"type": "text", "text": "zoomed"}, {"type": "image_url", "image_url": {"url": image_url}}],
        },
    ]


def timed(fn: Callable[[], Any], repeat: int, before: Callable[[], None] | None = None) -> float:
    for _ in range(2):
        if before:
            before()
        fn()
    samples = []
    for _ in range(repeat):
        if before:
            before()
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--quick", action="store_true", help="text and tools cases only, 5 repeats")
    args = parser.parse_args()
    if args.quick:
        args.repeat = 5

    import httpx

    from vlmkit.images import render_cache
    from vlmkit.providers import completion

    try:
        import litellm
    except ImportError:
        litellm = None

    server = subprocess.Popen([sys.executable, "-c", UPSTREAM], stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None
    port = int(server.stdout.readline())
    base = f"http://127.0.0.1:{port}/v1"
    client = httpx.Client()
    try:
        no_tools: dict[str, Any] = {}
        cases: list[tuple[str, list[dict[str, Any]], dict[str, Any]]] = [
            ("text only", [{"role": "user", "content": "Hello!"}], no_tools)
        ]
        sizes = () if args.quick else (("50 KB JPEG", 50_000), ("1.7 MB JPEG", 1_700_000), ("5 MB JPEG", 5_000_000))
        for label, size in sizes:
            data = jpeg_of_size(size)
            url = "data:image/jpeg;base64," + base64.b64encode(data).decode()
            content = [{"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": url}}]
            cases.append((f"{label} ({len(data) / 1e6:.2f} MB)", [{"role": "user", "content": content}], no_tools))
        small = jpeg_of_size(50_000)
        small_url = "data:image/jpeg;base64," + base64.b64encode(small).decode()
        cases.append(("5 tools + a tool result with a 50 KB JPEG", tools_case(small_url), {"tools": TOOLS}))

        header = f"| case | raw httpx | vlmkit cold | vlmkit warm | {'LiteLLM' if litellm else 'LiteLLM (absent)'} |"
        print(header)
        print("|---|---|---|---|---|")
        for label, messages, extra in cases:
            body = json.dumps({"model": "gpt-4o", "messages": messages, **extra}).encode()
            raw = timed(
                lambda body=body: client.post(
                    f"{base}/chat/completions", content=body, headers={"Content-Type": "application/json"}
                ),
                args.repeat,
            )

            def ours(messages: list[dict[str, Any]] = messages, extra: dict[str, Any] = extra) -> Any:
                return completion("openai/gpt-4o", messages, api_base=base, api_key="k", **extra)

            cold = timed(ours, args.repeat, before=render_cache.clear)
            warm = timed(ours, args.repeat)
            theirs = "—"
            if litellm is not None:
                lite = timed(
                    lambda messages=messages, extra=extra: litellm.completion(
                        model="openai/gpt-4o", messages=messages, api_base=base, api_key="k", **extra
                    ),
                    args.repeat,
                )
                theirs = f"{lite:.2f} ms"
            print(f"| {label} | {raw:.2f} ms | {cold:.2f} ms | {warm:.2f} ms | {theirs} |", flush=True)
    finally:
        client.close()
        server.terminate()


if __name__ == "__main__":
    main()
