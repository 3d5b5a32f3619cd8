"""The fleet's choice on its own: what a request weighs, where affinity sends it, when it spills."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from vlmkit.chat import Chat
from vlmkit.images import prepare_image
from vlmkit.images.tokens import openai_tokens
from vlmkit.server import Deployment, GatewayModel
from vlmkit.server.config import parse_config
from vlmkit.server.fleet import UNKNOWN_IMAGE_TOKENS, Fleet, RequestCost, affinity_key, request_cost
from vlmkit.server.gateway import Gateway
from vlmkit.wire.openai_chat import to_chat


def fleet(routing: str = "affinity", *, limit: int | None = None, cooldown: float = 60.0) -> Fleet:
    deployments = tuple(Deployment("hosted_vllm/m", api_base=f"http://127.0.0.1:{9000 + i}/v1") for i in range(3))
    return Fleet(GatewayModel("m", deployments, routing=routing, max_outstanding_tokens=limit), cooldown=cooldown)


def test_a_request_is_estimated_once_text_and_image_tokens_and_the_images_it_carries(hopper_bytes: bytes) -> None:
    image = prepare_image(hopper_bytes)
    assert image.width is not None and image.height is not None
    chat = Chat()
    chat.add_user_message("x" * 400, images=[image])
    assert request_cost(chat) == RequestCost(101, openai_tokens(image.width, image.height), 1, len(hopper_bytes))
    assert request_cost(chat).total == 101 + openai_tokens(image.width, image.height)
    url_only = to_chat([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://h/a.png"}}]}])
    assert request_cost(url_only) == RequestCost(
        0, UNKNOWN_IMAGE_TOKENS, 0, 0
    )  # an unfetched URL: its size is not known yet
    assert affinity_key(url_only, None) == "url:https://h/a.png"


def test_affinity_keys_on_the_session_first_then_the_first_image(hopper_bytes: bytes) -> None:
    image = prepare_image(hopper_bytes)
    chat = Chat()
    chat.add_user_message("what is this?", images=[image])
    assert affinity_key(chat, None) == f"image:{image.identifier}"
    assert affinity_key(chat, "s-1") == "session:s-1"
    assert affinity_key(Chat("be brief"), None) is None


def rendezvous(f: Fleet, key: str) -> list[int]:
    """The replicas' indexes in ``key``'s rendezvous order."""
    return sorted(range(3), key=lambda i: f.replicas[i].weight(key), reverse=True)


def test_a_cold_key_goes_to_the_least_loaded_replica_ties_to_its_rendezvous_choice() -> None:
    f = fleet()
    first, second, third = rendezvous(f, "image:abc")
    assert all(f.order(RequestCost(10, 700), "image:abc")[0] is f.replicas[first] for _ in range(5))  # idle
    f.begin(f.replicas[first], 800, "image:other")  # another chat's image being encoded there
    order = f.order(RequestCost(10, 700), "image:abc")
    assert order[0] is f.replicas[second] and order[-1] is f.replicas[first]  # not queued behind that encode
    f.begin(f.replicas[second], 20)
    assert f.order(RequestCost(10, 700), "image:abc")[0] is f.replicas[third]


def test_a_warm_key_stays_with_its_busy_holder_and_weighs_only_its_text_there() -> None:
    f = fleet()
    cost = RequestCost(50, 700)
    holder = f.order(cost, "image:abc")[0]
    assert f.tokens_on(holder, cost, "image:abc") == 750  # cold: the encode is still to come
    f.begin(holder, 750, "image:abc")
    assert f.holders("image:abc") == {holder}
    assert f.tokens_on(holder, cost, "image:abc") == 50  # its images are cached there now
    assert all(f.tokens_on(r, cost, "image:abc") == 750 for r in f.replicas if r is not holder)
    assert all(f.order(cost, "image:abc")[0] is holder for _ in range(5))  # busy, but elsewhere re-encodes


def test_a_warm_key_spills_past_max_outstanding_tokens_and_past_the_load_bound() -> None:
    f = fleet(limit=1000)
    cost = RequestCost(50, 700)
    holder = f.replicas[rendezvous(f, "image:abc")[0]]
    f.begin(holder, 900, "image:abc")
    assert f.order(cost, "image:abc")[0] is holder  # 900 + its text 50 of 1000: still room
    f.begin(holder, 100)
    spilled = f.order(cost, "image:abc")
    assert spilled[0] is not holder and spilled[-1] is holder  # 1050 would pass the limit
    f.end(holder, 100)
    f.end(holder, 900)

    # load_bound 2: at most ceil(2 x the mean in flight, this request counted) on the holder
    f.begin(holder, 1)
    assert f.order(cost, "image:abc")[0] is holder  # 2 of 2 in flight: ceil(2 x 2 / 3) = 2
    f.begin(holder, 1)
    spilled = f.order(cost, "image:abc")
    assert spilled[0] is not holder  # 3 of 3: ceil(2 x 3 / 3) = 2 passed; an idle replica takes it
    f.begin(spilled[0], 750, "image:abc")
    assert f.holders("image:abc") == {holder, spilled[0]}  # held by both now: the less loaded one is asked
    assert f.order(cost, "image:abc")[0] is holder  # 2 outstanding tokens against the encode's 750
    f.begin(holder, 2000)
    assert f.order(cost, "image:abc")[0] is spilled[0]


def test_an_ejected_replica_loses_its_keys_and_is_tried_last() -> None:
    f = fleet()
    holder = f.order(RequestCost(10, 700), "image:abc")[0]
    f.begin(holder, 710, "image:abc")
    f.end(holder, 710)
    f.failed(holder, "connection refused")
    assert f.holders("image:abc") == set()  # its caches may have gone with it: the key is cold again
    order = f.order(RequestCost(10, 700), "image:abc")
    assert order[0] is not holder and order[-1] is holder  # ejected: tried last, never lost
    assert holder.ejected and holder.ejections == 1


def test_an_ejected_replica_is_tried_again_after_its_cool_down_and_readmitted_by_a_success() -> None:
    f = fleet(cooldown=0.0)
    r = f.replicas[0]
    f.failed(r, "503")
    assert r.ejected and r.available(now=r.ejected_until)  # the cool-down is over: it may be tried
    f.succeeded(r)
    assert not r.ejected and r.ejections == 1


def test_least_work_picks_the_replica_with_the_fewest_outstanding_tokens_not_requests() -> None:
    f = fleet("least_work")
    a, b, c = f.replicas
    f.begin(a, 5000)  # one request with large images
    f.begin(b, 100)
    f.begin(b, 100)  # two small ones
    f.begin(c, 300)
    assert [r.label for r in f.order(RequestCost(10), None)] == [b.label, c.label, a.label]


def test_round_robin_turns_whatever_the_load() -> None:
    f = fleet("round_robin")
    f.begin(f.replicas[0], 10_000)
    firsts = [f.order(RequestCost(10), "image:abc")[0] for _ in range(6)]
    assert [f.replicas.index(r) for r in firsts] == [0, 1, 2, 0, 1, 2]


def test_the_readme_fleet_example_is_a_config_the_gateway_takes(monkeypatch: pytest.MonkeyPatch) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("## A fleet behind the gateway") :]
    example = section[section.index("```yaml\n") + 8 : section.index("```\n", section.index("```yaml\n"))]
    monkeypatch.setenv("TEAM_A_KEY", "sk-a")
    monkeypatch.setenv("OPS_KEY", "sk-ops")
    settings = parse_config(yaml.safe_load(example))
    model = settings.gateway["qwen-vl"]
    assert (model.routing, model.health_interval, model.max_outstanding_tokens) == ("affinity", 5.0, 200000)
    assert model.load_bound == 2.0
    assert [d.label for d in model.deployments] == ["vllm-a", "vllm-b", "vllm-c"]
    assert [k.name for k in settings.keys] == ["team-a", "ops"] and settings.keys[1].admin
    gateway = Gateway(settings.gateway, cooldown=5, fetch=settings.fetch)
    assert gateway.forwards_urls("qwen-vl")
