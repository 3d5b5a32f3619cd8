"""The gateway speaks each deployment's cache dialect: vLLM's per-part ``uuid``, and image URLs
forwarded to a deployment that fetches them itself, or fetched by the gateway under its one policy."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.conftest import ImageServer
from tests.server.conftest import Upstream, data_url, image_message, start_server
from vlmkit.images.fetch import FetchOptions
from vlmkit.server import Deployment, GatewayModel, ServerSettings
from vlmkit.server.config import ConfigError
from vlmkit.server.gateway import Gateway


def ask(base: str, model: str, messages: Any) -> None:
    r = httpx.post(base + "/chat/completions", json={"model": model, "messages": messages}, timeout=60)
    assert r.status_code == 200, r.text


def sent_part(up: Upstream) -> dict[str, Any]:
    part: dict[str, Any] = up.requests[-1]["messages"][0]["content"][1]
    return part


def test_vllm_deployments_get_the_image_identity_as_the_part_uuid(
    upstreams: Callable[[str], Upstream], hopper_jpeg: bytes
) -> None:
    vllm, plain, off, llama = (upstreams(n) for n in ("vllm", "plain", "off", "llama"))

    def one(name: str, deployment: Deployment) -> GatewayModel:
        return GatewayModel(name, (deployment,), vision=True)

    settings = ServerSettings(
        gateway={
            "vllm": one("vllm", Deployment("hosted_vllm/qwen", api_base=vllm.base)),
            "plain": one("plain", Deployment("openai/gpt-4o", api_base=plain.base, api_key="k")),
            "off": one("off", Deployment("hosted_vllm/qwen", api_base=off.base, options={"image_uuid": False})),
            "llama": one("llama", Deployment("llama_cpp/m", api_base=llama.base, options={"image_uuid": True})),
        },
        shutdown_grace=1.0,
    )
    server = start_server(settings, record=False)
    try:
        for name in ("vllm", "plain", "off", "llama"):
            ask(server.base, name, image_message(data_url(hopper_jpeg)))
    finally:
        server.stop()
    identity = hashlib.sha256(hopper_jpeg).hexdigest()
    assert sent_part(vllm)["uuid"] == identity  # the JPEG went as it came: its identity is the bytes'
    assert sent_part(vllm)["image_url"]["url"].startswith("data:image/jpeg;base64,")
    assert "uuid" not in sent_part(plain)  # OpenAI's API knows no uuid
    assert "uuid" not in sent_part(off)
    for up in (vllm, llama):  # the uuid names the bytes each deployment got, rendered for it or not
        part = sent_part(up)
        sent = base64.b64decode(part["image_url"]["url"].split(",", 1)[1])
        assert part["uuid"] == hashlib.sha256(sent).hexdigest()


def test_image_urls_are_forwarded_or_fetched_per_deployment(
    upstreams: Callable[[str], Upstream], image_server: ImageServer
) -> None:
    forwards, fetches = upstreams("forwards"), upstreams("fetches")
    model = GatewayModel(
        "fwd",
        (
            Deployment("hosted_vllm/qwen", api_base=forwards.base, options={"image_urls": "forward"}),
            Deployment("openai/gpt-4o", api_base=fetches.base, api_key="k"),  # fetch: the default
        ),
        vision=True,
        routing="round_robin",
    )
    settings = ServerSettings(
        gateway={"fwd": model}, fetch=FetchOptions(allow_hosts=frozenset({"127.0.0.1"})), shutdown_grace=1.0
    )
    server = start_server(settings, record=False)
    url = image_server.url("rocket.jpg")
    try:
        ask(server.base, "fwd", image_message(url))
        ask(server.base, "fwd", image_message(url))
    finally:
        server.stop()
    assert sent_part(forwards) == {"type": "image_url", "image_url": {"url": url}}  # vLLM fetches it
    assert sent_part(fetches)["image_url"]["url"].startswith("data:image/jpeg;base64,")
    assert image_server.served == ["/rocket.jpg"]  # fetched once: for the deployment that does not forward


def test_forwarding_image_urls_is_refused_where_the_provider_cannot_fetch() -> None:
    fetch = FetchOptions()
    gemini = GatewayModel("g", (Deployment("gemini/gemini-2.0-flash", options={"image_urls": "forward"}),))
    with pytest.raises(ConfigError) as info:
        Gateway({"g": gemini}, cooldown=1, fetch=fetch)
    assert "models.g: gemini cannot fetch image URLs itself; use image_urls: fetch" in str(info.value)
    odd = GatewayModel("o", (Deployment("openai/gpt-4o", options={"image_urls": "proxy"}),))
    with pytest.raises(ConfigError) as info:
        Gateway({"o": odd}, cooldown=1, fetch=fetch)
    assert "models.o: image_urls must be 'fetch' or 'forward', not 'proxy'" in str(info.value)
