"""Batches on the embedded engine with the generated test VLM: errors per row, dedupe, resume after
a kill -9, templates, tables, structured answers. The model's words are random: the tests assert
records, counts and shapes, never words."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.batch.conftest import MODEL, ROOT, distinct_images
from vlmkit import batch
from vlmkit.cli import main
from vlmkit.errors import BadRequestError
from vlmkit.images import FetchOptions

FAST = {"max_tokens": 2, "seed": 1}


def lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_bad_rows_are_error_records_and_the_rest_completes(home: Path, tmp_path: Path) -> None:
    good = distinct_images(tmp_path / "img", 3)
    corrupt = tmp_path / "img" / "corrupt.jpg"
    corrupt.write_bytes(good[0].read_bytes()[:200])  # a JPEG cut short
    listing = tmp_path / "list.txt"
    unreachable = "http://127.0.0.1:9/nothing.jpg"  # the discard port: nothing listens
    listing.write_text("\n".join([str(good[0]), "img/missing.jpg", str(corrupt), unreachable, *map(str, good[1:])]))
    out = tmp_path / "out.jsonl"

    summary = batch.run(
        listing, out, model=MODEL, config=FAST, threads=1, fetch=FetchOptions(allow_hosts=frozenset({"127.0.0.1"}))
    )

    records = {r["row"]: r for r in lines(out)}
    assert sorted(records) == list(range(6)) and (summary.done, summary.failed) == (3, 3)
    missing, cut, url = records[1]["error"], records[2]["error"], records[3]["error"]
    assert missing["type"] == "ImageSourceError" and "missing.jpg" in missing["message"]
    assert records[1]["input"] == "img/missing.jpg"  # as the list wrote it
    assert cut["type"] == "InvalidImageError" and cut["status_code"] == 400
    assert url["type"] == "ImageFetchError" and "127.0.0.1:9" in url["message"]
    for i in (0, 4, 5):
        r = records[i]
        assert "error" not in r and isinstance(r["answer"], str)
        assert r["usage"]["completion_tokens"] <= 2 and r["sent"]["image_tokens"] > 0
        assert len(r["image"]) == 64 and len(r["key"]) == 64


def test_a_duplicate_image_is_sent_once_and_carries_the_same_answer(home: Path, tmp_path: Path) -> None:
    paths = distinct_images(tmp_path / "img", 3)
    copy = tmp_path / "img" / "zz-copy.jpg"
    copy.write_bytes(paths[1].read_bytes())  # the same bytes under another name
    out = tmp_path / "out.jsonl"
    summary = batch.run(tmp_path / "img", out, model=MODEL, config=FAST, threads=1)
    records = {r["input"]: r for r in lines(out)}
    first, dup = records[str(paths[1])], records[str(copy)]
    assert dup["duplicate_of"] == first["row"] and "duplicate_of" not in first
    assert dup["answer"] == first["answer"] and dup["key"] == first["key"]
    assert summary.duplicates == 1 and summary.done == 4

    # the next run with another prompt is other work: a new key, sent again
    again = batch.run(tmp_path / "img", tmp_path / "other.jsonl", model=MODEL, prompt="Caption it.", config=FAST)
    assert {r["key"] for r in lines(tmp_path / "other.jsonl")}.isdisjoint({first["key"]})
    assert again.done == 4


def test_a_rerun_sends_nothing_already_recorded(home: Path, tmp_path: Path) -> None:
    distinct_images(tmp_path / "img", 3)
    out = tmp_path / "out.jsonl"
    batch.run(tmp_path / "img", out, model=MODEL, config=FAST, threads=1)
    before = out.read_bytes()
    summary = batch.run(tmp_path / "img", out, model=MODEL, config=FAST, threads=1)
    assert (summary.skipped, summary.done) == (3, 0) and out.read_bytes() == before


def test_a_torn_last_record_is_cut_off_and_its_row_runs_again(home: Path, tmp_path: Path) -> None:
    distinct_images(tmp_path / "img", 3)
    out = tmp_path / "out.jsonl"
    batch.run(tmp_path / "img", out, model=MODEL, config=FAST, threads=1)
    kept = out.read_text().splitlines()
    torn = kept[-1][: len(kept[-1]) // 2]  # what a crash in the middle of a write leaves
    out.write_text("\n".join(kept[:-1]) + "\n" + torn)

    summary = batch.run(tmp_path / "img", out, model=MODEL, config=FAST, threads=1)

    assert (summary.skipped, summary.done) == (2, 1)
    records = lines(out)  # every line parses: the torn one is gone
    assert sorted(r["row"] for r in records) == [0, 1, 2]


def test_kill_9_mid_run_then_the_rerun_finishes_exactly_the_missing_rows(home: Path, tmp_path: Path) -> None:
    count = 40
    distinct_images(tmp_path / "img", count)
    out = tmp_path / "out.jsonl"
    cmd = [sys.executable, "-m", "vlmkit", "batch", str(tmp_path / "img"), "--model", MODEL, "-o", str(out)]
    cmd += ["--max-tokens", "2", "--seed", "1", "--threads", "1", "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "VLMKIT_HOME": str(home)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if out.exists() and out.read_bytes().count(b"\n") >= 3:
                break
            time.sleep(0.01)
        assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr and proc.stderr.read()!r}"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(30)
        if proc.stderr:
            proc.stderr.close()
    killed = out.read_bytes()
    recorded_before = {json.loads(line)["row"] for line in killed.splitlines() if line.endswith(b"}")}
    assert 3 <= len(recorded_before) < count

    rerun = subprocess.run([*cmd, "--json"], env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads(rerun.stdout)
    records = lines(out)  # every line of the file parses
    rows = [r["row"] for r in records]
    assert sorted(rows) == list(range(count)), "each row recorded exactly once"
    assert summary["done"] == count - summary["skipped"]
    assert summary["skipped"] <= len(recorded_before)  # a torn last line is not trusted
    assert all("error" not in r and r["answer"] is not None for r in records)


def test_table_inputs_templates_and_a_parquet_output(home: Path, tmp_path: Path) -> None:
    paths = distinct_images(tmp_path / "img", 2)
    table = tmp_path / "rows.csv"
    table.write_text(f"file,label\nimg/{paths[0].name},cat\nimg/{paths[1].name},rocket\n")
    out = tmp_path / "out.parquet"
    summary = batch.run(table, out, model=MODEL, prompt="Is this a {label}?", image_column="file", config=FAST)
    assert summary.done == 2
    records = batch.read_records(out)
    assert [r["row"] for r in records] == [0, 1] and records[0]["input"] == f"img/{paths[0].name}"
    assert records[0]["usage"]["completion_tokens"] <= 2
    assert (tmp_path / "out.parquet.jsonl").exists()  # the manifest a rerun resumes from

    jsonl = tmp_path / "rows.jsonl"
    jsonl.write_text("\n".join(json.dumps({"image": str(p), "n": i}) for i, p in enumerate(paths)) + "\n")
    assert batch.run(jsonl, tmp_path / "j.jsonl", model=MODEL, prompt="Photo {n}", config=FAST).done == 2

    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"image": [p.read_bytes() for p in paths], "id": ["a", "b"]}), tmp_path / "in.parquet")
    done = batch.run(tmp_path / "in.parquet", tmp_path / "p.jsonl", model=MODEL, config=FAST)
    assert done.done == 2 and lines(tmp_path / "p.jsonl")[0]["input"].startswith("in.parquet#")


def test_structured_answers_are_parsed(home: Path, tmp_path: Path) -> None:
    distinct_images(tmp_path / "img", 2)
    schema = {
        "type": "object",
        "properties": {"ok": {"type": "boolean"}},
        "required": ["ok"],
        "additionalProperties": False,
    }
    out = tmp_path / "out.jsonl"
    summary = batch.run(tmp_path / "img", out, model=MODEL, config={"max_tokens": 64}, response_format=schema)
    assert summary.done == 2
    for record in lines(out):
        assert isinstance(record["parsed"], dict) and isinstance(record["parsed"]["ok"], bool)


def test_bad_sources_and_templates_say_what_to_do(home: Path, tmp_path: Path) -> None:
    with pytest.raises(BadRequestError, match=r"'nowhere/' is neither a folder, a glob nor a file: give a folder"):
        batch.run("nowhere/", tmp_path / "o.jsonl", model=MODEL)
    table = tmp_path / "t.csv"
    table.write_text("picture,label\nx.jpg,cat\n")
    with pytest.raises(BadRequestError, match=r"t.csv has no image column .* its columns: picture, label\. Name it"):
        batch.run(table, tmp_path / "o.jsonl", model=MODEL)
    with pytest.raises(BadRequestError, match=r"names \{colour\}, which the row does not have; its fields: picture"):
        batch.run(table, tmp_path / "o.jsonl", model=MODEL, image_column="picture", prompt="Is it {colour}?")
    with pytest.raises(BadRequestError, match=r"must be a \.jsonl or \.parquet file, not \.csv"):
        batch.run(table, tmp_path / "o.csv", model=MODEL, image_column="picture")


def test_a_second_run_on_the_same_output_is_refused(home: Path, tmp_path: Path) -> None:
    distinct_images(tmp_path / "img", 1)
    out = tmp_path / "out.jsonl"
    with batch.Manifest(out), pytest.raises(BadRequestError, match=r"another vlmkit batch is writing .*out\.jsonl"):
        batch.run(tmp_path / "img", out, model=MODEL, config=FAST)


def test_the_command_line_reports_progress_lines_off_a_terminal(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    distinct_images(tmp_path / "img", 2)
    out = tmp_path / "out.jsonl"
    args = ["batch", str(tmp_path / "img"), "--model", MODEL, "-o", str(out), "--max-tokens", "2", "--threads", "1"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert f"{out}: 2 done, 0 failed, 0 skipped" in captured.out
    assert "done: 2/2 rows: 2 done, 0 failed, 0 skipped" in captured.err and "\r" not in captured.err
    assert main([*args, "--dry-run"]) == 0
    report = capsys.readouterr().out
    assert "2 rows: 0 to send, 2 already recorded" in report and "cost: none (a local model)" in report


def test_the_progress_bar_redraws_one_line_on_a_terminal() -> None:
    stream = io.StringIO()
    bar = batch.progress.Progress(total=4, stream=stream, tty=True)
    bar.add(done=1)
    bar.add(failed=1, duplicates=0)
    bar.close()
    text = stream.getvalue()
    bar_line = r"\r\x1b\[2K\[#{12}\.{12}\] 2/4 rows: 1 done, 1 failed, 0 skipped, [0-9.]+ rows/s, ETA [0-9:]+\n"
    assert re.fullmatch(bar_line, text)
