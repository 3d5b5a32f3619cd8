"""Batches through a provider's API, against the loopback upstream: each distinct image sent once,
concurrently, retried on 5xx, an error answer recorded while the rest completes; rate limits; the dry run."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from tests.batch.conftest import distinct_images
from tests.conftest import photo_path
from tests.providers.conftest import OPENAI_REPLY, Reply, Upstream
from vlmkit import batch
from vlmkit.batch.limits import RateLimiter
from vlmkit.errors import AuthenticationError, InvalidSettingError
from vlmkit.images import estimate_image_tokens, prepare_image
from vlmkit.providers import RetryPolicy
from vlmkit.providers.inspect import price_of

FAST = RetryPolicy(max_retries=2, initial_backoff=0.001, max_backoff=0.005, max_retry_after=0.05)


def lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_each_distinct_image_is_sent_once_many_at_a_time(upstream: Upstream, tmp_path: Path) -> None:
    paths = distinct_images(tmp_path / "img", 6)
    (tmp_path / "img" / "zz-dup.jpg").write_bytes(paths[2].read_bytes())
    out = tmp_path / "out.jsonl"
    summary = batch.run(
        tmp_path / "img", out, model="openai/gpt-4o", api_base=upstream.base, api_key="sk-test", concurrency=4
    )
    assert (summary.done, summary.duplicates, summary.failed) == (7, 1, 0)
    assert len(upstream.seen) == 6  # the duplicate was not sent
    body = upstream.seen[0].json
    image = body["messages"][0]["content"][1]["image_url"]["url"]
    assert body["model"] == "gpt-4o" and image.startswith("data:image/jpeg;base64,")
    records = lines(out)
    assert {r["answer"] for r in records} == {"A cat."}
    first = next(r for r in records if "duplicate_of" not in r)
    assert first["usage"] == {"prompt_tokens": 12, "completion_tokens": 3}
    assert first["sent"] == {"size": "96x96", "mime_type": "image/jpeg", "bytes": first["sent"]["bytes"]}


def test_many_in_flight_keep_one_connection_each(
    upstream: Upstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At 24 requests in flight the rows share 24 kept-alive connections at most: the batch's own pool
    is as large as its concurrency (httpx's default pool kept 20 alive and reconnected the rest)."""
    distinct_images(tmp_path / "img", 72)
    peers: list[tuple[str, int]] = []
    verify = upstream.server.verify_request  # the server calls it once for each connection it accepts

    def counted(request: object, address: tuple[str, int]) -> bool:
        peers.append(address)
        return verify(request, address)  # type: ignore[arg-type]

    monkeypatch.setattr(upstream.server, "verify_request", counted)
    out = tmp_path / "out.jsonl"
    summary = batch.run(
        tmp_path / "img", out, model="openai/gpt-4o", api_base=upstream.base, api_key="sk", concurrency=24
    )
    assert (summary.done, summary.failed) == (72, 0)
    assert len(upstream.seen) == 72 - summary.duplicates > 48  # a few crops repeat: those are sent once
    assert sorted(r["row"] for r in lines(out)) == list(range(72))
    assert 1 <= len(peers) <= 24, f"{len(peers)} connections for 24 requests in flight"


def test_a_5xx_is_retried_and_a_refused_row_is_an_error_record(upstream: Upstream, tmp_path: Path) -> None:
    distinct_images(tmp_path / "img", 3)
    refused = {"error": {"message": "Invalid image.", "type": "invalid_request_error"}}
    upstream.script(
        Reply(503, {"error": {"message": "busy"}}),
        Reply(body=OPENAI_REPLY),  # row 0, on its second try
        Reply(400, refused),  # row 1: refused, not retried
        Reply(body=OPENAI_REPLY),
    )
    out = tmp_path / "out.jsonl"
    summary = batch.run(
        tmp_path / "img", out, model="openai/gpt-4o", api_base=upstream.base, api_key="sk", concurrency=1, retry=FAST
    )
    records = {r["row"]: r for r in lines(out)}
    assert (summary.done, summary.failed) == (2, 1) and len(upstream.seen) == 4
    error = records[1]["error"]
    assert error["type"] == "ProviderBadRequestError" and error["status_code"] == 400
    assert "Invalid image." in error["message"]
    assert records[0]["answer"] == records[2]["answer"] == "A cat."

    # the rerun with retry_failed sends the refused row again, and only it
    summary = batch.run(
        tmp_path / "img", out, model="openai/gpt-4o", api_base=upstream.base, api_key="sk", retry_failed=True
    )
    assert (summary.skipped, summary.done) == (2, 1) and len(upstream.seen) == 5


def test_structured_output_goes_as_the_providers_schema_mode(upstream: Upstream, tmp_path: Path) -> None:
    distinct_images(tmp_path / "img", 1)
    schema = {"type": "object", "properties": {"animal": {"type": "string"}}, "required": ["animal"]}
    reply = json.loads(json.dumps(OPENAI_REPLY))
    reply["choices"][0]["message"]["content"] = '{"animal": "cat"}'
    upstream.script(Reply(body=reply))
    out = tmp_path / "out.jsonl"
    batch.run(tmp_path / "img", out, model="openai/gpt-4o", api_base=upstream.base, api_key="k", response_format=schema)
    assert upstream.seen[0].json["response_format"]["json_schema"]["schema"] == schema
    assert lines(out)[0]["parsed"] == {"animal": "cat"}


def test_provider_set_up_errors_stop_the_run_before_any_row(tmp_path: Path) -> None:
    distinct_images(tmp_path / "img", 1)
    with pytest.raises(AuthenticationError, match="OPENAI_API_KEY"):
        batch.run(tmp_path / "img", tmp_path / "o.jsonl", model="openai/gpt-4o")
    with pytest.raises(InvalidSettingError, match="image_max_tokens is an image token bound"):
        batch.run(tmp_path / "img", tmp_path / "o.jsonl", model="openai/gpt-4o", config={"image_max_tokens": 64})
    assert not (tmp_path / "o.jsonl").exists()


def test_the_rate_limiter_waits_for_the_window() -> None:
    limiter = RateLimiter(rpm=2, tpm=1000)
    assert limiter.wait_time(100, now=0.0) == 0
    limiter.record(100, 0.0)
    limiter.record(100, 10.0)
    assert limiter.wait_time(100, now=20.0) == pytest.approx(40.0)  # the third request waits for the first to age out
    assert limiter.wait_time(100, now=61.0) == 0
    heavy = RateLimiter(tpm=1000)
    heavy.record(600, 0.0)
    heavy.record(300, 30.0)
    assert heavy.wait_time(200, now=31.0) == pytest.approx(29.0)  # 100 over: waits for the 600 to leave
    assert heavy.wait_time(50, now=31.0) == 0
    with pytest.raises(ValueError, match="rpm must be at least 1, not 0"):
        RateLimiter(rpm=0)
    asyncio.run(RateLimiter().acquire(10**9))  # no limits: never waits


def test_the_dry_run_counts_estimates_and_prices(tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    paths = [tmp_path / "img" / name for name in ("grace_hopper.jpg", "retina.jpg", "rocket.jpg")]
    for path in paths:
        path.write_bytes(photo_path(path.name).read_bytes())
    (tmp_path / "img" / "zz-dup.jpg").write_bytes(paths[0].read_bytes())
    (tmp_path / "img" / "zz-bad.jpg").write_bytes(b"not an image")
    job = batch.make_job("openai/gpt-4o-2024-08-06", "Describe.", config={"max_tokens": 100})
    report = asyncio.run(batch.adry_run(tmp_path / "img", tmp_path / "out.jsonl", job))
    assert (report.rows, report.to_send, report.duplicates, report.unreadable) == (5, 3, 1, 1)
    handles = [prepare_image(p) for p in paths]
    assert report.image_tokens == {t: sum(estimate_image_tokens(h, t) for h in handles) for t in report.image_tokens}
    assert (price_of("openai/gpt-4o-2024-08-06"), price_of("openai/gpt-4o-2024-08-06", "output")) == (2.5, 10.0)
    expected = ((report.image_tokens["openai"] + report.text_tokens) * 2.5 + 3 * 100 * 10.0) / 1e6
    assert report.cost_usd == pytest.approx(expected) and report.batch_cost_usd == pytest.approx(expected / 2)
    text = "\n".join(report.lines())
    assert "5 rows: 3 to send, 0 already recorded, 1 duplicates (sent once), 1 unreadable" in text
    assert "zz-bad.jpg: the image 'zz-bad.jpg' is not an image" in text
    assert "with --mode batch" in text and not (tmp_path / "out.jsonl").exists()

    # a model whose image tokens follow another rule has no price: no estimate rather than a wrong one
    other = asyncio.run(batch.adry_run(tmp_path / "img", tmp_path / "out.jsonl", batch.make_job("openai/gpt-4o-mini")))
    assert other.cost_usd is None
    assert "cost: openai/gpt-4o-mini is not in vlmkit's price table" in "\n".join(other.lines())
