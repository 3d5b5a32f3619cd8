"""A real ``vlmkit serve`` subprocess on 127.0.0.1, for the tests of the protocols it speaks with other
people's clients: the generated test VLM as ``tiny``, and ``gw``, a gateway name over a fake upstream
on 127.0.0.1 (the one in :mod:`tests.server.conftest`). The subprocess runs the tree under test
(``PYTHONPATH``), with its own config file, home, files and models directories."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server.conftest import API_KEY, Upstream, _start_upstream

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Served:
    url: str
    proc: subprocess.Popen[bytes]
    upstream: Upstream
    config: Path
    env: dict[str, str]
    files_dir: Path
    models_dir: Path

    @property
    def base(self) -> str:
        return self.url + "/v1"

    def post(self, path: str, body: Any, **headers: str) -> httpx.Response:
        head = {"Authorization": f"Bearer {API_KEY}", **headers}
        return httpx.post(self.url + path, content=json.dumps(body), headers=head, timeout=120)

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.url + path, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(
    tmp: Path,
    tiny_files: tuple[Path, Path, Path],
    upstream: Upstream,
    *,
    extra: str = "",
    env: dict[str, str] | None = None,
) -> Served:
    """Start ``vlmkit serve`` and wait until it answers its health check (``extra``: more config lines;
    ``env``: more environment variables)."""
    model, mmproj, _ = tiny_files
    files_dir, models_dir = tmp / "files", tmp / "models"
    config = tmp / "vlmkit.yaml"
    config.write_text(
        f"api_keys: [{API_KEY}]\n"
        f"files_dir: {files_dir}\n"
        f"models_dir: {models_dir}\n"
        "models:\n"
        f"  tiny: {{path: {model}, mmproj: {mmproj}}}\n"
        "  gw:\n"
        "    vision: true\n"
        f"    deployments: [{{model: openai/up-model, api_base: '{upstream.base}', api_key: sk-up}}]\n"
        "limits: {max_body_mb: 3, model_ttl: null, shutdown_grace: 1}\n" + extra
    )
    environ = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "VLMKIT_HOME": str(tmp / "home"), **(env or {})}
    environ.pop("VLMKIT_API_KEY", None)
    return _launch(Served("", None, upstream, config, environ, files_dir, models_dir))  # type: ignore[arg-type]


def wait_healthy(
    proc: subprocess.Popen[bytes],
    url: str,
    *,
    timeout: float = 60,
    output: Callable[[], str] | None = None,
) -> httpx.Response:
    """Wait until ``vlmkit serve`` at ``url`` answers ``/health``, and return that answer. It fails with
    the process's output (``output``: where to read it; default: its stdout) if it exits first, and
    says it did not start if ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            out = output() if output else (proc.stdout.read().decode() if proc.stdout else "")
            raise AssertionError(f"vlmkit serve exited ({proc.returncode}):\n{out}")
        try:
            return httpx.get(url + "/health", timeout=1)
        except httpx.TransportError:
            assert time.monotonic() < deadline, "vlmkit serve did not start"
            time.sleep(0.1)


def _launch(served: Served) -> Served:
    port = _free_port()
    cmd = [sys.executable, "-m", "vlmkit.cli", "serve", "--port", str(port), "--config", str(served.config)]
    proc = subprocess.Popen(
        [*cmd, "--log-level", "warning"], env=served.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    wait_healthy(proc, url)
    served.url, served.proc = url, proc
    return served


def stop(served: Served) -> str:
    served.proc.send_signal(signal.SIGTERM)
    out, _ = served.proc.communicate(timeout=30)
    return out.decode()


def restart(served: Served) -> Served:
    """The same server (config, directories) stopped and started again, on a new port."""
    stop(served)
    return _launch(served)


def serve_fixture(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_files: tuple[Path, Path, Path],
    *,
    extra: str = "",
    env: dict[str, str] | None = None,
) -> Iterator[Served]:
    """The body of a module-scoped fixture: the upstream and the server, stopped after the module."""
    upstream = Upstream("up")
    http = _start_upstream(upstream)
    served = start(tmp_path_factory.mktemp("served"), tiny_files, upstream, extra=extra, env=env)
    try:
        yield served
    finally:
        out = stop(served)
        http.shutdown()
        http.server_close()
    assert "Traceback" not in out, out
