"""``vlmkit serve`` as a subprocess, as users run it, reading a PDF uploaded to ``/v1/files`` and a
``video_url``, through the official ``openai`` client; and a PDF over ``limits:
max_images_per_request`` answered 400 in OpenAI's shape with ``param``."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
from pathlib import Path

import openai
import pytest

from tests.media import PageSpec, make_pdf, make_video
from tests.server.served import wait_healthy
from tests.server.test_cli import ROOT, _free_port


def test_vlmkit_serve_reads_an_uploaded_pdf_and_a_video_url_and_refuses_too_many_pages(
    tmp_path: Path, tiny_files: tuple[Path, Path, Path]
) -> None:
    model, mmproj, _ = tiny_files
    config = tmp_path / "vlmkit.yaml"
    config.write_text(
        f"models:\n  tiny: {{path: '{model}', mmproj: '{mmproj}'}}\nlimits:\n  max_images_per_request: 6\n"
    )
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "VLMKIT_HOME": str(tmp_path / "home")}
    env.pop("VLMKIT_API_KEY", None)
    cmd = [sys.executable, "-m", "vlmkit.cli", "serve", "--port", str(port), "--config", str(config)]
    proc = subprocess.Popen([*cmd, "--api-key", "sk-cli"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_healthy(proc, f"http://127.0.0.1:{port}")
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-cli", max_retries=0, timeout=120)
        pdf = client.files.create(
            file=("notes.pdf", make_pdf([PageSpec(text="One"), PageSpec(text="Two")]), "application/pdf"),
            purpose="user_data",
        )
        video = "data:video/mp4;base64," + base64.b64encode(make_video(seconds=1.0)).decode()
        answer = client.chat.completions.create(
            model="tiny",
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Read."},
                        {"type": "file", "file": {"file_id": pdf.id}},  # type: ignore[list-item]
                        {"type": "video_url", "video_url": {"url": video}},  # type: ignore[list-item]
                    ],
                }
            ],
            max_tokens=2,
        )
        stats = (answer.model_extra or {})["stats"]
        assert stats["images_encoded"] + stats["images_reused"] == 2 + 4  # 2 pages, and the 4 frames the limit leaves
        many = make_pdf([PageSpec(size=(60, 80), text=str(n)) for n in range(7)])
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(
                model="tiny",
                messages=[
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "file",
                                "file": {"file_data": "data:application/pdf;base64," + base64.b64encode(many).decode()},
                            }  # type: ignore[list-item]
                        ],
                    }
                ],
                max_tokens=2,
            )
        body = caught.value.body
        assert isinstance(body, dict) and body["param"] == "messages[0].content[0]"
        assert "this PDF gives 7 pages" in str(body["message"]) and "limit of 6 per request" in str(body["message"])
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
