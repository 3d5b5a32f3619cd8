"""``GET /metrics`` read by prometheus_client's own parser, and JSON-lines logs that never hold an image."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.server.conftest import API_KEY, Running, data_url, image_message
from tests.server.replicas import ROOT, free_port, metric, metric_samples
from tests.server.served import wait_healthy
from vlmkit.images import OPENAI, prepare_image
from vlmkit.images.tokens import openai_tokens

FAMILIES = {
    "vlmkit_requests",
    "vlmkit_request_duration_seconds",
    "vlmkit_time_to_first_token_seconds",
    "vlmkit_images",
    "vlmkit_image_bytes_received",
    "vlmkit_image_bytes_sent",
    "vlmkit_images_transformed",
    "vlmkit_image_tokens_estimated",
    "vlmkit_images_encoded",
    "vlmkit_embedding_cache_hits",
    "vlmkit_queue_depth",
    "vlmkit_upstream_errors",
    "vlmkit_upstream_ejections",
    "vlmkit_upstream_readmissions",
    "vlmkit_upstream_inflight",
    "vlmkit_upstream_outstanding_tokens",
    "vlmkit_upstream_up",
}


def client(server: Running) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base, api_key=API_KEY, max_retries=0, timeout=60)


def test_metrics_count_requests_images_tokens_and_upstream_failures(
    server: Running, ups: Any, hopper_jpeg: bytes, chelsea_png: bytes
) -> None:
    c = client(server)
    c.chat.completions.create(model="gw", messages=image_message(data_url(hopper_jpeg)))  # type: ignore[arg-type]
    for _ in c.chat.completions.create(model="gw", messages=[{"role": "user", "content": "hi"}], stream=True):
        pass
    ups["b"].status = 500
    for _ in range(2):
        c.chat.completions.create(model="pair", messages=[{"role": "user", "content": "hi"}])
    for fmt, size, mime in (("JPEG", (2400, 1200), "image/jpeg"), ("BMP", (64, 48), "image/bmp")):
        c.chat.completions.create(model="gw", messages=image_message(data_url(picture(fmt, size), mime)))  # type: ignore[arg-type]
    # a local model: the engine's own report of what it encoded
    c.chat.completions.create(
        model="tiny",
        messages=image_message(data_url(chelsea_png, "image/png")),  # type: ignore[arg-type]
        max_tokens=2,
    )

    assert httpx.get(server.url + "/metrics").status_code == 401  # behind the API keys, like every route
    r = httpx.get(server.url + "/metrics", headers={"Authorization": f"Bearer {API_KEY}"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    samples = metric_samples(r.text)
    assert {family.name for family in text_string_to_metric_families(r.text)} >= FAMILIES
    a, b, cc = (f"openai/up-model@{ups[n].base}" for n in "abc")
    assert metric(samples, "vlmkit_requests_total", model="gw", deployment=a, status="200") == 4
    assert metric(samples, "vlmkit_requests_total", model="pair", deployment=b, status="500") == 1
    assert metric(samples, "vlmkit_requests_total", model="pair", deployment=cc, status="200") == 2
    assert metric(samples, "vlmkit_upstream_errors_total", model="pair", deployment=b) == 1
    assert metric(samples, "vlmkit_upstream_ejections_total", model="pair", deployment=b) == 1
    assert metric(samples, "vlmkit_upstream_up", model="pair", deployment=b) == 0
    assert metric(samples, "vlmkit_upstream_up", model="pair", deployment=cc) == 1
    assert metric(samples, "vlmkit_request_duration_seconds_count", model="gw") == 4
    assert metric(samples, "vlmkit_time_to_first_token_seconds_count", model="gw") == 1  # the stream
    hopper = prepare_image(hopper_jpeg)
    assert hopper.width is not None and hopper.height is not None
    assert metric(samples, "vlmkit_images_total", model="gw") == 3
    received = len(hopper_jpeg) + len(picture("JPEG", (2400, 1200))) + len(picture("BMP", (64, 48)))
    assert metric(samples, "vlmkit_image_bytes_received_total", model="gw") == received
    assert metric(samples, "vlmkit_image_tokens_estimated_total", model="gw") == (
        openai_tokens(hopper.width, hopper.height) + openai_tokens(2400, 1200) + openai_tokens(64, 48)
    )
    shapes = (("JPEG", (2400, 1200)), ("BMP", (64, 48)))
    sent = len(hopper_jpeg) + sum(len(prepare_image(picture(f, size)).render(OPENAI).data) for f, size in shapes)
    assert metric(samples, "vlmkit_image_bytes_sent_total", model="gw", deployment=a) == sent
    assert metric(samples, "vlmkit_images_transformed_total", model="gw", change="resized") == 1  # to 2048 px
    assert metric(samples, "vlmkit_images_transformed_total", model="gw", change="converted") == 1  # BMP
    assert metric(samples, "vlmkit_images_encoded_total", model="tiny") == 1
    assert metric(samples, "vlmkit_requests_total", model="tiny", deployment="local", status="200") == 1
    assert metric(samples, "vlmkit_queue_depth") == 0
    assert metric(samples, "vlmkit_upstream_inflight", model="gw", deployment=a) == 0


def picture(fmt: str, size: tuple[int, int]) -> bytes:
    """chelsea.png at ``size`` in Pillow format ``fmt``."""
    from PIL import Image

    from tests.conftest import encode, photo_path

    with Image.open(photo_path("chelsea.png")) as im:
        return encode(im.convert("RGB").resize(size), fmt, **({"quality": 70} if fmt == "JPEG" else {}))


@pytest.fixture(scope="session")
def chelsea_png() -> bytes:
    from tests.conftest import photo_path

    return photo_path("chelsea.png").read_bytes()


def test_json_logs_name_images_by_identity_and_never_hold_their_bytes(
    tmp_path: Path, upstreams: Any, hopper_jpeg: bytes
) -> None:
    good, bad = upstreams("good"), upstreams("bad")
    url = data_url(hopper_jpeg)
    bad.status = 500
    bad.error_message = f"could not read {url}"  # an upstream that quotes the request back
    config = tmp_path / "vlmkit.yaml"
    config.write_text(
        "models:\n  gw:\n    routing: round_robin\n    deployments:\n"
        f"      - {{model: openai/up, api_base: '{bad.base}', api_key: k, name: bad}}\n"
        f"      - {{model: openai/up, api_base: '{good.base}', api_key: k, name: good}}\n"
    )
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "VLMKIT_HOME": str(tmp_path / "home")}
    env.pop("VLMKIT_API_KEY", None)
    cmd = [sys.executable, "-m", "vlmkit.cli", "serve", "--port", str(port), "--config", str(config)]
    proc = subprocess.Popen([*cmd, "--log-format", "json"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_healthy(proc, f"http://127.0.0.1:{port}", timeout=30)
        body = {"model": "gw", "messages": image_message(url), "max_tokens": 5}
        r = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body, timeout=60)
        assert r.status_code == 200, r.text
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    lines = [line for line in out.decode().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    b64 = base64.b64encode(hopper_jpeg).decode()
    assert all(b64[1000:1040] not in line for line in lines)
    assert any(rec["logger"].startswith("uvicorn") for rec in records)
    ejected = [rec for rec in records if "ejected bad" in rec["message"]]
    assert len(ejected) == 1 and "chars left out" in ejected[0]["message"]
    (request,) = [rec for rec in records if rec.get("event") == "gateway_request"]
    hopper = prepare_image(hopper_jpeg)
    assert request["images"] == [
        {
            "id": hashlib.sha256(hopper_jpeg).hexdigest()[:16],
            "type": "image/jpeg",
            "size": f"{hopper.width}x{hopper.height}",
            "bytes": len(hopper_jpeg),
        }
    ]
    assert (request["model"], request["deployment"], request["status"], request["attempts"]) == ("gw", "good", 200, 2)
