"""The command line, run in-process through ``vlmkit.cli.main`` on real photos and a local model store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import photo_path
from vlmkit.cli import main

HOPPER = str(photo_path("grace_hopper.jpg"))


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("VLMKIT_HOME", str(tmp_path))
    return tmp_path


def test_image_inspect_text_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["image", "inspect", str(photo_path("retina.jpg")), "--target", "anthropic"]) == 0
    out = capsys.readouterr().out
    assert "retina.jpg: image/jpeg, 1411x1411" in out
    assert "anthropic    re-encoded: image/jpeg 1108x1108" in out
    assert main(["image", "inspect", HOPPER, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["targets"]["openai"]["sent_as"] == "original bytes"
    assert report["tokens"]["openai"] == 425


def test_bad_input_is_one_line_on_stderr_and_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["image", "inspect", "no/such/photo.jpg"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("vlmkit: error: 'no/such/photo.jpg' is neither an existing file nor a URL")
    assert main(["image", "inspect", HOPPER, "--target", "nope"]) == 1
    assert "unknown target 'nope'" in capsys.readouterr().err


def test_get_ls_describe_rm_with_the_local_demo_model(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ls"]) == 0
    assert "no models downloaded" in capsys.readouterr().out
    assert main(["get", "tiny-random-vlm"]) == 0
    assert f"tiny-random-vlm: {home / 'models' / 'tiny-random-vlm'}" in capsys.readouterr().out
    assert main(["ls"]) == 0
    row = capsys.readouterr().out.splitlines()[1].split()
    assert row[0] == "tiny-random-vlm" and row[2] == "yes" and row[3] == "llama"
    assert (
        main(["describe", HOPPER, "--model", "tiny-random-vlm", "--max-tokens", "8", "--stats", "--threads", "1"]) == 0
    )
    captured = capsys.readouterr()
    assert "[8 tokens" in captured.err and "images 1 encoded" in captured.err
    assert "stop: maxPredictedTokensReached" in captured.err
    assert main(["rm", "tiny-random-vlm"]) == 0
    assert main(["rm", "tiny-random-vlm"]) == 1
    assert "no downloaded model 'tiny-random-vlm'" in capsys.readouterr().err


def test_get_unknown_key_names_the_catalog(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["get", "no-such-model"]) == 1
    err = capsys.readouterr().err
    assert "'no-such-model' is not a catalog key" in err and "qwen2-vl-2b-instruct" in err
    assert main(["ls", "--catalog"]) == 0
    assert "qwen2-vl-2b-instruct" in capsys.readouterr().out


def test_python_dash_m_vlmkit_is_the_command_line() -> None:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "vlmkit", "--help"], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: vlmkit ")
