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


def test_the_main_job_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first command's vlmkit steps, run in-process (the install step is what CI itself does)."""
    from vlmkit.cli import main

    monkeypatch.setenv("VLMKIT_HOME", str(tmp_path))
    monkeypatch.chdir(ROOT)
    steps = setup_commands()[0].split(" && ")[1:]
    for step in steps:
        argv = shlex.split(step)
        assert argv[0] == "vlmkit"
        assert main(argv[1:]) == 0, step


def test_ci_runs_the_readme_test_command_word_for_word() -> None:
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert setup_commands()[1] in ci
