"""The gateway in front of three ``vlmkit serve`` replicas: time to first token under ``round_robin``
and under ``affinity``, for the same workload in the same run.

Run from the repo root on a quiet machine (check `uptime` first):

    python bench/fleet.py [--chats 20] [--turns 3] [--photos 10] [--concurrency 4] [--think 2]
    python bench/fleet.py --quick        # the tiny test model, 6 chats over 3 photos: checks it works

Everything is on 127.0.0.1, each server its own process: three replicas serving a model with
SmolVLM-256M-Instruct's dimensions (``write_smolvlm_256m``; ``--quick``: the tiny test model), each
with its own home and encoder cache (as separate machines) and its share of this machine's cores
(``--threads``: the cores divided among the three, at least one each, as an operator who puts three
replicas on one machine sets them, rather than three times the cores in threads), and a gateway
(``vlmkit serve --config``) naming them ``fleet``. For each routing mode the replicas are started
fresh, so no mode finds caches the other warmed. The workload: ``chats`` conversations of ``turns``
turns, chat ``i`` about photo ``i % photos`` (the photos of examples/images, and mirrored or cropped
copies of them for more), the first turn with the image, the next ones follow-ups in the same
history. ``concurrency`` users chat at once, each taking the next chat when done with one; a user
reads an answer before asking the follow-up, and pauses before starting a chat, ``think`` seconds on
average (0.5 to 1.5 times it, the same pauses in both modes), so chats interleave as real ones do
rather than arriving back to back. A second chat about a photo is a new chat about an image some
replica has seen. Figures: TTFT P50/P95 of first turns and of follow-ups, and the whole run's time,
per mode; the target is a follow-up TTFT P50 under affinity at least 5x lower than under round
robin."""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "examples" / "images"
QUESTIONS = ["What is in this picture?", "What colours stand out?", "Describe the background.", "Anything else?"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def photos(n: int) -> list[bytes]:
    """``n`` distinct JPEGs: the example photos, then mirrored and cropped copies of them."""
    from PIL import Image, ImageOps

    sources = sorted(p for p in IMAGES.iterdir() if p.suffix in (".jpg", ".png"))
    out: list[bytes] = []
    for i in range(n):
        with Image.open(sources[i % len(sources)]) as im:
            img = im.convert("RGB")
        variant = i // len(sources)
        if variant % 2 == 1:
            img = ImageOps.mirror(img)
        if variant >= 2:
            w, h = img.size
            img = img.crop((w // 10, h // 10, w - w // 10, h - h // 10))
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(cmd, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT)


def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 120) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"a server exited at start; its log:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"a server did not start in {timeout:.0f} s; its log:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)


@dataclass
class Fleet:
    """Three fresh replicas and a gateway over them, for one routing mode."""

    routing: str
    work: Path
    model: Path
    mmproj: Path
    threads: int = 1
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    gateway: str = ""

    def __enter__(self) -> Fleet:
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        env.pop("VLMKIT_API_KEY", None)
        bases = []
        for i in range(3):
            home = self.work / f"{self.routing}-replica-{i}"
            home.mkdir(parents=True)
            config = home / "vlmkit.yaml"
            config.write_text(
                f"models:\n  m: {{path: '{self.model}', mmproj: '{self.mmproj}', threads: {self.threads}}}\n"
                "limits: {model_ttl: null}\n"
            )
            port = free_port()
            replica_env = {**env, "VLMKIT_HOME": str(home / "home"), "VLMKIT_CACHE_DIR": str(home / "cache")}
            cmd = [sys.executable, "-m", "vlmkit.cli", "serve", "--port", str(port), "--config", str(config)]
            self.procs.append(start([*cmd, "--log-level", "warning"], replica_env, home / "log"))
            bases.append((f"http://127.0.0.1:{port}", home / "log"))
        for (url, log), proc in zip(bases, self.procs, strict=True):
            wait_ready(url, proc, log)
        home = self.work / f"{self.routing}-gateway"
        home.mkdir()
        deployments = "".join(f"      - {{model: llama_cpp/m, api_base: '{url}/v1'}}\n" for url, _ in bases)
        config = home / "vlmkit.yaml"
        config.write_text(f"models:\n  fleet:\n    routing: {self.routing}\n    deployments:\n{deployments}")
        port = free_port()
        cmd = [sys.executable, "-m", "vlmkit.cli", "serve", "--port", str(port), "--config", str(config)]
        self.procs.append(start([*cmd, "--log-level", "warning"], {**env, "VLMKIT_HOME": str(home)}, home / "log"))
        self.gateway = f"http://127.0.0.1:{port}"
        wait_ready(self.gateway, self.procs[-1], home / "log")
        for url, _ in bases:  # load the model on every replica before timing anything
            warm(url)
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            stop(proc)


def warm(url: str) -> None:
    import httpx

    body = {"model": "m", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 1}
    httpx.post(url + "/v1/chat/completions", json=body, timeout=300).raise_for_status()


async def ttft(client: Any, url: str, messages: list[dict[str, Any]], max_tokens: int) -> tuple[float, str]:
    """Seconds to the first content chunk of a streamed answer, and the whole answer."""
    body = {"model": "fleet", "messages": messages, "max_tokens": max_tokens, "temperature": 0, "stream": True}
    t0 = time.perf_counter()
    first: float | None = None
    text = []
    async with client.stream("POST", url + "/v1/chat/completions", json=body) as r:
        if r.status_code != 200:
            raise SystemExit(f"the gateway answered {r.status_code}: {(await r.aread()).decode()[:500]}")
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if "error" in event:
                raise SystemExit(f"a stream failed: {event['error']['message']}")
            for choice in event.get("choices", []):
                piece = choice.get("delta", {}).get("content")
                if piece:
                    first = first if first is not None else time.perf_counter() - t0
                    text.append(piece)
    return (first if first is not None else time.perf_counter() - t0), "".join(text)


def pause(think: float, chat: int, turn: int) -> float:
    """A user's pause before turn ``turn`` of chat ``chat``: 0.5 to 1.5 times ``think``, the same in every run."""
    return think * random.Random(f"{chat}/{turn}").uniform(0.5, 1.5)


async def workload(
    url: str, images: list[bytes], chats: int, turns: int, concurrency: int, max_tokens: int, think: float
) -> dict[str, list[float]]:
    import httpx

    times: dict[str, list[float]] = {"first": [], "follow_up": []}
    users = asyncio.Semaphore(concurrency)

    async def one_chat(i: int, client: Any) -> None:
        photo = "data:image/jpeg;base64," + base64.b64encode(images[i % len(images)]).decode()
        content = [{"type": "text", "text": QUESTIONS[0]}, {"type": "image_url", "image_url": {"url": photo}}]
        messages: list[dict[str, Any]] = [{"role": "user", "content": content}]
        async with users:  # one user's chat, start to end
            for turn in range(turns):
                await asyncio.sleep(pause(think, i, turn))  # reading the answer, or opening the chat
                seconds, answer = await ttft(client, url, messages, max_tokens)
                times["first" if turn == 0 else "follow_up"].append(seconds)
                messages += [
                    {"role": "assistant", "content": answer or "..."},
                    {"role": "user", "content": QUESTIONS[(turn + 1) % len(QUESTIONS)]},
                ]

    async with httpx.AsyncClient(timeout=600) as client:
        await asyncio.gather(*(one_chat(i, client) for i in range(chats)))
    return times


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chats", type=int, default=20)
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--photos", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=4, help="users chatting at once")
    parser.add_argument("--think", type=float, default=2.0, help="seconds a user reads before the next turn")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--quick", action="store_true", help="the tiny test model and a small workload")
    parser.add_argument(
        "--threads",
        type=int,
        default=max(1, len(os.sched_getaffinity(0)) // 3),
        help="CPU threads of each replica (default: this machine's cores shared out among the three, at least 1)",
    )
    args = parser.parse_args()
    from vlmkit.engine.synthetic import write_smolvlm_256m, write_test_model

    if args.quick:
        args.chats, args.photos, args.max_tokens, args.think = 6, 3, 4, 0.2
    work = Path(tempfile.mkdtemp(prefix="vlmkit-bench-fleet-"))
    try:
        model, mmproj = (write_test_model if args.quick else write_smolvlm_256m)(work / "model")
        images = photos(args.photos)
        print(
            f"{'tiny test model' if args.quick else 'SmolVLM-256M-shaped model'}, 3 replicas, "
            f"{args.chats} chats x {args.turns} turns over {args.photos} photos, {args.concurrency} users at once, "
            f"{args.think:g} s to read an answer, {args.threads} thread(s) a replica"
        )
        results: dict[str, tuple[dict[str, list[float]], float]] = {}
        for routing in ("round_robin", "affinity"):
            with Fleet(routing, work, model, mmproj, args.threads) as fleet:
                t0 = time.perf_counter()
                times = asyncio.run(
                    workload(
                        fleet.gateway, images, args.chats, args.turns, args.concurrency, args.max_tokens, args.think
                    )
                )
                results[routing] = (times, time.perf_counter() - t0)
        print(f"{'routing':<12} {'first P50':>10} {'first P95':>10} {'follow P50':>11} {'follow P95':>11} {'total':>8}")
        for routing, (times, total) in results.items():
            f, u = times["first"], times["follow_up"]
            print(
                f"{routing:<12} {percentile(f, 0.5) * 1000:>8.0f}ms {percentile(f, 0.95) * 1000:>8.0f}ms "
                f"{percentile(u, 0.5) * 1000:>9.0f}ms {percentile(u, 0.95) * 1000:>9.0f}ms {total:>7.1f}s"
            )
        rr, aff = (statistics.median(results[m][0]["follow_up"]) for m in ("round_robin", "affinity"))
        print(f"follow-up TTFT P50, round_robin / affinity: {rr / aff:.1f}x (target: at least 5x)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
