"""``vlmkit describe`` and ``vlmkit chat``: streamed answers, and follow-up turns that reuse the image."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from tests.client.conftest import KEY, Generated
from vlmkit import StopReason, cli
from vlmkit.client import Client
from vlmkit.client.terminal import COMMANDS, Settings, chat, describe, help_text

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


class Terminal(io.StringIO):
    """Scripted input that says it is a terminal, as a person typing would be."""

    def isatty(self) -> bool:
        return True


def test_chat_commands_are_never_sent_to_the_model(generated: Generated, photo: Path) -> None:
    rocket = photo.with_name("rocket.jpg")
    script = f"/help\nWhat is this?\n/nope x\n/image {rocket}\nAnd this one?\n/clear\nAgain?\n/quit\nnever read\n"
    out, err = io.StringIO(), io.StringIO()
    with Client(models_dir=generated.models_dir) as client:
        results = chat(client, [photo], SETTINGS, io.StringIO(script), out, err)
    assert len(results) == 3  # the three messages, and nothing else, went to the model
    assert out.getvalue() == "".join(r.content + "\n" for r in results)  # what commands say is on err
    said = err.getvalue()
    assert said.count(help_text()) == 2  # /help, and the unknown command
    assert all(usage in said for usage in COMMANDS)
    assert "unknown command '/nope'; the commands are:" in said
    assert "attached rocket.jpg (image/jpeg, 640x427, " in said
    first, attached, cleared = (r.stats for r in results)
    assert (first.images_encoded, first.images_reused) == (1, 0)
    assert (attached.images_encoded, attached.images_reused) == (1, 1)  # the new image, with the next message
    assert (cleared.images_encoded, cleared.images_reused) == (0, 1)  # a new chat about the first image alone
    assert cleared.prompt_tokens <= first.prompt_tokens < attached.prompt_tokens  # the history is gone
    assert "New chat" in said


def test_a_bad_image_command_says_why_and_the_chat_goes_on(generated: Generated, photo: Path, tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not a picture")
    script = f"/image no/such/photo.jpg\n/image {notes}\n/image\nStill there?\n"
    out, err = io.StringIO(), io.StringIO()
    with Client(models_dir=generated.models_dir) as client:
        results = chat(client, [photo], SETTINGS, io.StringIO(script), out, err)
    assert len(results) == 1 and results[0].stats.images_encoded == 1  # the given image alone: nothing attached
    lines = err.getvalue().splitlines()
    assert lines[0].startswith("nothing attached: 'no/such/photo.jpg' is neither an existing file nor a URL")
    assert lines[1].startswith("nothing attached: the image 'notes.txt' is not an image vlmkit reads: found text")
    assert "Supported: JPEG, PNG" in lines[1]
    assert lines[2] == "nothing attached: name the image, /image PATH (a file path or a URL)"


def test_image_paths_may_be_quoted_as_terminals_paste_them(generated: Generated, photo: Path, tmp_path: Path) -> None:
    spaced = tmp_path / "my photo.jpg"
    spaced.write_bytes(photo.read_bytes())
    script = f"/image '{spaced}'\n/image {str(spaced).replace(' ', chr(92) + ' ')}\n/image {spaced}\n"
    err = io.StringIO()
    with Client(models_dir=generated.models_dir) as client:
        assert chat(client, [photo], SETTINGS, io.StringIO(script), io.StringIO(), err) == []
    assert err.getvalue().count("attached my photo.jpg (image/jpeg, 512x600, ") == 3


def test_a_message_that_starts_with_a_slash_is_typed_with_two(generated: Generated, photo: Path) -> None:
    script = "//etc/hosts: what is in it?\n"
    out, err = io.StringIO(), io.StringIO()
    with Client(models_dir=generated.models_dir) as client:
        results = chat(client, [photo], SETTINGS, io.StringIO(script), out, err)
    assert len(results) == 1 and err.getvalue() == ""


def test_chat_at_a_terminal_prompts_names_help_and_ends_on_ctrl_d(
    photo: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", Terminal("/help\nHello\n"))  # then end of input: Ctrl-D
    code = cli.main(["chat", "--image", str(photo), "--max-tokens", "4", "--threads", "1"])
    out, err = capsys.readouterr()
    assert code == 0
    assert err.startswith(f"Chatting with {KEY} about grace_hopper.jpg. /help lists the commands.\n> ")
    assert help_text() in err and err.endswith("> \n")  # three prompts; the shell's own starts a new line
    assert err.count("> ") == 3
    assert len(out.split()) == 4


def test_describe_without_a_model_says_how_to_get_one(
    photo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("VLMKIT_HOME", str(tmp_path))
    assert cli.main(["describe", str(photo)]) == 1
    assert "no model is loaded or downloaded" in capsys.readouterr().err
    assert cli.main(["describe", str(photo), "--model", "smolvlm-256m"]) == 1
    assert "vlmkit get smolvlm-256m" in capsys.readouterr().err
