"""The command line, run in-process through ``vlmkit.cli.main`` on real photos and a local model store."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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
    assert "anthropic    re-encoded: image/jpeg 1108x1108, 110,782 bytes, 1637 tokens ($0.0049 at" in out
    assert "(1411x1411 is over anthropic's size limits)" in out
    assert main(["image", "inspect", HOPPER, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    openai = report["targets"][0]
    assert openai["target"] == "openai" and openai["untouched"] and openai["changes"] == []
    assert openai["tokens"] == 425 and openai["price_model"] == "openai/gpt-4o"


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


@pytest.fixture
def photo_url() -> Iterator[str]:
    """The photo served on 127.0.0.1: a loopback address, which vlmkit fetches only when allowed."""
    data = photo_path("grace_hopper.jpg").read_bytes()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/grace_hopper.jpg"
    server.shutdown()
    server.server_close()


def test_a_refused_url_names_allow_host_and_allow_host_fetches_it(
    home: Path, photo_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["get", "tiny-random-vlm"]) == 0
    model = ["--model", "tiny-random-vlm", "--max-tokens", "4", "--threads", "1"]
    capsys.readouterr()
    for command in (
        ["describe", photo_url, *model],
        ["chat", "--image", photo_url, *model],
        ["image", "inspect", photo_url],
    ):
        assert main(command) == 1
        assert capsys.readouterr().err == (
            f"vlmkit: error: refused {photo_url}: 127.0.0.1 is a loopback address; vlmkit does not fetch loopback, "
            "private, link-local or metadata addresses unless the host is allowed: pass --allow-host HOST "
            "(repeatable; host names, addresses and CIDR networks)\n"
        )
    allowed = ["--allow-host", "10.0.0.0/8", "--allow-host", "127.0.0.1"]
    assert main(["describe", photo_url, *model, *allowed, "--stats"]) == 0
    assert "images 1 encoded" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.StringIO(f"/image {photo_url}\nWhat is this?\n"))
    assert main(["chat", "--image", photo_url, *model, *allowed, "--stats"]) == 0
    err = capsys.readouterr().err
    assert "attached grace_hopper.jpg (image/jpeg, 512x600" in err  # the URL named by /image was fetched too
    # the picture twice, each read from the encoder cache on disk, where `describe` above left it
    assert "images 0 encoded, 2 reused" in err


def test_version_and_ls_say_where_models_run(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from vlmkit import __version__
    from vlmkit.engine.gpu import choose

    where = choose("auto").reason  # on a CPU-only build: "CPU (this llama.cpp build has no GPU backend)"
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out == f"vlmkit {__version__} (llama-cpp-python 0.3.36); models run on: {where}\n"
    assert main(["ls"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"models run on: {where}"


def test_gpu_flag_is_validated_and_reaches_the_engine(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from vlmkit.engine import native

    for command in (["describe", HOPPER], ["chat", "--image", HOPPER], ["serve"]):
        with pytest.raises(SystemExit) as done:
            main([*command, "--gpu", "fast"])
        assert done.value.code == 2
        assert (
            "argument --gpu: --gpu='fast' is not a GPU setting; use 'auto' (the GPU when llama.cpp has one, "
            "else the CPU), 'off' (the CPU only) or a number of layers to offload (0 or more)"
        ) in capsys.readouterr().err
    assert main(["get", "tiny-random-vlm"]) == 0
    model = ["--model", "tiny-random-vlm", "--max-tokens", "2", "--threads", "1"]
    assert main(["describe", HOPPER, *model, "--gpu", "off"]) == 0
    capsys.readouterr()
    if not native.llama().llama_supports_gpu_offload():
        assert main(["describe", HOPPER, *model, "--gpu", "3"]) == 1
        err = capsys.readouterr().err
        assert err.startswith(
            "vlmkit: error: gpu=3 offloads 3 layers to a GPU, but this llama.cpp build runs on the CPU"
        )


def test_cache_ls_and_clear(
    encoder_cache_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import numpy as np

    from vlmkit.engine.encoder_cache import EncoderCache

    directory = encoder_cache_dir / "embeddings"
    assert main(["cache", "ls"]) == 0
    assert capsys.readouterr().out == f"{directory}: 0 image embeddings, 0.0 MB of 1,024 MB\n"
    cache = EncoderCache(directory, 1 << 30)
    cache.write("a", np.zeros(250_000, dtype=np.float32))
    cache.write("b", np.zeros(250_000, dtype=np.float32))
    assert main(["cache", "ls"]) == 0
    assert capsys.readouterr().out == f"{directory}: 2 image embeddings, 1.9 MB of 1,024 MB\n"
    assert main(["cache", "clear"]) == 0
    assert capsys.readouterr().out == f"removed 2 image embeddings (1.9 MB) from {directory}\n"
    assert list(directory.iterdir()) == []
    monkeypatch.setenv("VLMKIT_ENCODER_CACHE_MB", "0")
    assert main(["cache", "ls"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "the cache is off (VLMKIT_ENCODER_CACHE_MB=0)"
