"""The README's set-up commands and CI must not drift apart."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def setup_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Set-up", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", section)[:2]


def test_readme_starts_with_two_setup_commands() -> None:
    commands = setup_commands()
    assert len(commands) == 2, commands
    assert commands[0].startswith("pip install . && vlmkit ")
    assert commands[1].startswith("pip install -e")


def test_the_main_job_runs_as_written_and_prints_words(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The first command's vlmkit steps, run in-process (the install step is what CI itself does).

    The demo model's answer is noise, but noise in words: printable text, words from its vocabulary.
    """
    from vlmkit.cli import main
    from vlmkit.engine.synthetic import COMMON_WORDS

    monkeypatch.setenv("VLMKIT_HOME", str(tmp_path))
    monkeypatch.chdir(ROOT)
    steps = setup_commands()[0].split(" && ")[1:]
    for step in steps:
        argv = shlex.split(step)
        assert argv[0] == "vlmkit"
        capsys.readouterr()
        assert main(argv[1:]) == 0, step
    out, err = capsys.readouterr()  # the last step's: the description
    assert out.endswith("\n") and out[:-1].isprintable(), out
    words = out.split()
    assert words and set(words) <= set(COMMON_WORDS), out
    said = re.search(r"\[(\d+) tokens, .*images 1 encoded", err)
    assert said is not None and int(said.group(1)) == len(words), err  # one word a token


def test_ci_runs_the_readme_test_command_word_for_word() -> None:
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert setup_commands()[1] in ci
