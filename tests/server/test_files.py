"""Uploads kept in ``files_dir`` outlive the server: the same ids work after a restart."""

from __future__ import annotations

import io
import json
import logging
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
from PIL import Image

from tests.server.conftest import API_KEY, data_url, start_server
from vlmkit.images import prepare_image
from vlmkit.server import ServerSettings
from vlmkit.server.config import parse_config
from vlmkit.server.errors import APIError
from vlmkit.server.files import FileStore


def client(base: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base, api_key=API_KEY, max_retries=0, timeout=60)


def test_uploads_survive_a_restart_and_deletes_are_final(
    gateway_settings: tuple[ServerSettings, Any], hopper_jpeg: bytes, tmp_path: Path
) -> None:
    settings, ups = gateway_settings
    settings = settings.with_overrides(files_dir=str(tmp_path / "files"))
    first = start_server(settings)
    try:
        uploaded = client(first.base).files.create(file=("hopper.jpg", hopper_jpeg, "image/jpeg"), purpose="vision")
    finally:
        first.stop()
    assert sorted(p.name for p in (tmp_path / "files").iterdir()) == [uploaded.id, f"{uploaded.id}.json"]

    second = start_server(settings)
    try:
        c = client(second.base)
        again = c.files.retrieve(uploaded.id)
        assert (again.filename, again.bytes, again.created_at) == ("hopper.jpg", len(hopper_jpeg), uploaded.created_at)
        assert c.files.content(uploaded.id).content == hopper_jpeg
        part = {"type": "image_url", "image_url": {"url": uploaded.id}}
        c.chat.completions.create(model="gw", messages=[{"role": "user", "content": [part]}])  # type: ignore[list-item]
        assert ups["a"].requests[-1]["messages"][0]["content"][0]["image_url"]["url"] == data_url(hopper_jpeg)
        assert c.files.delete(uploaded.id).deleted
    finally:
        second.stop()
    assert list((tmp_path / "files").iterdir()) == []

    third = start_server(settings)
    try:
        with pytest.raises(openai.NotFoundError):
            client(third.base).files.retrieve(uploaded.id)
    finally:
        third.stop()


def test_damaged_uploads_are_skipped_and_left_alone(
    settings: ServerSettings, hopper_jpeg: bytes, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    files = tmp_path / "files"
    files.mkdir()
    good, not_image, no_record = "file-" + "a" * 24, "file-" + "b" * 24, "file-" + "c" * 24

    def record(file_id: str, filename: str) -> str:
        return json.dumps({"id": file_id, "filename": filename, "purpose": "vision", "created_at": 1})

    (files / good).write_bytes(hopper_jpeg)
    (files / f"{good}.json").write_text(record(good, "h.jpg"))
    (files / not_image).write_bytes(b"%PDF-1.7 not an image")
    (files / f"{not_image}.json").write_text(record(not_image, "x.pdf"))
    (files / no_record).write_bytes(hopper_jpeg)  # bytes whose record was never written: not an upload
    (files / ("file-" + "d" * 24 + ".json")).write_text("{not json")
    with caplog.at_level(logging.WARNING, logger="vlmkit.server"):
        running = start_server(settings.with_overrides(files_dir=str(files)))
    try:
        assert [f.id for f in client(running.base).files.list()] == [good]
    finally:
        running.stop()
    skipped = [r.getMessage() for r in caplog.records if "skipping the stored upload" in r.getMessage()]
    assert len(skipped) == 2 and any("PDF" in m for m in skipped), skipped
    assert (files / not_image).exists() and (files / no_record).exists()  # nothing is deleted behind the admin's back


def test_files_dir_in_the_config() -> None:
    assert parse_config({"files_dir": "/srv/vlmkit/files"}).files_dir == "/srv/vlmkit/files"
    assert parse_config({}).files_dir is None


def test_an_upload_that_cannot_be_saved_is_507_and_not_kept(hopper_jpeg: bytes, tmp_path: Path) -> None:
    store = FileStore(1 << 30, tmp_path / "files")
    (tmp_path / "files").rmdir()  # the disk went away under the server
    with pytest.raises(APIError, match="the upload could not be saved on the server: ") as caught:
        store.add(prepare_image(hopper_jpeg), "h.jpg", "vision")
    assert (caught.value.status_code, caught.value.code) == (507, "storage_error")
    assert store.list() == [] and store.used_bytes == 0


def _noise_png(seed: int) -> bytes:
    """A picture no other test uses, so that no cache holds its embeddings before this test."""
    pixels = np.random.default_rng(seed).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG")
    return out.getvalue()


def test_an_upload_for_a_local_model_is_encoded_before_the_first_chat(server: Any) -> None:
    auth = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.Client(base_url=server.url, timeout=60, headers=auth) as http:
        r = http.post("/v1/files", files={"file": ("noise.png", _noise_png(3), "image/png")}, data={"model": "tiny"})
        assert r.status_code == 200, r.text
        file_id = r.json()["id"]
        assert r.json()["prepared_for"]["tiny"] in ("queued", "done")
        deadline = time.monotonic() + 60  # only so that a broken preparer fails instead of hanging
        while (status := http.get(f"/v1/files/{file_id}").json()["prepared_for"]["tiny"]) == "queued":
            assert time.monotonic() < deadline, "the upload was never prepared"
            time.sleep(0.05)
        assert status == "done"

        part = {"type": "image_url", "image_url": {"url": file_id}}
        body = {"model": "tiny", "messages": [{"role": "user", "content": [part]}], "max_tokens": 2}
        r = http.post("/v1/chat/completions", json=body)
        assert r.status_code == 200, r.text
        stats = r.json()["stats"]
        assert (stats["images_encoded"], stats["images_reused"], stats["images_preprocessed"]) == (0, 1, 0)

        # without a model named, nothing is prepared: the first chat encodes it
        r = http.post("/v1/files?filename=other.png", content=_noise_png(4))
        assert "prepared_for" not in r.json()
        part = {"type": "image_url", "image_url": {"url": r.json()["id"]}}
        body = {"model": "tiny", "messages": [{"role": "user", "content": [part]}], "max_tokens": 2}
        assert http.post("/v1/chat/completions", json=body).json()["stats"]["images_encoded"] == 1


@pytest.mark.parametrize(
    ("model", "status", "message"),
    [
        ("gw", 400, "'gw' is a gateway model, which encodes images on its provider's side; name a local model "
         "in 'model' to have the upload prepared for it, or leave 'model' out"),
        ("tiny-text", 400, "the local model 'tiny-text' does not take images (no vision projector); name a vision "
         "model in 'model', or leave 'model' out"),
        ("nope", 404, "the model 'nope' does not exist on this server; served:"),
    ],
)  # fmt: skip
def test_an_upload_names_a_local_vision_model_to_prepare_for(
    server: Any, model: str, status: int, message: str
) -> None:
    import httpx

    r = httpx.post(
        f"{server.base}/files?model={model}",
        content=_noise_png(5),
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=60,
    )
    assert r.status_code == status
    error = r.json()["error"]
    assert error["param"] == "model" and error["message"].startswith(message)
    assert server.state.files.list() == []  # refused before anything was stored
