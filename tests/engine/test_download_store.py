"""``vlmkit get | ls | rm`` against a stand-in of the Hugging Face hub on 127.0.0.1 (no internet)."""

from __future__ import annotations

import hashlib
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from vlmkit.chat import Chat
from vlmkit.engine import Engine, LoadOptions, get, list_downloaded, remove
from vlmkit.engine.catalog import catalog, lookup
from vlmkit.engine.synthetic_families import FAMILIES, write_family
from vlmkit.errors import HubUnreachableError, ModelNotFoundError
from vlmkit.images import ImageHandle
from vlmkit.prediction import PredictionConfig

COMMIT = "0123456789abcdef0123456789abcdef01234567"

ONE_THREAD = LoadOptions(cpu_threads=1)


class Hub:
    """Serves ``/{repo}/resolve/{revision}/{file}`` like the hub (HEAD and ranged GET)."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.requests: list[tuple[str, str, str | None]] = []
        self.cut_after: int | None = None  # drop the connection after this many body bytes...
        self.cuts_left = 0  # ...this many times
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _lookup(self) -> bytes | None:
                parts = self.path.split("?")[0].split("/resolve/", 1)
                if len(parts) != 2:
                    return None
                name = parts[1].split("/", 1)[1]
                return hub.files.get(parts[0].strip("/") + "/" + name)

            def _headers(self, data: bytes, status: int = 200, length: int | None = None) -> None:
                self.send_response(status)
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("ETag", '"' + hashlib.sha256(data).hexdigest() + '"')
                self.send_header("Content-Length", str(len(data) if length is None else length))
                self.send_header("Accept-Ranges", "bytes")

            def do_HEAD(self) -> None:
                hub.requests.append(("HEAD", self.path, None))
                data = self._lookup()
                if data is None:
                    self.send_response(404)
                    self.send_header("X-Error-Code", "EntryNotFound")
                    self.end_headers()
                    return
                self._headers(data)
                self.end_headers()

            def do_GET(self) -> None:
                rng = self.headers.get("Range")
                hub.requests.append(("GET", self.path, rng))
                data = self._lookup()
                if data is None:
                    self.send_response(404)
                    self.end_headers()
                    return
                start = int(rng.split("=")[1].split("-")[0]) if rng else 0
                body = data[start:]
                if rng:
                    self._headers(data, 206, len(body))
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self._headers(data)
                self.end_headers()
                if hub.cut_after is not None and hub.cuts_left > 0 and len(body) > hub.cut_after:
                    hub.cuts_left -= 1
                    self.wfile.write(body[: hub.cut_after])
                    self.wfile.flush()
                    self.connection.shutdown(2)
                    return
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Hub:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def hub(tiny_model: tuple[Path, Path]) -> Iterator[Hub]:
    entry = catalog()["smolvlm-256m"]
    files = {
        f"{entry.repo}/{entry.model}": tiny_model[0].read_bytes(),
        f"{entry.repo}/{entry.mmproj}": tiny_model[1].read_bytes(),
    }
    with Hub(files) as h:
        yield h


def test_catalog_has_the_issue_models() -> None:
    for key in (
        "smolvlm-256m",
        "smolvlm-500m",
        "smolvlm2-2.2b-instruct",
        "qwen2-vl-2b-instruct",
        "qwen2.5-vl-3b-instruct",
        "gemma-3-4b-it",
        "moondream2",
        "llava-1.5-7b",
        "qwen3-vl-2b-instruct",
        "internvl3-1b-instruct",
    ):
        entry = lookup(key)
        assert entry is not None and entry.repo.count("/") == 1 and entry.model.endswith(".gguf")
        assert entry.mmproj and entry.mmproj.endswith(".gguf") and entry.context_length >= 2048
    assert lookup("QWEN2-VL-2B-INSTRUCT") is lookup("qwen2-vl-2b")


def test_get_downloads_lists_loads_and_removes(hub: Hub, tmp_path: Path) -> None:
    stored = get("smolvlm-256m", models_dir=tmp_path, endpoint=hub.url, progress=False)
    assert stored.model.read_bytes() == hub.files[f"{stored.repo}/{stored.model.name}"]
    assert stored.mmproj is not None and stored.mmproj.exists()

    [listing] = list_downloaded(tmp_path)
    assert listing.key == "smolvlm-256m" and listing.vision and listing.architecture == "llama"
    assert listing.size_bytes == stored.model.stat().st_size + stored.mmproj.stat().st_size

    with Engine(models_dir=tmp_path, default_ttl=None, load_options=ONE_THREAD) as engine:
        info = engine.load("smolvlm-256m")
        assert info.vision and info.key == "smolvlm-256m"

    assert get("smolvlm-256m", models_dir=tmp_path, endpoint=hub.url) == stored  # already there
    remove("smolvlm-256m", tmp_path)
    assert list_downloaded(tmp_path) == []
    with pytest.raises(ModelNotFoundError, match="vlmkit ls"):
        remove("smolvlm-256m", tmp_path)


def test_interrupted_download_leaves_no_final_file_and_resumes(hub: Hub, tmp_path: Path) -> None:
    hub.cut_after, hub.cuts_left = 50_000, 1
    with pytest.raises(Exception):  # noqa: B017 - whichever error the cut connection gives
        get("smolvlm-256m", models_dir=tmp_path, endpoint=hub.url, progress=False)
    directory = tmp_path / "smolvlm-256m"
    entry = catalog()["smolvlm-256m"]
    assert not (directory / entry.model).exists()
    [partial] = directory.rglob("*.incomplete")  # the bytes so far are kept aside
    assert partial.stat().st_size == 50_000
    assert list_downloaded(tmp_path) == []

    hub.cuts_left = 0
    hub.requests.clear()
    stored = get("smolvlm-256m", models_dir=tmp_path, endpoint=hub.url, progress=False)
    assert stored.model.read_bytes() == hub.files[f"{entry.repo}/{entry.model}"]
    resumed = [rng for method, _, rng in hub.requests if method == "GET" and rng]
    assert resumed and int(resumed[0].split("=")[1].split("-")[0]) >= 50_000


def test_offline_is_a_clear_error_and_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(HubUnreachableError) as err:
        get("qwen2-vl-2b-instruct", models_dir=tmp_path, endpoint="http://127.0.0.1:9", progress=False)
    message = str(err.value)
    assert "cannot reach the Hugging Face hub" in message and "--mmproj" in message
    assert err.value.status_code == 503
    assert not any(p.suffix == ".gguf" for p in tmp_path.rglob("*"))


def test_local_files_are_adopted_into_the_store(tiny_model: tuple[Path, Path], tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    model = Path(shutil.copy(tiny_model[0], src / "my-model.gguf"))
    mmproj = Path(shutil.copy(tiny_model[1], src / "my-mmproj.gguf"))
    stored = get(str(model), mmproj=mmproj, models_dir=tmp_path / "store")
    assert stored.key == "my-model" and stored.mmproj is not None
    [listing] = list_downloaded(tmp_path / "store")
    assert listing.vision


def test_text_only_model_lists_without_vision(tiny_text_model: Path, tmp_path: Path) -> None:
    get(str(tiny_text_model), models_dir=tmp_path)
    [listing] = list_downloaded(tmp_path)
    assert not listing.vision


def test_unknown_key_names_the_catalog(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="qwen2-vl-2b-instruct"):
        get("no-such-model", models_dir=tmp_path)


NEW_FAMILIES = [e.key for e in catalog().values() if e.family in ("qwen3-vl", "internvl")]


def test_every_family_named_by_the_catalog_has_a_stand_in() -> None:
    named = {e.family for e in catalog().values() if e.family}
    assert named <= set(FAMILIES)
    assert {"qwen3-vl", "internvl"} <= named


@pytest.mark.parametrize("key", NEW_FAMILIES)
def test_a_catalog_model_downloads_loads_and_sees_as_its_family_does(
    key: str, tmp_path: Path, hopper: ImageHandle
) -> None:
    """The catalog's files, served by a stand-in hub with the generated model of the entry's shape,
    go through ``get`` and load as that family; the answer depends on the picture."""
    entry = catalog()[key]
    assert entry.family is not None and entry.mmproj is not None
    model, mmproj = write_family(entry.family, tmp_path / "made")
    files = {f"{entry.repo}/{entry.model}": model.read_bytes(), f"{entry.repo}/{entry.mmproj}": mmproj.read_bytes()}
    with Hub(files) as hub:
        stored = get(key, models_dir=tmp_path / "models", endpoint=hub.url, progress=False)
    assert stored.model.name == entry.model and stored.mmproj is not None and stored.mmproj.name == entry.mmproj
    [listing] = list_downloaded(tmp_path / "models")
    assert listing.key == key and listing.vision
    chat = Chat()
    chat.add_user_message("What is in this picture?", images=[hopper])
    with Engine(models_dir=tmp_path / "models", default_ttl=None, load_options=ONE_THREAD) as engine:
        info = engine.load(key)
        assert info.vision
        result = engine.respond(key, chat, PredictionConfig(temperature=0, max_tokens=4))
    assert result.stats.predicted_tokens == 4 and result.stats.prompt_tokens > 16
