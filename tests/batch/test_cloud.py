"""``--mode batch`` end to end against loopback fakes of OpenAI's Batch API and Anthropic's Message
Batches (bodies checked against the official SDKs' types), and the request file for ``vllm run-batch``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from openai.types.chat import completion_create_params

from tests.batch.conftest import distinct_images
from tests.batch.fakes import FakeBatchAPI
from tests.providers.sdk_types import check
from vlmkit.batch.cloud import arun_cloud, awrite_requests, run_cloud
from vlmkit.batch.manifest import custom_id
from vlmkit.errors import BadRequestError

QUICK = {"poll": 0.01}


@pytest.fixture
def fake() -> Iterator[FakeBatchAPI]:
    server = FakeBatchAPI()
    yield server
    server.close()


def lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def folder(tmp_path: Path, count: int) -> Path:
    paths = distinct_images(tmp_path / "img", count)
    (tmp_path / "img" / "zz-dup.jpg").write_bytes(paths[0].read_bytes())
    (tmp_path / "img" / "zz-bad.jpg").write_bytes(b"GIF89a")  # a cut GIF header
    return tmp_path / "img"


def test_openai_batch_split_submitted_polled_and_mapped_back(fake: FakeBatchAPI, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    summary = run_cloud(
        folder(tmp_path, 5),
        out,
        model="openai/gpt-4o",
        api_base=f"{fake.base}/v1",
        api_key="sk",
        max_requests=2,
        **QUICK,
    )
    assert fake.problems == []
    assert len(fake.jobs) == 3 and len(fake.requests) == 5  # 5 distinct requests in files of 2, 2 and 1
    records = {r["input"].rsplit("/", 1)[-1]: r for r in lines(out)}
    assert (summary.done, summary.failed, summary.duplicates) == (6, 1, 1)
    first = records["img000.jpg"]
    assert first["answer"] == f"answer to {custom_id(first['key'])}"
    assert first["usage"] == {"prompt_tokens": 100, "completion_tokens": 4}
    assert first["sent"]["mime_type"] == "image/jpeg"
    assert records["zz-dup.jpg"]["duplicate_of"] == first["row"] and records["zz-dup.jpg"]["answer"] == first["answer"]
    assert records["zz-bad.jpg"]["error"]["type"] == "InvalidImageError"
    body = fake.requests[0]["body"]
    assert body["model"] == "gpt-4o" and body["messages"][0]["content"][1]["image_url"]["url"].startswith("data:")

    # nothing left: a rerun sends nothing
    again = run_cloud(
        folder(tmp_path, 5), out, model="openai/gpt-4o", api_base=f"{fake.base}/v1", api_key="sk", **QUICK
    )
    assert again.skipped == 7 and len(fake.jobs) == 3


def test_a_refused_request_is_its_rows_error(fake: FakeBatchAPI, tmp_path: Path) -> None:
    from vlmkit.batch.job import make_job
    from vlmkit.images import prepare_image

    source = folder(tmp_path, 2)
    key = make_job("openai/gpt-4o").key(prepare_image(source / "img001.jpg"), "Describe this image.")
    fake.fail.add(custom_id(key))
    out = tmp_path / "out.jsonl"
    summary = run_cloud(source, out, model="openai/gpt-4o", api_base=f"{fake.base}/v1", api_key="sk", **QUICK)
    refused = next(r for r in lines(out) if r["key"] == key)
    assert refused["error"]["type"] == "ProviderBadRequestError" and "refused vk-" in refused["error"]["message"]
    assert (summary.done, summary.failed) == (2, 2)  # img000 and its duplicate; the bad image and the refusal


def test_a_rerun_after_a_stop_waits_for_the_submitted_jobs_instead_of_sending_again(
    fake: FakeBatchAPI, tmp_path: Path
) -> None:
    source, out = folder(tmp_path, 3), tmp_path / "out.jsonl"
    options = {"model": "openai/gpt-4o", "api_base": f"{fake.base}/v1", "api_key": "sk", **QUICK}
    fake.hold = True

    async def stopped() -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(arun_cloud(source, out, **options), timeout=2.0)

    asyncio.run(stopped())
    assert len(fake.jobs) == 1 and (tmp_path / "out.jsonl.batches").exists()
    fake.hold = False
    summary = run_cloud(source, out, **options)
    assert len(fake.jobs) == 1 and len(fake.requests) == 3  # nothing sent twice
    assert summary.done == 4 and sorted(r["row"] for r in lines(out)) == list(range(5))


def test_an_expired_job_leaves_error_records_that_retry_failed_sends_again(fake: FakeBatchAPI, tmp_path: Path) -> None:
    source, out = folder(tmp_path, 2), tmp_path / "out.jsonl"
    options = {"model": "openai/gpt-4o", "api_base": f"{fake.base}/v1", "api_key": "sk", **QUICK}
    fake.expire = True
    first = run_cloud(source, out, **options)
    expired = [r for r in lines(out) if r["error"] and r["error"]["type"] == "BatchJobError"]
    assert first.failed == 4 and len(expired) == 3
    assert "ended expired without answering this request; rerun with --retry-failed" in expired[0]["error"]["message"]
    fake.expire = False
    again = run_cloud(source, out, retry_failed=True, **options)
    assert len(fake.jobs) == 2 and len(fake.requests) == 4 and again.done == 3


def test_anthropic_message_batches_end_to_end(fake: FakeBatchAPI, tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    summary = run_cloud(
        folder(tmp_path, 3),
        out,
        model="anthropic/claude-3-5-sonnet-latest",
        api_base=fake.base,
        api_key="k",
        config={"max_tokens": 50},
        **QUICK,
    )
    assert fake.problems == [] and len(fake.requests) == 3
    assert fake.requests[0]["params"]["max_tokens"] == 50
    assert fake.requests[0]["params"]["messages"][0]["content"][1]["source"]["type"] == "base64"
    assert (summary.done, summary.failed) == (4, 1)
    from vlmkit.batch import read_records

    records = read_records(out)
    ok = [r for r in records if r["answer"]]
    assert all(r["answer"] == f"answer to {custom_id(r['key'])}" for r in ok) and len(ok) == 4


def test_gemini_batch_mode_inline_jobs(fake: FakeBatchAPI, tmp_path: Path) -> None:
    from vlmkit.batch.job import make_job
    from vlmkit.images import prepare_image

    source, out = folder(tmp_path, 3), tmp_path / "out.jsonl"
    refused = make_job("gemini/gemini-2.0-flash").key(prepare_image(source / "img002.jpg"), "Describe this image.")
    fake.fail.add(custom_id(refused))
    summary = run_cloud(
        source, out, model="gemini/gemini-2.0-flash", api_base=fake.base, api_key="g", max_bytes=5_000, **QUICK
    )
    assert fake.problems == [] and len(fake.requests) == 3 and len(fake.jobs) >= 2  # split under max_bytes
    assert (summary.done, summary.failed) == (3, 2)
    records = {r["key"]: r for r in lines(out) if r["key"]}
    assert records[refused]["error"]["message"].endswith(f"refused {custom_id(refused)}")
    ok = [r for r in records.values() if not r.get("error")]
    assert ok and all(r["answer"] == f"answer to {custom_id(r['key'])}" for r in ok)
    assert ok[0]["usage"] == {"prompt_tokens": 100, "completion_tokens": 4}


def test_the_request_file_for_vllm_run_batch(tmp_path: Path) -> None:
    out = tmp_path / "requests.jsonl"
    written, unreadable = asyncio.run(
        awrite_requests(folder(tmp_path, 3), out, model="hosted_vllm/Qwen2-VL-2B-Instruct", config={"max_tokens": 64})
    )
    assert (written, unreadable) == (3, 1)
    requests = lines(out)
    for item in requests:
        assert set(item) == {"custom_id", "method", "url", "body"} and item["url"] == "/v1/chat/completions"
        # vLLM's one extension: each image part's uuid (the content identity its caches key on)
        image_parts = [p for p in item["body"]["messages"][0]["content"] if p["type"] == "image_url"]
        assert all(len(p.pop("uuid")) >= 16 for p in image_parts) and image_parts
        check(item["body"], completion_create_params.CompletionCreateParamsNonStreaming)
    assert requests[0]["body"]["model"] == "Qwen2-VL-2B-Instruct" and requests[0]["body"]["max_tokens"] == 64


def test_batch_mode_says_where_it_applies(tmp_path: Path) -> None:
    source = folder(tmp_path, 1)
    with pytest.raises(BadRequestError, match=r"local/tiny is a local model, whose rows run directly: drop --mode"):
        run_cloud(source, tmp_path / "o.jsonl", model="local/tiny")
    with pytest.raises(BadRequestError, match=r"OpenAI's, Anthropic's or Gemini's batch API, not groq's; run groq/"):
        run_cloud(source, tmp_path / "o.jsonl", model="groq/llama-vision", api_key="k")


def test_the_command_line_modes(
    fake: FakeBatchAPI, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from vlmkit.cli import main

    source = str(folder(tmp_path, 2))
    out = tmp_path / "out.jsonl"
    args = ["batch", source, "--model", "openai/gpt-4o", "-o", str(out), "--mode", "batch", "--poll", "0.01"]
    monkeypatch.setenv("OPENAI_API_KEY", "sk-cli")
    assert main([*args, "--api-base", f"{fake.base}/v1", "--no-progress"]) == 1  # the bad image failed
    assert f"{out}: 3 done, 1 failed, 0 skipped" in capsys.readouterr().out and len(fake.jobs) == 1
    requests = tmp_path / "requests.jsonl"
    assert main(["batch", source, "--model", "hosted_vllm/m", "-o", str(requests), "--mode", "requests"]) == 0
    assert f"{requests}: 2 requests (1 rows unreadable, left out)" in capsys.readouterr().out
