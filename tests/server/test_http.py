"""The server at the HTTP level: what no client library would send (bad JSON, chunked oversize bodies,
unknown routes), the open health route, model management, and the YAML config."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server.conftest import API_KEY, Running, data_url, image_message
from tests.server.conftest import error_of as _error
from vlmkit.server import ConfigError, ServerSettings, load_config
from vlmkit.server.config import parse_config

AUTH = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture()
def http(server: Running) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


def test_health_is_open_and_the_rest_needs_a_key(http: httpx.Client) -> None:
    r = http.get("/health")
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "loaded_models": 0, "inflight": 0}
    r = http.get("/v1/models")
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    assert _error(r)["message"] == "no API key given: send 'Authorization: Bearer <key>' (or 'x-api-key: <key>')"
    r = http.get("/v1/models", headers={"Authorization": f"Basic {API_KEY}"})
    assert _error(r)["message"] == "the Authorization header must be 'Bearer <key>'"


def test_bad_json_is_400(http: httpx.Client) -> None:
    r = http.post("/v1/chat/completions", content=b'{"model": "tiny", "messages": [', headers=AUTH)
    assert r.status_code == 400
    error = _error(r)
    assert error["message"].startswith("the request body is not valid JSON: ")
    assert error["code"] == "invalid_json"
    r = http.post("/v1/chat/completions", content=b"[1, 2]", headers=AUTH)
    assert r.status_code == 400
    assert _error(r)["message"] == "the request body must be a JSON object, not an array"


def chat_with(part: dict[str, Any]) -> dict[str, Any]:
    return {"model": "tiny", "messages": image_message(part)}


UPLOAD = "upload the image with POST /v1/files and send the id it answers with, or check the id against GET /v1/files"


@pytest.mark.parametrize(
    ("body", "status", "param", "message"),
    [
        ({"messages": []}, 422, "model", "model is required: the name of a model from GET /v1/models"),
        ({"model": "tiny", "messages": []}, 422, "messages", "messages is empty: send at least one message"),
        ({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}, 422, "stream",
         "stream must be true or false, not a string"),
        ({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0}, 422, "max_tokens",
         "max_tokens must be at least 1, not 0"),
        ({"model": "tiny", "messages": [{"role": "robot", "content": "x"}]}, 400, "messages[0].role",
         "messages[0].role: role must be 'system', 'developer', 'user', 'assistant' or 'tool', not 'robot'"),
        ({"model": "tiny", "messages": [{"role": "user", "content": [{"type": "audio"}]}]}, 400,
         "messages[0].content[0]", "messages[0].content[0]: unknown content part type 'audio'; "
         "vlmkit reads 'text', 'image_url', 'video_url' and 'file' parts"),
        ({"model": "tiny", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, 400,
         "messages[0].content[0]", "messages[0].content[0]: an image_url part needs 'image_url': "
         "a URL string or {'url': ...}"),
        ({"model": "tiny", "messages": [{"role": "assistant", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]}, 400,
         "messages[0].content[0]", "messages[0].content[0]: images can only be sent in user and tool messages, "
         "not in an assistant message"),
        (chat_with({"type": "image_url", "image_url": {"url": "file-" + "0" * 24}}), 400, "messages[0].content[1]",
         f"messages[0].content[1]: no such file: no uploaded file has the id 'file-{'0' * 24}' (it was never "
         f"uploaded here, or was deleted); {UPLOAD}"),
        (chat_with({"type": "image_url", "image_url": {"url": "file-AbC123xyz"}}), 400, "messages[0].content[1]",
         "messages[0].content[1]: no such file: no uploaded file has the id 'file-AbC123xyz' (it was never uploaded "
         f"here, or was deleted; this server's ids are 'file-' and 24 hex digits); {UPLOAD}"),
        (chat_with({"type": "input_image", "file_id": "file_011CNha8iCJcU1wXNR6q4V8w"}), 400, "messages[0].content[1]",
         "messages[0].content[1]: no such file: no uploaded file has the id 'file_011CNha8iCJcU1wXNR6q4V8w'"
         f" (it was never uploaded here, or was deleted; this server's ids are 'file-' and 24 hex digits); {UPLOAD}"),
        (chat_with({"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo*AAA"}}), 400,
         "messages[0].content[1]", "messages[0].content[1]: the data URL's base64 is invalid: '*' at offset 11 of "
         "the data is not a base64 character; send the image's bytes in standard base64 (A-Z, a-z, 0-9, + and /), "
         "e.g. base64.b64encode(data)"),
    ],
)  # fmt: skip
def test_schema_and_message_errors(http: httpx.Client, body: Any, status: int, param: str, message: str) -> None:
    r = http.post("/v1/chat/completions", json=body, headers=AUTH)
    assert r.status_code == status
    error = _error(r)
    assert error["param"] == param
    assert error["message"] == message


def test_an_unknown_file_id_has_its_own_code(http: httpx.Client) -> None:
    # the SDK's remote backend re-uploads its images when the server answers this code (it restarted)
    body = {"model": "tiny", "messages": image_message("file-" + "0" * 24)}
    r = http.post("/v1/chat/completions", json=body, headers=AUTH)
    assert r.status_code == 400
    assert (_error(r)["code"], _error(r)["param"]) == ("file_not_found", "messages[0].content[1]")


def test_chunked_body_over_the_limit_is_413(http: httpx.Client) -> None:
    def body() -> Iterator[bytes]:
        for _ in range(8):
            yield b" " * (512 * 1024)

    r = http.post("/v1/chat/completions", content=body(), headers=AUTH)
    assert r.status_code == 413
    assert _error(r)["code"] == "request_too_large"


def test_unknown_route_and_method(http: httpx.Client) -> None:
    r = http.get("/v1/nothing", headers=AUTH)
    assert r.status_code == 404
    assert _error(r)["message"] == "no route GET /v1/nothing on this server"
    r = http.delete("/v1/chat/completions", headers=AUTH)
    assert r.status_code == 405
    assert _error(r)["message"] == "DELETE is not allowed on /v1/chat/completions"


def test_raw_upload_and_image_part_by_file_id_field(http: httpx.Client, hopper_jpeg: bytes) -> None:
    r = http.post("/v1/files?filename=h.jpg", content=hopper_jpeg, headers={**AUTH, "Content-Type": "image/jpeg"})
    assert r.status_code == 200
    f = r.json()
    assert (f["object"], f["filename"], f["width"], f["height"]) == ("file", "h.jpg", 512, 600)
    part = {"type": "image_url", "image_url": {"file_id": f["id"], "detail": "low"}}
    r = http.post(
        "/v1/chat/completions",
        json={"model": "tiny", "messages": image_message(part), "max_tokens": 2, "temperature": 0},
        headers=AUTH,
    )
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] == 2


def test_model_management(http: httpx.Client) -> None:
    r = http.get("/api/v1/models", headers=AUTH)
    listing = r.json()
    assert {m["key"]: m["vision"] for m in listing["downloaded"]} == {"tiny": True, "tiny-text": False}
    assert listing["loaded"] == []
    assert [d["model"] for d in listing["gateway"]["pair"]] == ["openai/up-model", "openai/up-model"]

    r = http.post("/api/v1/models/load", json={"model": "tiny", "ttl": 600}, headers=AUTH)
    assert r.status_code == 200, r.text
    info = r.json()["info"]
    assert info["vision"] is True and info["key"] == "tiny" and info["context_length"] > 0
    assert [m["key"] for m in http.get("/api/v1/models", headers=AUTH).json()["loaded"]] == ["tiny"]
    assert next(m for m in http.get("/v1/models", headers=AUTH).json()["data"] if m["id"] == "tiny")["loaded"]

    r = http.post("/api/v1/models/unload", json={"model": "tiny"}, headers=AUTH)
    assert r.json() == {"model": "tiny", "unloaded": True}
    assert http.get("/api/v1/models", headers=AUTH).json()["loaded"] == []

    r = http.post("/api/v1/models/load", json={"model": "gw"}, headers=AUTH)
    assert r.status_code == 400
    assert _error(r)["message"] == "'gw' is a gateway model: there is nothing to load"
    r = http.post("/api/v1/models/load", json={"model": "nope"}, headers=AUTH)
    assert r.status_code == 404


def test_download_job_reports_failure_offline_and_refuses_paths(
    http: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the discard port of loopback, where nothing listens (test servers take ephemeral ports), stands in
    # for an unreachable hub
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    r = http.post("/api/v1/models/download", json={"model": "/etc/passwd"}, headers=AUTH)
    assert r.status_code == 422
    r = http.post("/api/v1/models/download", json={"model": "smolvlm-256m"}, headers=AUTH)
    assert r.status_code == 202
    job = r.json()
    # an unreachable hub can fail the job before the 202 is written
    assert job["status"] in ("downloading", "failed") and job["model"] == "smolvlm-256m"
    deadline = time.monotonic() + 60
    while job["status"] == "downloading":
        assert time.monotonic() < deadline
        time.sleep(0.05)
        job = http.get(f"/api/v1/models/download/{job['job_id']}", headers=AUTH).json()
    assert job["status"] == "failed", job
    assert job["error"]["status"] == 503, job
    assert job["error"]["message"]
    assert http.get("/api/v1/models/download/dl-nope", headers=AUTH).status_code == 404


def test_image_fetched_from_an_allowed_host(server: Running, ups: Any, settings: ServerSettings) -> None:
    from tests.server.conftest import start_server
    from vlmkit.images.fetch import FetchOptions

    running = start_server(settings.with_overrides(fetch=FetchOptions(allow_hosts=frozenset({"127.0.0.1"}))))
    try:
        url = f"http://127.0.0.1:{ups['a'].port}/images/grace_hopper.jpg"
        r = httpx.post(
            running.base + "/chat/completions",
            json={"model": "tiny", "messages": image_message(url), "max_tokens": 2},
            headers=AUTH,
            timeout=60,
        )
        assert r.status_code == 200, r.text
        assert running.results[-1].stats.images_encoded == 1
    finally:
        running.stop()


def test_gateway_passes_images_and_data_url_text_through_exactly(
    http: httpx.Client, ups: Any, hopper_jpeg: bytes
) -> None:
    url = data_url(hopper_jpeg)  # long enough to be lifted out of the body before parsing
    messages = image_message(url, text=url)  # and a text that happens to be a data URL
    r = http.post("/v1/chat/completions", json={"model": "gw", "messages": messages}, headers=AUTH)
    assert r.status_code == 200, r.text
    sent = ups["a"].requests[-1]["messages"][0]["content"]
    assert sent[0] == {"type": "text", "text": url}
    assert sent[1]["image_url"]["url"] == url  # a JPEG OpenAI accepts is passed on untouched


def test_detail_token_cap_is_for_local_models(http: httpx.Client) -> None:
    messages = [{"role": "user", "content": "hi"}]
    r = http.post("/v1/chat/completions", json={"model": "gw", "messages": messages, "detail": 64}, headers=AUTH)
    assert r.status_code == 400 and _error(r)["param"] == "detail"
    assert "applies to local models" in _error(r)["message"]
    r = http.post("/v1/chat/completions", json={"model": "tiny", "messages": messages, "detail": "x"}, headers=AUTH)
    assert r.status_code == 422 and _error(r)["param"] == "detail"
    body = {"model": "tiny", "messages": messages, "detail": 64, "max_tokens": 2}
    assert http.post("/v1/chat/completions", json=body, headers=AUTH).status_code == 200


@pytest.mark.parametrize(
    ("extra", "status", "param", "message"),
    [
        ({"image_max_tokens": 0}, 422, "image_max_tokens", "image_max_tokens must be at least 1, not 0"),
        ({"image_min_tokens": -3}, 422, "image_min_tokens", "image_min_tokens must be at least 1, not -3"),
        ({"image_max_tokens": "many"}, 422, "image_max_tokens", "image_max_tokens must be an integer, not a string"),
        ({"image_min_tokens": 90, "image_max_tokens": 40}, 422, "image_min_tokens",
         "image_min_tokens=90 is more than the image token cap 40 (image_max_tokens); lower it or raise the cap"),
    ],
)  # fmt: skip
def test_image_token_bounds_are_checked_and_named(
    http: httpx.Client, extra: dict[str, Any], status: int, param: str, message: str
) -> None:
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, **extra}
    r = http.post("/v1/chat/completions", json=body, headers=AUTH)
    assert r.status_code == status
    assert (_error(r)["param"], _error(r)["message"]) == (param, message)


def test_image_token_bounds_are_for_local_models(http: httpx.Client) -> None:
    body = {"model": "gw", "messages": [{"role": "user", "content": "hi"}], "image_max_tokens": 64}
    r = http.post("/v1/chat/completions", json=body, headers=AUTH)
    assert r.status_code == 400 and _error(r)["param"] == "image_max_tokens"
    assert _error(r)["message"] == "'image_max_tokens' applies to local models; for a gateway model leave it out"
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "image_min_tokens": 4, "max_tokens": 2}
    r = http.post("/v1/chat/completions", json=body, headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.json()["stats"]["image_tokens"] == 0  # no image in this prompt


def test_a_config_naming_missing_model_files_names_the_entry(tmp_path: Path, tiny_files: Any) -> None:
    from vlmkit.server import create_app

    def refused(local: dict[str, Any]) -> str:
        with pytest.raises(ConfigError) as info:
            create_app(parse_config({"models": {"vision-local": local}, "models_dir": str(tmp_path)}))
        return str(info.value)

    assert refused({"path": "/nope/model.gguf"}) == (
        "the config entry models.vision-local.path: the model file /nope/model.gguf does not exist; fix the path, "
        "or name a downloaded model (`vlmkit ls`)"
    )
    assert refused({"path": str(tiny_files[0]), "mmproj": "/nope/mmproj.gguf"}) == (
        "the config entry models.vision-local.mmproj: the mmproj file /nope/mmproj.gguf does not exist; fix the path"
    )
    assert refused({"path": "smolvlm-256m"}) == (  # a catalog key: that one is fetched with vlmkit get
        "the config entry models.vision-local.path: model 'smolvlm-256m' is not downloaded or found as a file; "
        "run `vlmkit get smolvlm-256m` first"
    )


def test_config_fetch_section(tmp_path: Path) -> None:
    s = parse_config({"fetch": {"allow_hosts": ["printer.lan", "10.0.0.0/8"], "max_mb": 1, "max_redirects": 2}})
    assert (s.fetch.allow_hosts, s.fetch.max_bytes, s.fetch.max_redirects) == (
        frozenset({"printer.lan", "10.0.0.0/8"}),
        1024 * 1024,
        2,
    )
    for settings in (s, ServerSettings()):  # written in the config or not, refusals name the config's words
        assert settings.fetch.remedies.allow_hosts.startswith("list the host under `fetch: allow_hosts:` in the")
        assert settings.fetch.remedies.max_bytes == "raise `fetch: max_mb` in the server's YAML config"
    with pytest.raises(ConfigError) as text:
        parse_config({"fetch": {"allow_hosts": "127.0.0.1"}})
    assert str(text.value) == "config: fetch.allow_hosts must be a list, e.g. [127.0.0.1, printer.lan, 10.0.0.0/8]"
    with pytest.raises(ConfigError) as unknown:
        parse_config({"fetch": {"allow_host": ["127.0.0.1"]}})
    assert str(unknown.value) == (
        "config: unknown fetch setting(s) allow_host; known: allow_hosts, max_mb, timeout, max_redirects"
    )


def test_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_files: Any) -> None:
    monkeypatch.setenv("TEST_UP_KEY", "sk-from-env")
    path = tmp_path / "vlmkit.yaml"
    path.write_text(
        f"""
api_keys: [sk-one, os.environ/TEST_UP_KEY]
models:
  gpt-4o:
    - model: openai/gpt-4o
      api_key: os.environ/TEST_UP_KEY
    - model: openai/gpt-4o
      api_base: http://127.0.0.1:9/v1
      api_key: ${{TEST_UP_KEY}}
  local-tiny:
    path: {tiny_files[0]}
    mmproj: {tiny_files[1]}
limits:
  max_body_mb: 1.5
  max_queue: 4
fetch:
  allow_hosts: [127.0.0.1]
"""
    )
    s = load_config(path)
    assert s.api_keys == frozenset({"sk-one", "sk-from-env"})
    assert [d.api_key for d in s.gateway["gpt-4o"].deployments] == ["sk-from-env", "sk-from-env"]
    assert s.gateway["gpt-4o"].deployments[1].api_base == "http://127.0.0.1:9/v1"
    assert s.local["local-tiny"].mmproj == str(tiny_files[1])
    assert (s.max_body_bytes, s.max_queue) == (int(1.5 * 1024 * 1024), 4)
    assert s.fetch.allow_hosts == frozenset({"127.0.0.1"})
    assert s.host == "127.0.0.1"

    with pytest.raises(ConfigError) as missing:
        parse_config({"models": {"x": {"model": "openai/gpt-4o", "api_key": "os.environ/NOPE_NOT_SET"}}})
    assert (
        str(missing.value)
        == "config: models.x[0].api_key reads the environment variable NOPE_NOT_SET, which is not set"
    )
    with pytest.raises(ConfigError) as bad:
        parse_config({"models": {"x": {"model": "gpt-4o"}}})
    assert str(bad.value) == "config: models.x[0]: a deployment needs 'model: provider/name'"
    with pytest.raises(ConfigError) as section:
        parse_config({"modles": {}})
    assert str(section.value) == "config: unknown section(s) modles"


def test_an_image_for_a_text_only_model_is_a_400_naming_the_image(http: httpx.Client, hopper_jpeg: bytes) -> None:
    part = {"type": "image_url", "image_url": {"url": data_url(hopper_jpeg)}}
    r = http.post(
        "/v1/chat/completions",
        json={"model": "tiny-text", "messages": image_message(part), "max_tokens": 2},
        headers=AUTH,
    )
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == "messages[0].content[1]"
    assert "model 'tiny-text' does not support images" in error["message"]
