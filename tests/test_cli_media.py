"""``vlmkit describe --boxes``: the answer's boxes drawn back on the original image, in-process."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import photo_path
from vlmkit.cli import main

HOPPER = str(photo_path("grace_hopper.jpg"))


def test_describe_boxes_draws_on_the_original(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("VLMKIT_HOME", str(tmp_path))
    assert main(["get", "tiny-random-vlm"]) == 0
    model = ["--model", "tiny-random-vlm", "--max-tokens", "4", "--threads", "1"]
    out = tmp_path / "boxes.png"
    assert main(["describe", HOPPER, *model, "--boxes", str(out), "--coords", "pixels"]) == 0
    err = capsys.readouterr().err
    assert f"boxes and points (pixels coordinates) drawn on {out}" in err
    with Image.open(out) as drawn:
        assert drawn.size == (512, 600)  # the original's size, whatever size the model was sent
    # the demo model's family writes no known coordinates: the error says how to name them
    assert main(["describe", HOPPER, *model, "--boxes", str(out)]) == 1
    err = capsys.readouterr().err
    assert "does not know how" in err and "--coords NAME" in err and "'qwen2.5-vl'" in err
