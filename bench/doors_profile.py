"""The work each front door does for bench/server.py's 1 MB image, counted rather than timed.

A busy or shared machine makes requests/second say little about a few per cent between doors, so
this counts what does not move with the load, for chat completions, the Responses API and the
Messages API, each on a fresh ``vlmkit serve`` (a gateway model over bench/server.py's fake upstream):

- the server's minor page faults and CPU milliseconds per request (``/proc``), over as many requests
  as bench/server.py measures at concurrency 1, after its warm-up: memory a door keeps shows as faults;
- with ``--callgrind`` (needs valgrind; slow), the server's instructions per request and how many
  of them are memcpy, after a warm-up: code a door runs more of shows here.

Run from the repo root:

    python bench/doors_profile.py [--requests 70] [--callgrind]
    python bench/doors_profile.py --quick    # a few requests, to see that it runs

Under valgrind each server takes a few minutes to start: ``--callgrind`` runs for ten minutes or more.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx

from server import KEY, ROOT, UPSTREAM, bodies, free_port, one_mb_jpeg, start

DOORS = {
    "chat completions": ("/v1/chat/completions", "image 1 MB"),
    "responses": ("/v1/responses", "image 1 MB, responses"),
    "messages": ("/v1/messages", "image 1 MB, messages"),
}
WARMUP = 20
"""bench/server.py's warm-up at concurrency 1."""
HEADERS = {"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"}


def proc_counts(pid: int) -> tuple[int, float]:
    """Minor faults and CPU seconds (user + system) of ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[7]), (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def serve_command(config: Path, port: int) -> list[str]:
    return [sys.executable, "-m", "vlmkit.cli", "serve", "--config", str(config), "--port", str(port)]


def faults(config: Path, env: dict[str, str], body: bytes, path: str, requests: int) -> tuple[float, float]:
    """Minor faults and CPU ms per request of a fresh server, over ``requests`` after bench/server.py's warm-up."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    proc = start([*serve_command(config, port), "--log-level", "warning"], env, url)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            for _ in range(WARMUP):
                assert client.post(path, content=body, headers=HEADERS).status_code == 200
            before = proc_counts(proc.pid)
            for _ in range(requests):
                assert client.post(path, content=body, headers=HEADERS).status_code == 200
            after = proc_counts(proc.pid)
    finally:
        proc.terminate()
        proc.wait(30)
    return (after[0] - before[0]) / requests, (after[1] - before[1]) * 1000 / requests


def instructions(config: Path, env: dict[str, str], body: bytes, path: str, requests: int) -> tuple[float, float]:
    """Millions of instructions, and of them memcpy's, per request, under callgrind after a warm-up."""
    port = free_port()
    out = Path(tempfile.mkdtemp(prefix="vlmkit-doors-cg-")) / "callgrind.out"
    command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *serve_command(config, port)]
    proc = subprocess.Popen(
        [*command, "--log-level", "warning"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=600) as client:
            deadline = time.monotonic() + 600
            while True:
                try:
                    client.get("/health")
                    break
                except httpx.TransportError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError("vlmkit serve did not start under valgrind") from None
                    time.sleep(1)
            for _ in range(5):
                assert client.post(path, content=body, headers=HEADERS).status_code == 200
            subprocess.run(["callgrind_control", "--zero", str(proc.pid)], check=True, capture_output=True)
            for _ in range(requests):
                assert client.post(path, content=body, headers=HEADERS).status_code == 200
            subprocess.run(["callgrind_control", "--dump", str(proc.pid)], check=True, capture_output=True)
    finally:
        proc.terminate()
        proc.wait(120)
    [dump] = [p for p in out.parent.iterdir() if p.name != out.name]  # the one taken by --dump
    text = subprocess.run(["callgrind_annotate", "--threshold=100", str(dump)], capture_output=True, text=True).stdout
    total = re.search(r"([\d,]+) \([\d.]+%\)\s+PROGRAM TOTALS", text)
    copied = re.findall(r"^\s*([\d,]+) \([\d.]+%\)\s+\S*mem(?:cpy|move)\S*", text, re.MULTILINE)
    assert total is not None, text[:2000]

    def per_request(count: str) -> float:
        return int(count.replace(",", "")) / requests / 1e6

    return per_request(total.group(1)), sum(per_request(c) for c in copied)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=70, help="requests a door (bench/server.py's c=1 window)")
    parser.add_argument("--callgrind", action="store_true", help="also count instructions under valgrind (slow)")
    parser.add_argument("--quick", action="store_true", help="a few requests only, to see that it runs")
    args = parser.parse_args()
    requests = 5 if args.quick else args.requests

    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "VLMKIT_API_KEY": KEY}
    upstream_port = free_port()
    upstream = subprocess.Popen([sys.executable, "-c", UPSTREAM, str(upstream_port)], stdout=subprocess.PIPE)
    try:
        assert upstream.stdout is not None and upstream.stdout.readline().strip() == b"ready"
        config = Path(tempfile.mkdtemp(prefix="vlmkit-doors-")) / "vlmkit.yaml"
        config.write_text(
            f"models:\n  bench:\n    model: openai/gpt-4o\n    api_base: http://127.0.0.1:{upstream_port}/v1\n"
            "    api_key: sk-x\n"
        )
        cases = bodies(one_mb_jpeg())
        print(f"{requests} requests a door, each door on a fresh server; load {os.getloadavg()[0]:.2f}")
        header = "| door | minor faults / request | CPU ms / request |"
        print(header + (" M instructions / request | of them memcpy |" if args.callgrind else ""))
        print("|---" * (header.count("|") - 1 + (2 if args.callgrind else 0)) + "|")
        for door, (path, case) in DOORS.items():
            fault, cpu = faults(config, env, cases[case], path, requests)
            row = f"| {door} | {fault:.1f} | {cpu:.2f} |"
            if args.callgrind:
                total, copied = instructions(config, env, cases[case], path, min(requests, 30))
                row += f" {total:.2f} | {copied:.2f} |"
            print(row, flush=True)
    finally:
        upstream.terminate()
        upstream.wait(15)


if __name__ == "__main__":
    main()
