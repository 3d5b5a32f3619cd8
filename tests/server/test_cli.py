"""``vlmkit serve`` in a subprocess: binds 127.0.0.1, needs the key it was given, stops cleanly on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.server.served import wait_healthy

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_command(tmp_path: Path) -> None:
    config = tmp_path / "vlmkit.yaml"
    config.write_text("models:\n  gw: {model: openai/up, api_base: 'http://127.0.0.1:9/v1', api_key: k}\n")
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "VLMKIT_HOME": str(tmp_path / "home")}
    env.pop("VLMKIT_API_KEY", None)
    cmd = [sys.executable, "-m", "vlmkit.cli", "serve", "--port", str(port), "--config", str(config)]
    proc = subprocess.Popen([*cmd, "--api-key", "sk-cli"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        health = wait_healthy(proc, f"http://127.0.0.1:{port}", timeout=30)
        assert health.json()["status"] == "ok"
        assert httpx.get(f"http://127.0.0.1:{port}/v1/models").status_code == 401
        models = httpx.get(f"http://127.0.0.1:{port}/v1/models", headers={"Authorization": "Bearer sk-cli"}).json()
        assert [m["id"] for m in models["data"]] == ["gw"]
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode in (0, -signal.SIGTERM)  # uvicorn re-raises the signal after its graceful shutdown
    text = out.decode()
    assert f"Uvicorn running on http://127.0.0.1:{port}" in text
    assert "Application shutdown complete." in text


def test_playground_command_serves_the_page_and_opens_it_with_the_key(tmp_path: Path) -> None:
    """``vlmkit playground`` starts the server and opens the page in the browser named by $BROWSER
    (here a script that writes down the address it was given)."""
    opened = tmp_path / "opened.txt"
    browser = tmp_path / "browser.py"
    browser.write_text(f"import sys, pathlib\npathlib.Path({str(opened)!r}).write_text(sys.argv[1])\n")
    port = _free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "src"),
        "VLMKIT_HOME": str(tmp_path / "home"),
        "BROWSER": f"{sys.executable} {browser} %s",
    }
    env.pop("VLMKIT_API_KEY", None)
    cmd = [sys.executable, "-m", "vlmkit.cli", "playground", "--port", str(port), "--api-key", "sk-pg/1"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not opened.exists():
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            assert time.monotonic() < deadline, "the playground was not opened"
            time.sleep(0.1)
        assert opened.read_text() == f"http://127.0.0.1:{port}/#key=sk-pg%2F1"
        page = httpx.get(f"http://127.0.0.1:{port}/")
        assert page.status_code == 200 and "<title>vlmkit playground</title>" in page.text
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert httpx.get(f"http://127.0.0.1:{port}/playground/app.js").status_code == 200
        assert httpx.get(f"http://127.0.0.1:{port}/v1/models").status_code == 401  # the API still needs the key
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert f"vlmkit playground: http://127.0.0.1:{port}/  (type the server's API key into the page)" in out.decode()
