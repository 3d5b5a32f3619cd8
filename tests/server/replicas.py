"""Real ``vlmkit serve`` processes on 127.0.0.1 serving the generated test VLM: the replicas of a fleet.

Each replica has its own home and its own on-disk encoder cache, as separate machines would, so an
image one replica encoded is not found by another. Its counters are read from its own ``/metrics``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def metric_samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a Prometheus text exposition, read by prometheus_client's own parser."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def metric(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels`` (0 when there is none yet)."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


@dataclass
class Replica:
    index: int
    home: Path
    config: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base(self) -> str:
        return self.url + "/v1"

    def start(self) -> None:
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT / "src"),
            "VLMKIT_HOME": str(self.home / "home"),
            "VLMKIT_CACHE_DIR": str(self.home / "cache"),
        }
        env.pop("VLMKIT_API_KEY", None)
        cmd = [sys.executable, "-m", "vlmkit.cli", "serve", "--port", str(self.port), "--config", str(self.config)]
        log = (self.home / "serve.log").open("ab")
        self.proc = subprocess.Popen([*cmd, "--log-level", "warning"], env=env, stdout=log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc is not None and self.proc.poll() is None, self.log()
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"replica {self.index} did not start: {self.log()}"
            time.sleep(0.1)

    def kill(self) -> None:
        """Gone at once, as a crashed machine: SIGKILL, no graceful shutdown."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)

    def log(self) -> str:
        path = self.home / "serve.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def samples(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        return metric_samples(httpx.get(self.url + "/metrics", timeout=10).text)

    def counters(self) -> dict[str, float]:
        """This replica's own counts for the model ``tiny``: requests answered, images encoded, cache hits."""
        s = self.samples()
        return {
            "requests": metric(s, "vlmkit_requests_total", model="tiny", deployment="local"),
            "encoded": metric(s, "vlmkit_images_encoded_total", model="tiny"),
            "hits": metric(s, "vlmkit_embedding_cache_hits_total", model="tiny"),
        }


def start_replicas(n: int, root: Path, model: Path, mmproj: Path) -> list[Replica]:
    replicas = []
    for i in range(n):
        home = root / f"replica-{i}"
        home.mkdir(parents=True, exist_ok=True)
        config = home / "vlmkit.yaml"
        config.write_text(f"models:\n  tiny: {{path: '{model}', mmproj: '{mmproj}'}}\nlimits: {{model_ttl: null}}\n")
        replicas.append(Replica(i, home, config))
    for r in replicas:
        r.start()
    for r in replicas:
        r.wait_ready()
    return replicas
