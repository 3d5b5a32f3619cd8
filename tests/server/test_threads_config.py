"""CPU threads per local model: `threads:` in the server's config, and a default that counts the cores
this process may run on (its CPU affinity), not the machine's."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from vlmkit.errors import ConfigError
from vlmkit.server import load_config


def config_with(tmp_path: Path, threads: str) -> Path:
    config = tmp_path / "vlmkit.yaml"
    config.write_text(f"models:\n  m:\n    path: {tmp_path / 'm.gguf'}\n    threads: {threads}\n")
    return config


def test_threads_on_a_local_model_are_read(tmp_path: Path) -> None:
    assert load_config(config_with(tmp_path, "3")).local["m"].threads == 3
    plain = tmp_path / "plain.yaml"
    plain.write_text(f"models:\n  m:\n    path: {tmp_path / 'm.gguf'}\n")
    assert load_config(plain).local["m"].threads is None


@pytest.mark.parametrize("value", ["0", "-2", "1.5", "many", "true"])
def test_threads_that_are_not_a_positive_whole_number_are_refused(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError, match=r"models\.m\.threads must be a whole number of CPU threads, at least 1"):
        load_config(config_with(tmp_path, value))


def test_a_served_model_loads_with_its_threads(tmp_path: Path) -> None:
    from vlmkit.engine.synthetic import write_test_model
    from vlmkit.server.local import LocalModels

    model, mmproj = write_test_model(tmp_path)
    config = tmp_path / "serve.yaml"
    config.write_text(f"models:\n  m:\n    path: {model}\n    mmproj: {mmproj}\n    threads: 1\n")
    models = LocalModels(load_config(config))
    models.lease.load("m")
    try:
        assert models.lease.engine._loaded["m"].native.threads == 1
    finally:
        models.lease.unload("m")


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity on this platform")
def test_the_default_counts_the_cores_this_process_may_use() -> None:
    code = (
        "import os; os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]}); "
        "from vlmkit.engine.model import default_threads; print(default_threads())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "1"
