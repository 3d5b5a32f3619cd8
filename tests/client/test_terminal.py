"""``vlmkit describe`` and ``vlmkit chat``: streamed answers, and follow-up turns that reuse the image."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from tests.client.conftest import KEY, Generated
from vlmkit import StopReason, cli
from vlmkit.client import Client
from vlmkit.client.terminal import Settings, chat, describe

SETTINGS = Settings(max_tokens=8, threads=1)


def test_describe_command_streams_an_answer(photo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["describe", str(photo), "--max-tokens", "8", "--threads", "1", "--stats"])
    out, err = capsys.readouterr()
    assert code == 0
    assert out.endswith("\n")
    assert "stop: maxPredictedTokensReached" in err or "stop: eosFound" in err
    assert "images 1 encoded, 0 reused" in err


def test_describe_streams_the_fragments_it_returns(generated: Generated, photo: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    with Client(models_dir=generated.models_dir) as client:
        result = describe(client, photo, "What is in it?", SETTINGS, out, err)
    assert out.getvalue() == result.content + "\n"
    assert result.model_info is not None and result.model_info.key == KEY
    assert err.getvalue() == ""


def test_chat_follow_up_turns_reuse_the_image(generated: Generated, photo: Path) -> None:
    lines = io.StringIO("What is this?\n\nAnd the colours?\nAnything else?\n/quit\nnever read\n")
    out, err = io.StringIO(), io.StringIO()
    with Client(models_dir=generated.models_dir) as client:
        results = chat(client, [photo, photo.with_name("rocket.jpg")], SETTINGS, lines, out, err)
    assert len(results) == 3
    assert out.getvalue() == "".join(r.content + "\n" for r in results)
    first, *follow_ups = (r.stats for r in results)
    assert first.images_encoded == 2
    for stats in follow_ups:
        assert stats.images_encoded == 0 and stats.images_reused == 2
        assert stats.cached_prompt_tokens > first.prompt_tokens // 2
    assert all(s.stop_reason in (StopReason.MAX_PREDICTED_TOKENS_REACHED, StopReason.EOS_FOUND) for s in follow_ups)


def test_chat_command_reads_stdin_until_its_end(
    photo: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("Hello\nAgain\n"))
    code = cli.main(["chat", "--image", str(photo), "--max-tokens", "4", "--threads", "1", "--stats"])
    err = capsys.readouterr().err
    assert code == 0
    assert err.count("[") == 2 and "images 0 encoded, 1 reused" in err.splitlines()[1]


def test_describe_without_a_model_says_how_to_get_one(
    photo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("VLMKIT_HOME", str(tmp_path))
    assert cli.main(["describe", str(photo)]) == 1
    assert "no model is loaded or downloaded" in capsys.readouterr().err
    assert cli.main(["describe", str(photo), "--model", "smolvlm-256m"]) == 1
    assert "vlmkit get smolvlm-256m" in capsys.readouterr().err
