"""Load on ``vlmkit serve`` as a gateway over a fake upstream, beside calling the upstream directly and
beside the LiteLLM proxy (``litellm --config``) in the same run when its command is given.

Run from the repo root on a quiet machine (check `uptime` first); ``--key-limits`` measures vlmkit with
a key under rpm/tpm limits and usage recorded in SQLite (``/metrics`` counts whenever prometheus-client
is installed):

    python bench/server.py [--litellm PATH_TO_litellm] [--runs 3] [--scale 1.0]
    python bench/server.py --lmstudio [--quick]    # LM Studio's SDK vs vlmkit's own, same server

``--files-dir`` gives vlmkit a data directory (``files_dir``, a temporary one), where the Responses
API also writes each stored response before answering it.

Everything is on 127.0.0.1, each server in its own process with one worker: the upstream (a minimal
asyncio HTTP/1.1 server answering a fixed chat completion after reading the whole body), vlmkit's
server (``python -m vlmkit.cli serve --config ...``) and the LiteLLM proxy, both mapping the name
``bench`` to ``openai/gpt-4o`` at the upstream, both checking the same API key. The load generator is aiohttp in
this process, ``concurrency`` requests in flight, after a warm-up. Cases: a text message, and a
message with a ~1 MB JPEG as a data URL, and the same image through vlmkit's other front doors
(OpenAI's Responses API, ``/v1/responses``, as an ``input_image`` data URL; Anthropic's Messages API,
``/v1/messages``, as a base64 image block), whose req/s are given beside chat completions'.
Figures: requests/s, P50/P95/P99 latency, P50 overhead over the direct call, peak RSS of the
server's process tree (VmHWM, summed).

``--quick`` runs a small load once (concurrency 1 and 8, a twentieth of the requests), to see that
the script works; measure without it.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
KEY = "sk-bench-0123456789abcdef0123456789abcdef"  # both servers check it (LiteLLM refuses to start without one)
IMAGES = ROOT / "examples" / "images"

UPSTREAM = r"""
import asyncio, json, sys
REPLY = json.dumps({"id": "chatcmpl-b", "object": "chat.completion", "created": 1, "model": "gpt-4o",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "A cat."}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13}}).encode()
RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
            + str(len(REPLY)).encode() + b"\r\n\r\n" + REPLY)

class P(asyncio.Protocol):
    # the body is counted, not kept: a gateway's upstream must cost nothing next to what is measured
    def connection_made(self, t):
        self.t, self.head, self.left = t, b"", None
    def data_received(self, data):
        while data:
            if self.left is None:
                self.head += data
                end = self.head.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = self.head[:end].lower() + b"\r\n"
                i = head.find(b"content-length:")
                self.left = int(head[i + 15:head.index(b"\r\n", i)]) if i >= 0 else 0
                data, self.head = self.head[end + 4:], b""
            take = min(self.left, len(data))
            self.left -= take
            data = data[take:]
            if self.left == 0:
                self.left = None
                self.t.write(RESPONSE)

async def main():
    loop = asyncio.get_running_loop()
    server = await loop.create_server(P, "127.0.0.1", int(sys.argv[1]), backlog=1024)
    print("ready", flush=True)
    await server.serve_forever()

try:
    import uvloop
    uvloop.install()
except ImportError:
    pass
asyncio.run(main())
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def one_mb_jpeg() -> bytes:
    """A real photo (chelsea.png, 1600x1200) as a JPEG of about 1 MB: under every gateway limit, so it is
    checked and passed through, not resized."""
    from PIL import Image

    with Image.open(IMAGES / "chelsea.png") as im:
        img = im.convert("RGB").resize((1600, 1200), Image.Resampling.BICUBIC)
    best = b""
    for quality in range(80, 101):
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=quality, subsampling=0)
        best = buf.getvalue()
        if len(best) >= 1_000_000:
            break
    return best


CHAT = "/v1/chat/completions"
OTHER_DOORS = {"image 1 MB, responses": "/v1/responses", "image 1 MB, messages": "/v1/messages"}
"""Cases sent to vlmkit only, at these paths; every other case is a chat completion sent to every target."""


def bodies(image: bytes) -> dict[str, bytes]:
    text = {"model": "bench", "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 16}
    b64 = base64.b64encode(image).decode()
    url = "data:image/jpeg;base64," + b64
    with_image = {
        "model": "bench",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": url}},
                ],
            }
        ],
        "max_tokens": 16,
    }
    responses = {
        "model": "bench",
        "input": [
            {
                "role": "user",
                "content": [{"type": "input_text", "text": "What is this?"}, {"type": "input_image", "image_url": url}],
            }
        ],
        "max_output_tokens": 16,
    }
    source = {"type": "base64", "media_type": "image/jpeg", "data": b64}
    messages = {
        "model": "bench",
        "max_tokens": 16,
        "messages": [
            {
                "role": "user",
                "content": [{"type": "text", "text": "What is this?"}, {"type": "image", "source": source}],
            }
        ],
    }
    return {
        "text": json.dumps(text).encode(),
        "image 1 MB": json.dumps(with_image).encode(),
        "image 1 MB, responses": json.dumps(responses).encode(),
        "image 1 MB, messages": json.dumps(messages).encode(),
    }


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 90) -> None:
    import httpx

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: the server exited with {proc.returncode}")
        try:
            headers = {"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"}
            r = httpx.post(url, content=bodies(b"")["text"], headers=headers, timeout=5)
            if r.status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer in {timeout} s")


def tree_hwm_mb(pid: int) -> float:
    """Peak RSS (VmHWM) of ``pid`` and its descendants, summed, in MB."""
    pids, total = [pid], 0
    while pids:
        p = pids.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
            children = Path(f"/proc/{p}/task/{p}/children").read_text().split()
            pids.extend(int(c) for c in children)
        except OSError:
            pass
    return total / 1024


async def load(url: str, body: bytes, concurrency: int, requests: int, warmup: int) -> dict[str, float]:
    import aiohttp

    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"}
    latencies: list[float] = []
    errors = 0
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as session:

        async def worker(n: int, record: bool) -> None:
            nonlocal errors
            for _ in range(n):
                t0 = time.perf_counter()
                async with session.post(url, data=body, headers=headers) as r:
                    await r.read()
                    ok = r.status == 200
                if record:
                    latencies.append(time.perf_counter() - t0)
                    errors += not ok

        await asyncio.gather(*(worker(max(1, warmup // concurrency), False) for _ in range(concurrency)))
        per = requests // concurrency
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(per, True) for _ in range(concurrency)))
        elapsed = time.perf_counter() - t0
    q = statistics.quantiles(latencies, n=100)
    return {
        "rps": len(latencies) / elapsed,
        "p50": statistics.median(latencies) * 1000,
        "p95": q[94] * 1000,
        "p99": q[98] * 1000,
        "errors": errors,
    }


def start(cmd: list[str], env: dict[str, str], url: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_ready(url, proc)
    except Exception:
        proc.kill()
        print(proc.stderr.read().decode()[-3000:] if proc.stderr else "", file=sys.stderr)
        raise
    return proc


LMSTUDIO_KEY = "qwen2-vl-2b-instruct"


def lmstudio_case(runs: int, env: dict[str, str], tmp: Path) -> None:
    """Time ``respond`` of a short reply (8 tokens, an image in the chat) through LM Studio's SDK (the
    ``lmstudio`` package, over LM Studio's protocol) and through vlmkit's own SDK (``vk.Client(url)``,
    over the OpenAI API), against the same ``vlmkit serve`` of the generated test VLM, alternating.
    Beside the times: the CPU this process spent per respond (the client's own cost, which a busy
    machine changes less than the times), and the fragments each client was handed per respond (for
    the package, the fragment messages the server sent)."""
    import lmstudio as lms

    sys.path.insert(0, str(ROOT / "src"))
    import vlmkit as vk
    from vlmkit.engine.synthetic import write_test_model

    model_path, mmproj = write_test_model(tmp / "vlm")
    cfg = tmp / "lmstudio.yaml"
    cfg.write_text(json.dumps({"models": {LMSTUDIO_KEY: {"path": str(model_path), "mmproj": str(mmproj)}}}))
    port = free_port()
    guest_env = {k: v for k, v in env.items() if k != "VLMKIT_API_KEY"}  # LM Studio's SDK sends no key
    serve = [sys.executable, "-m", "vlmkit.cli", "serve", "--config", str(cfg), "--port", str(port)]
    proc = subprocess.Popen([*serve, "--log-level", "warning"], env=guest_env, stderr=subprocess.PIPE)
    # ready when LM Studio's SDK would find it: the greeting answers
    while not lms.Client.is_valid_api_host(f"127.0.0.1:{port}"):
        if proc.poll() is not None:
            raise RuntimeError(proc.stderr.read().decode()[-3000:] if proc.stderr else "vlmkit serve exited")
        time.sleep(0.2)
    photo = str(IMAGES / "grace_hopper.jpg")
    short = {"maxTokens": 8, "temperature": 0}
    times: dict[str, list[float]] = {"lmstudio package": [], "vlmkit SDK": []}
    cpu = dict.fromkeys(times, 0.0)  # this process's CPU (every thread): what each client itself costs
    fragments = dict.fromkeys(times, 0)  # fragments the client was handed (messages, for the package)

    def count(name: str) -> Any:
        return lambda _: fragments.__setitem__(name, fragments[name] + 1)

    try:
        with lms.Client(f"127.0.0.1:{port}") as lc, vk.Client(f"http://127.0.0.1:{port}", api_key=None) as vc:
            lmodel, vmodel = lc.llm.model(LMSTUDIO_KEY), vc.llm.model(LMSTUDIO_KEY)
            lchat, vchat = lms.Chat(), vk.Chat()
            lchat.add_user_message("Describe this image please", images=[lc.files.prepare_image(photo)])
            vchat.add_user_message("Describe this image please", images=[vk.prepare_image(photo)])
            for _ in range(3):  # warm-up: load, encode the image, settle the prefix cache
                lmodel.respond(lchat, config=short)
                vmodel.respond(vchat, config=short)
            on_l, on_v = count("lmstudio package"), count("vlmkit SDK")
            for _ in range(runs):
                c, t = time.process_time(), time.perf_counter()
                got = lmodel.respond(lchat, config=short, on_prediction_fragment=on_l)
                assert got.stats.predicted_tokens_count == 8
                times["lmstudio package"].append(time.perf_counter() - t)
                cpu["lmstudio package"] += time.process_time() - c
                c, t = time.process_time(), time.perf_counter()
                assert vmodel.respond(vchat, config=short, on_prediction_fragment=on_v).stats.predicted_tokens == 8
                times["vlmkit SDK"].append(time.perf_counter() - t)
                cpu["vlmkit SDK"] += time.process_time() - c
    finally:
        proc.terminate()
        proc.wait(30)
    print(f"respond, 8 tokens, one image in the chat, {runs} each (alternating); load {os.getloadavg()[0]:.2f}")
    print("| client | median ms | P90 ms | client CPU ms per respond | fragments per respond |")
    print("|---|---|---|---|---|")
    for name, ts in times.items():
        ts.sort()
        print(
            f"| {name} | {statistics.median(ts) * 1000:.1f} | {ts[int(0.9 * (len(ts) - 1))] * 1000:.1f} | "
            f"{cpu[name] / runs * 1000:.2f} | {fragments[name] / runs:.1f} |"
        )
    ratio = statistics.median(times["lmstudio package"]) / statistics.median(times["vlmkit SDK"])
    print(f"lmstudio package / vlmkit SDK: {ratio:.2f}x (target: within 10 %)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--litellm", help="path of the `litellm` command (the proxy), to run it side by side")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the request counts")
    parser.add_argument("--concurrency", type=int, nargs="*", default=[1, 16, 64])
    parser.add_argument("--cases", nargs="*", choices=["text", "image 1 MB", *OTHER_DOORS], help="only these cases")
    parser.add_argument("--large-slots", type=int, help="vlmkit's limits.max_large_requests (default: its own)")
    parser.add_argument("--runs", type=int, default=1, help="repeat the whole load; the table gives medians")
    parser.add_argument(
        "--key-limits",
        action="store_true",
        help="vlmkit checks its key against rpm/tpm limits (never reached) and records usage in SQLite",
    )
    parser.add_argument(
        "--files-dir",
        action="store_true",
        help="vlmkit has a data directory (files_dir): each stored response is also written to disk",
    )
    parser.add_argument(
        "--lmstudio",
        action="store_true",
        help="instead: respond through LM Studio's SDK vs vlmkit's own SDK against the same vlmkit serve",
    )
    parser.add_argument("--quick", action="store_true", help="a few requests only, to see that it runs")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="vlmkit-bench-server-"))
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "src"),
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_MASTER_KEY": KEY,
        "VLMKIT_API_KEY": KEY,
    }
    if args.quick:
        args.scale, args.concurrency, args.runs = min(args.scale, 0.05), [1, 8], 1
    if args.lmstudio:
        lmstudio_case(3 if args.quick else 30 * args.runs, env, tmp)
        return
    procs: list[subprocess.Popen[bytes]] = []
    try:
        up_port = free_port()
        up = subprocess.Popen([sys.executable, "-c", UPSTREAM, str(up_port)], stdout=subprocess.PIPE)
        procs.append(up)
        assert up.stdout is not None and up.stdout.readline().strip() == b"ready"
        upstream = f"http://127.0.0.1:{up_port}/v1"

        targets: dict[str, tuple[str, int | None]] = {"upstream direct": (upstream, None)}

        port = free_port()
        cfg = tmp / "vlmkit.yaml"
        cfg.write_text(
            f"models:\n  bench:\n    model: openai/gpt-4o\n    api_base: {upstream}\n    api_key: sk-x\n"
            + (f"limits:\n  max_large_requests: {args.large_slots}\n" if args.large_slots else "")
            + (f"files_dir: '{tmp / 'files'}'\n" if args.files_dir else "")
            + (
                f"keys:\n  - {{key: {KEY}, name: bench, rpm: 1000000000, tpm: 1000000000000}}\n"
                f"usage: {{database: '{tmp / 'usage.db'}'}}\n"
                if args.key_limits
                else ""
            )
        )
        serve = [sys.executable, "-m", "vlmkit.cli", "serve", "--config", str(cfg), "--port", str(port)]
        vk = start([*serve, "--log-level", "warning"], env, f"http://127.0.0.1:{port}/v1/chat/completions")
        procs.append(vk)
        targets["vlmkit serve"] = (f"http://127.0.0.1:{port}/v1", vk.pid)

        if args.litellm:
            lport = free_port()
            lcfg = tmp / "litellm.yaml"
            lcfg.write_text(
                "model_list:\n  - model_name: bench\n    litellm_params:\n      model: openai/gpt-4o\n"
                f"      api_base: {upstream}\n      api_key: sk-x\n"
            )
            lcmd = [args.litellm, "--config", str(lcfg), "--port", str(lport), "--num_workers", "1"]
            ll = start(lcmd, env, f"http://127.0.0.1:{lport}/v1/chat/completions")
            procs.append(ll)
            targets["LiteLLM proxy"] = (f"http://127.0.0.1:{lport}/v1", ll.pid)

        image_counts = (100, 320, 640)
        counts = {"text": (200, 800, 1600), "image 1 MB": image_counts, **dict.fromkeys(OTHER_DOORS, image_counts)}
        image = one_mb_jpeg()
        print(f"image: {len(image):,} bytes JPEG 1600x1200; load before: {os.getloadavg()[0]:.2f}")
        runs: dict[tuple[str, int, str], list[dict[str, float]]] = {}
        for run in range(args.runs):
            for case, body in bodies(image).items():
                if args.cases and case not in args.cases:
                    continue
                for ci, conc in enumerate(args.concurrency):
                    n = int(counts[case][min(ci, 2)] * args.scale)
                    n = max(conc, n - n % conc)
                    for name, (base, _) in targets.items():
                        if case in OTHER_DOORS and name != "vlmkit serve":
                            continue
                        url = base + OTHER_DOORS.get(case, CHAT).removeprefix("/v1")
                        stats = asyncio.run(load(url, body, conc, n, warmup=max(conc * 2, 20)))
                        runs.setdefault((case, conc, name), []).append(stats)
                        print(
                            f"run {run + 1} {case:<11} c={conc:<3} {name:<16} {stats['rps']:8.1f} req/s  "
                            f"P50 {stats['p50']:7.2f} ms  P95 {stats['p95']:7.2f}  P99 {stats['p99']:7.2f}  "
                            f"errors {int(stats['errors'])}",
                            flush=True,
                        )
        print(f"load after: {os.getloadavg()[0]:.2f}")
        print()
        if args.runs > 1:
            print(f"medians of {args.runs} runs:")
        rows: list[dict[str, Any]] = [
            {"case": case, "concurrency": conc, "target": name}
            | {key: statistics.median(s[key] for s in stats) for key in ("rps", "p50", "p95", "p99")}
            for (case, conc, name), stats in runs.items()
        ]
        print("| case | concurrency | target | req/s | P50 ms | P95 ms | P99 ms | P50 overhead ms |")
        print("|---|---|---|---|---|---|---|---|")
        for r in rows:
            compared = "image 1 MB" if r["case"] in OTHER_DOORS else r["case"]
            direct = next(
                (
                    x
                    for x in rows
                    if x["case"] == compared
                    and x["concurrency"] == r["concurrency"]
                    and x["target"] == "upstream direct"
                ),
                None,
            )
            over = "" if r["target"] == "upstream direct" or direct is None else f"{r['p50'] - direct['p50']:+.2f}"
            print(
                f"| {r['case']} | {r['concurrency']} | {r['target']} | {r['rps']:.0f} | {r['p50']:.2f} | "
                f"{r['p95']:.2f} | {r['p99']:.2f} | {over} |"
            )
        print()
        for r in rows:
            if r["case"] in OTHER_DOORS:
                chat = next(
                    (
                        x
                        for x in rows
                        if x["case"] == "image 1 MB"
                        and x["concurrency"] == r["concurrency"]
                        and x["target"] == r["target"]
                    ),
                    None,
                )
                if chat is not None:
                    print(
                        f"{r['case']}, c={r['concurrency']}: {r['rps'] / chat['rps']:.2f}x chat completions' req/s "
                        f"({r['rps']:.0f} / {chat['rps']:.0f}; the target is at least 0.90x)"
                    )
        print()
        for name, (_, pid) in targets.items():
            if pid is not None:
                print(f"peak memory, {name} (all runs): {tree_hwm_mb(pid):.0f} MB")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()


if __name__ == "__main__":
    main()
