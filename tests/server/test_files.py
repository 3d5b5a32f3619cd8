"""Uploads kept in ``files_dir`` outlive the server: the same ids work after a restart."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import openai
import pytest

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
