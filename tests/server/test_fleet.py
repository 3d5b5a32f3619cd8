"""The gateway in front of a fleet: three real ``vlmkit serve`` replicas of the generated test VLM.

Where each request landed is read from each replica's own counters (its ``/metrics``: requests
answered, images through its encoder), never from the gateway's view of itself.
"""

from __future__ import annotations

import concurrent.futures
import io
import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import photo_path
from tests.server.conftest import Running, data_url, start_server
from tests.server.replicas import Replica, metric, metric_samples, start_replicas
from vlmkit.engine.synthetic import write_test_model
from vlmkit.images import prepare_image
from vlmkit.server import Deployment, GatewayModel, ServerSettings


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Replica]]:
    root = tmp_path_factory.mktemp("fleet")
    model, mmproj = write_test_model(root / "model")
    started = start_replicas(3, root, model, mmproj)
    try:
        yield started
    finally:
        for r in started:
            r.stop()


@pytest.fixture(scope="module")
def gateway(replicas: list[Replica], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    def fleet(name: str, routing: str, **more: Any) -> GatewayModel:
        deployments = tuple(Deployment("llama_cpp/tiny", api_base=r.base, name=f"replica-{r.index}") for r in replicas)
        return GatewayModel(name, deployments, vision=True, routing=routing, **more)

    settings = ServerSettings(
        models_dir=str(tmp_path_factory.mktemp("gw-models")),
        gateway={
            "aff": fleet("aff", "affinity", health_interval=0.3),
            "cold": fleet("cold", "affinity"),  # no health checks: a paused replica is only busy, not ejected
            "rr": fleet("rr", "round_robin"),
            "lw": fleet("lw", "least_work"),
        },
        failover_cooldown=1.0,
        shutdown_grace=1.0,
    )
    running = start_server(settings, record=False)
    try:
        yield running
    finally:
        running.stop()


def ask(gw: Running, model: str, messages: list[dict[str, Any]], **headers: str) -> str:
    r = httpx.post(
        gw.base + "/chat/completions",
        json={"model": model, "messages": messages, "max_tokens": 4, "temperature": 0},
        headers=headers,
        timeout=120,
    )
    assert r.status_code == 200, r.text
    content: str = r.json()["choices"][0]["message"]["content"]
    return content


def image_turn(photo: str, text: str) -> dict[str, Any]:
    url = data_url(photo_path(photo).read_bytes(), "image/png" if photo.endswith(".png") else "image/jpeg")
    parts = [{"type": "text", "text": text}, {"type": "image_url", "image_url": {"url": url}}]
    return {"role": "user", "content": parts}


def counts(replicas: list[Replica]) -> list[dict[str, float]]:
    return [r.counters() for r in replicas]


def delta(before: list[dict[str, float]], after: list[dict[str, float]], key: str) -> list[float]:
    return [a[key] - b[key] for a, b in zip(after, before, strict=True)]


def test_affinity_sends_the_follow_up_and_a_new_chat_to_the_replica_that_encoded_the_image(
    replicas: list[Replica], gateway: Running
) -> None:
    start = counts(replicas)
    first = [image_turn("grace_hopper.jpg", "Describe this image.")]
    answer = ask(gateway, "aff", first)
    after_first = counts(replicas)
    landed = delta(start, after_first, "requests")
    assert sorted(landed) == [0, 0, 1]
    home = landed.index(1)
    assert delta(start, after_first, "encoded") == [1 if i == home else 0 for i in range(3)]

    follow_up = [*first, {"role": "assistant", "content": answer}, {"role": "user", "content": "And the colours?"}]
    ask(gateway, "aff", follow_up)
    ask(gateway, "aff", [image_turn("grace_hopper.jpg", "Who is this?")])  # a new chat, the same picture
    end = counts(replicas)
    assert delta(after_first, end, "requests") == [2 if i == home else 0 for i in range(3)]
    assert delta(after_first, end, "encoded") == [0, 0, 0]  # nothing encoded again, anywhere
    assert delta(after_first, end, "hits")[home] >= 1  # the new chat found the embeddings in its cache


def fresh_png(rgb: tuple[int, int, int]) -> bytes:
    """A picture no replica has seen."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (96, 64), rgb).save(buf, "PNG")
    return buf.getvalue()


def png_turn(png: bytes, text: str) -> dict[str, Any]:
    parts = [{"type": "text", "text": text}, {"type": "image_url", "image_url": {"url": data_url(png, "image/png")}}]
    return {"role": "user", "content": parts}


def test_affinity_places_a_cold_image_on_an_idle_replica_not_behind_a_busy_one(
    replicas: list[Replica], gateway: Running
) -> None:
    fleet = gateway.state.gateway.fleet("cold")
    png = fresh_png((200, 30, 90))
    key = f"image:{prepare_image(png).identifier}"
    ranked = sorted(fleet.replicas, key=lambda r: r.weight(key), reverse=True)
    busy, idle = (int(r.label.removeprefix("replica-")) for r in ranked[:2])
    # a session whose own (cold) choice is the image's rendezvous choice: a chat that keeps it busy
    session = next(
        f"s-{i}" for i in range(1000) if max(fleet.replicas, key=lambda r: r.weight(f"session:s-{i}")) is ranked[0]
    )
    start = counts(replicas)
    proc = replicas[busy].proc
    assert proc is not None
    proc.send_signal(signal.SIGSTOP)  # the busy replica's request cannot finish until it resumes
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            held = pool.submit(
                ask, gateway, "cold", [{"role": "user", "content": "Hello"}], **{"X-Session-Id": session}
            )
            deadline = time.monotonic() + 30
            while ranked[0].inflight == 0:
                assert time.monotonic() < deadline and not held.done(), "the busy chat did not reach its replica"
                time.sleep(0.02)
            samples = metric_samples(httpx.get(gateway.url + "/metrics").text)  # read when scraped
            busy_label = {"model": "cold", "deployment": f"replica-{busy}"}
            assert metric(samples, "vlmkit_upstream_inflight", **busy_label) == 1
            assert metric(samples, "vlmkit_upstream_outstanding_tokens", **busy_label) > 0
            answer = ask(gateway, "cold", [png_turn(png, "Describe this image.")])  # the cold image
            assert not held.done()
            proc.send_signal(signal.SIGCONT)
            held.result()
    finally:
        proc.send_signal(signal.SIGCONT)
    after_first = counts(replicas)
    assert delta(start, after_first, "encoded") == [1 if i == idle else 0 for i in range(3)]
    assert delta(start, after_first, "requests") == [1 if i in (busy, idle) else 0 for i in range(3)]

    # the follow-up stays where the image was encoded, though its rendezvous choice is idle again now
    follow_up = [png_turn(png, "Describe this image."), {"role": "assistant", "content": answer}]
    ask(gateway, "cold", [*follow_up, {"role": "user", "content": "And the colours?"}])
    end = counts(replicas)
    assert delta(after_first, end, "requests") == [1 if i == idle else 0 for i in range(3)]
    assert delta(after_first, end, "encoded") == [0, 0, 0]
    wait_in_service(gateway, "aff", f"replica-{busy}")  # the paused replica failed aff's health checks


def wait_in_service(gw: Running, model: str, label: str) -> None:
    deadline = time.monotonic() + 30
    while {d["deployment"]: d for d in gw.state.gateway.health()[model]}[label]["ejected"]:
        assert time.monotonic() < deadline, f"{label} was not readmitted"
        time.sleep(0.1)


def test_affinity_follows_a_session_header_for_text(replicas: list[Replica], gateway: Running) -> None:
    start = counts(replicas)
    for i in range(3):
        ask(gateway, "aff", [{"role": "user", "content": f"Hello {i}"}], **{"X-Session-Id": "chat-42"})
    landed = delta(start, counts(replicas), "requests")
    assert sorted(landed) == [0, 0, 3]


def test_round_robin_spreads_the_same_image_over_every_replica(replicas: list[Replica], gateway: Running) -> None:
    start = counts(replicas)
    for _ in range(3):
        ask(gateway, "rr", [image_turn("rocket.jpg", "Describe this image.")])
    end = counts(replicas)
    assert delta(start, end, "requests") == [1, 1, 1]
    assert delta(start, end, "encoded") == [1, 1, 1]  # each replica paid the encode


def test_least_work_counts_image_tokens_and_spreads_concurrent_requests(
    replicas: list[Replica], gateway: Running
) -> None:
    start = counts(replicas)
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        list(pool.map(lambda p: ask(gateway, "lw", [image_turn(p, "Describe.")]), ["chelsea.png", "coffee.png"]))
    landed = delta(start, counts(replicas), "requests")
    assert sum(landed) == 2
    fleet = gateway.state.gateway.fleet("lw")
    assert all(r.inflight == 0 and r.outstanding_tokens == 0 for r in fleet.replicas)


def stream(gw: Running, messages: list[dict[str, Any]]) -> tuple[bool, int, str]:
    """(answered whole, content chunks received, the error) of one streamed request to ``aff``."""
    chunks = 0
    body = {"model": "aff", "messages": messages, "max_tokens": 8, "temperature": 0, "stream": True}
    try:
        with httpx.stream("POST", gw.base + "/chat/completions", json=body, timeout=120) as r:
            if r.status_code != 200:
                return False, 0, r.read().decode()
            for line in r.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                event = json.loads(line[6:])
                if "error" in event:
                    return False, chunks, event["error"]["message"]
                chunks += 1
    except httpx.HTTPError as exc:
        return False, chunks, str(exc)
    return True, chunks, ""


def test_a_killed_replica_loses_no_unstarted_request_is_ejected_and_readmitted(
    replicas: list[Replica], gateway: Running
) -> None:
    start = counts(replicas)
    photo = "retina.jpg"
    ask(gateway, "aff", [image_turn(photo, "Describe this image.")])
    home = delta(start, counts(replicas), "requests").index(1)
    victim = replicas[home]
    label = f"replica-{home}"

    # a run in flight when the replica dies: every request that had not started streaming is answered
    photos = ["retina.jpg", "chelsea.png", "coffee.png", "rocket.jpg", "astronaut.png", "grace_hopper.jpg"] * 2
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(stream, gateway, [image_turn(p, f"Question {i}")]) for i, p in enumerate(photos)]
        time.sleep(0.2)
        victim.kill()
        results = [f.result() for f in futures]
    for ok, chunks, error in results:
        assert ok or chunks > 0, f"a request that had not started streaming was lost: {error}"

    # after the kill, requests that prefer the dead replica go elsewhere, all of them answered
    for i in range(3):
        ok, chunks, error = stream(gateway, [image_turn(photo, f"Again {i}")])
        assert ok and chunks > 0, error
    view = {d["deployment"]: d for d in gateway.state.gateway.health()["aff"]}
    assert view[label]["ejected"] is True
    samples = metric_samples(httpx.get(gateway.url + "/metrics").text)
    ejections = metric(samples, "vlmkit_upstream_ejections_total", model="aff", deployment=label)
    readmissions = metric(samples, "vlmkit_upstream_readmissions_total", model="aff", deployment=label)
    # out of service now; a stream that had its first chunk before the kill may have readmitted it for
    # a moment (it answered), and its end ejected it again
    assert ejections >= 1 and ejections - readmissions == 1
    assert metric(samples, "vlmkit_upstream_up", model="aff", deployment=label) == 0

    # back on the same port: the health check readmits it after the cool-down, and its image returns to it
    victim.start()
    victim.wait_ready()
    wait_in_service(gateway, "aff", label)
    samples = metric_samples(httpx.get(gateway.url + "/metrics").text)
    assert metric(samples, "vlmkit_upstream_readmissions_total", model="aff", deployment=label) == readmissions + 1
    assert metric(samples, "vlmkit_upstream_up", model="aff", deployment=label) == 1

    # its image stays with the replica that encoded it since; the victim came back with empty caches and
    # takes cold work again (a new chat whose rendezvous choice it is, on an idle fleet)
    before = counts(replicas)
    ask(gateway, "aff", [image_turn(photo, "Once more.")])
    moved = delta(before, counts(replicas), "requests")
    assert moved[home] == 0 and sum(moved) == 1
    fleet = gateway.state.gateway.fleet("aff")
    session = next(
        f"new-{i}"
        for i in range(1000)
        if max(fleet.replicas, key=lambda r: r.weight(f"session:new-{i}")).label == label
    )
    ask(gateway, "aff", [{"role": "user", "content": "Hello"}], **{"X-Session-Id": session})
    assert victim.counters()["requests"] == 1  # a fresh process: this is its first request


def test_fleet_routing_config_errors_name_the_setting(tmp_path: Path) -> None:
    from vlmkit.server.config import ConfigError, parse_config

    spec = {"models": {"m": {"deployments": [{"model": "openai/x", "api_base": "http://127.0.0.1:1/v1"}]}}}
    spec["models"]["m"]["routing"] = "sticky"
    with pytest.raises(ConfigError) as info:
        parse_config(spec)
    assert "models.m.routing" in str(info.value) and "'sticky' is not a routing mode" in str(info.value)
    assert "affinity, least_work, round_robin" in str(info.value)
    spec["models"]["m"]["routing"] = "affinity"
    spec["models"]["m"]["health_check"] = "often"
    with pytest.raises(ConfigError) as info:
        parse_config(spec)
    assert "models.m.health_check: 'often' is not a number of seconds" in str(info.value)
    spec["models"]["m"]["health_check"] = {"interval": 2, "path": "/healthz"}
    spec["models"]["m"]["sticky"] = True
    with pytest.raises(ConfigError) as info:
        parse_config(spec)
    assert "unknown setting(s) sticky" in str(info.value) and "routing" in str(info.value)
    del spec["models"]["m"]["sticky"]
    spec["models"]["m"]["load_bound"] = 0.5
    with pytest.raises(ConfigError) as info:
        parse_config(spec)
    assert "models.m.load_bound: 0.5 is not a factor of at least 1" in str(info.value)
    assert "load_bound: 2" in str(info.value)
    spec["models"]["m"]["load_bound"] = 3
    assert parse_config(spec).gateway["m"].load_bound == 3.0
    del spec["models"]["m"]["load_bound"]
    model = parse_config(spec).gateway["m"]
    assert (model.routing, model.health_interval, model.health_path) == ("affinity", 2.0, "/healthz")
