"""``POST /v1/images/inspect`` and ``GET /v1/images/preview`` on a real server: every shipped target,
the chosen model (local, measured by its projector; gateway, priced by its provider), every way of
naming the image, and bad images answered with a 400 that names the problem."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.conftest import ImageServer, encode, photo_path
from tests.media import PageSpec, make_pdf
from tests.server.conftest import API_KEY, Running, data_url, error_of, start_server
from vlmkit.images import POLICIES, FetchOptions, prepare_image
from vlmkit.providers.inspect import price_of
from vlmkit.server import ServerSettings

AUTH = {"Authorization": f"Bearer {API_KEY}"}
RETINA = photo_path("retina.jpg")


@pytest.fixture()
def client(server: Running) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=60) as c:
        yield c


def inspect_upload(client: httpx.Client, data: bytes, name: str = "photo", **fields: str) -> httpx.Response:
    return client.post("/v1/images/inspect", files={"file": (name, data)}, data=fields)


def rows(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["target"]: row for row in body["targets"]}


def decoded(url: str) -> bytes:
    header, _, payload = url.partition(",")
    assert header.startswith("data:image/") and header.endswith(";base64")
    return base64.b64decode(payload)


def test_every_target_gets_what_the_image_layer_renders_for_it(client: httpx.Client) -> None:
    r = inspect_upload(client, RETINA.read_bytes(), "retina.jpg")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "image.inspection" and body["file_id"] is None
    assert (body["mime_type"], body["width"], body["height"], body["bytes"]) == ("image/jpeg", 1411, 1411, 269564)
    by_target = rows(body)
    assert list(by_target) == list(POLICIES)
    handle = prepare_image(RETINA)
    for name, policy in POLICIES.items():
        row, out = by_target[name], handle.render(policy)
        assert (row["mime_type"], row["width"], row["height"], row["bytes"]) == (
            out.mime_type,
            out.width,
            out.height,
            len(out.data),
        ), name
        assert row["untouched"] is (not out.changed)
        assert decoded(row["preview"]) == out.data  # the preview is the bytes that would be sent
    anthropic = by_target["anthropic"]
    assert anthropic["changes"] == ["downscaled"] and (anthropic["width"], anthropic["height"]) == (1108, 1108)
    assert anthropic["why"] == ["1411x1411 is over anthropic's size limits"]
    assert by_target["openai"]["changes"] == [] and by_target["openai"]["why"] == []
    # tokens by each provider's documented rule, on the size sent; costs from the price table
    assert (by_target["openai"]["tokens"], by_target["anthropic"]["tokens"], by_target["gemini"]["tokens"]) == (
        765,
        1637,
        1032,
    )
    assert by_target["bedrock"]["token_rule"] == "anthropic" and by_target["bedrock"]["tokens"] == 1637
    assert by_target["openai"]["cost_usd"] == pytest.approx(765 * 2.50 / 1e6)
    assert by_target["openai"]["price_model"] == "openai/gpt-4o"
    for local in ("ollama", "llama.cpp"):
        assert by_target[local]["tokens"] is None and by_target[local]["cost_usd"] is None
    assert "price list" in body["prices"]["about"] and body["prices"]["as_of"]


def test_a_json_body_names_the_image_by_data_url_file_id_or_http_url(
    settings: ServerSettings, image_server: ImageServer
) -> None:
    hopper = photo_path("grace_hopper.jpg").read_bytes()
    running = start_server(settings.with_overrides(fetch=FetchOptions(allow_hosts=frozenset({"127.0.0.1"}))))
    try:
        with httpx.Client(base_url=running.url, headers=AUTH, timeout=60) as c:
            by_data = c.post("/v1/images/inspect", json={"image": data_url(hopper), "targets": ["openai"]}).json()
            assert by_data["width"] == 512 and rows(by_data)["openai"]["preview"].startswith("data:image/jpeg;base64,")
            by_url = c.post(
                "/v1/images/inspect", json={"image": image_server.url(), "targets": ["openai"], "preview": "none"}
            ).json()
            assert image_server.served == ["/grace_hopper.jpg"]
            assert by_url["identifier"] == by_data["identifier"] and rows(by_url)["openai"]["preview"] is None
            file_id = c.post("/v1/files", files={"file": ("retina.jpg", RETINA.read_bytes())}).json()["id"]
            by_id = c.post("/v1/images/inspect", json={"image": file_id, "detail": "low"}).json()
            assert by_id["file_id"] == file_id and by_id["width"] == 1411
            anthropic = rows(by_id)["anthropic"]
            assert anthropic["preview"] == f"/v1/images/preview?file_id={file_id}&target=anthropic&detail=low"
            assert rows(by_id)["openai"]["tokens"] == 85  # low detail: OpenAI's flat rate
            preview = c.get(anthropic["preview"])
            assert preview.status_code == 200 and preview.headers["content-type"] == "image/jpeg"
            assert len(preview.content) == anthropic["bytes"]
            assert Image.open(io.BytesIO(preview.content)).size == (1108, 1108)
            # the preview needs the key, as every API route does
            assert httpx.get(running.url + anthropic["preview"]).status_code == 401
    finally:
        running.stop()


def test_the_chosen_local_model_counts_the_tokens_with_its_own_projector(client: httpx.Client) -> None:
    body = client.post(
        "/v1/images/inspect", json={"image": data_url(RETINA.read_bytes()), "model": "tiny", "targets": ["openai"]}
    ).json()
    model = rows(body)["model"]
    assert (model["model"], model["kind"], model["vision"], model["token_rule"]) == ("tiny", "local", True, "measured")
    assert model["tokens"] > 0 and model["cost_usd"] is None
    assert model["image_size"]["width"] > 0 and model["image_size"]["height"] > 0
    # rendered with the llama.cpp policy within the 'auto' detail's long edge
    assert max(model["width"], model["height"]) <= 1024 and model["changes"] == ["downscaled"]
    unmeasured = client.post(
        "/v1/images/inspect", json={"image": data_url(RETINA.read_bytes()), "model": "tiny", "measure": False}
    ).json()
    assert rows(unmeasured)["model"]["tokens"] is None


def test_a_gateway_model_is_priced_by_its_provider_and_a_text_model_says_it_sees_nothing(
    client: httpx.Client,
) -> None:
    body = inspect_upload(client, RETINA.read_bytes(), model="gw", targets="gemini").json()
    assert list(rows(body)) == ["gemini", "model"]
    gw = rows(body)["model"]
    assert (gw["kind"], gw["token_rule"], gw["tokens"]) == ("gateway", "openai", 765)  # openai/up-model
    assert gw["price_model"] is None  # 'up-model' is not in the price table
    budget = inspect_upload(client, RETINA.read_bytes(), model="gw", image_max_tokens="64")
    assert budget.status_code == 400
    assert error_of(budget)["param"] == "image_max_tokens" and "applies to local models" in error_of(budget)["message"]
    text = inspect_upload(client, RETINA.read_bytes(), model="tiny-text", targets="openai").json()
    assert rows(text)["model"]["error"] == "'tiny-text' does not take images" and rows(text)["model"]["preview"] is None


def test_heic_is_converted_where_it_is_not_accepted_and_kept_where_it_is(
    client: httpx.Client, chelsea: Image.Image
) -> None:
    heic = encode(chelsea, "HEIF")
    by_target = rows(inspect_upload(client, heic, "cat.heic").json())
    assert by_target["gemini"]["untouched"] and by_target["gemini"]["mime_type"] == "image/heic"
    for name in ("openai", "anthropic", "bedrock", "ollama", "llama.cpp"):
        assert by_target[name]["changes"] == ["converted"], name
        assert by_target[name]["mime_type"] in ("image/jpeg", "image/png")


def test_rotation_and_animation_are_named(client: httpx.Client, chelsea: Image.Image) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated = encode(chelsea, "JPEG", exif=exif)
    row = rows(inspect_upload(client, rotated, targets="openai").json())["openai"]
    assert row["changes"] == ["rotated"] and row["why"] == ["EXIF orientation must be applied"]
    assert (row["width"], row["height"]) == (chelsea.height, chelsea.width)
    frames = [chelsea.convert("P"), chelsea.rotate(180).convert("P")]
    gif = io.BytesIO()
    frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:])
    row = rows(inspect_upload(client, gif.getvalue(), targets="openai").json())["openai"]
    assert "first frame" in row["changes"] and row["why"] == ["openai does not accept animation"]


@pytest.mark.parametrize(
    ("data", "param", "words"),
    [
        (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x00" * 40, "file", "truncated"),
        (b"hello, this is text", "file", "not an image"),
        (b'<svg xmlns="http://www.w3.org/2000/svg"></svg>', "file", "SVG"),
        (b"", "file", "the uploaded file is empty"),
    ],
)
def test_bad_uploads_are_a_400_naming_the_problem(client: httpx.Client, data: bytes, param: str, words: str) -> None:
    r = inspect_upload(client, data)
    assert r.status_code == 400, r.text
    error = error_of(r)
    assert error["param"] == param and words.lower() in error["message"].lower(), error


def test_bad_json_requests_name_the_field(client: httpx.Client, settings: ServerSettings) -> None:
    cases: list[tuple[dict[str, Any], int, str | None, str]] = [
        ({"image": "data:image/png;base64,AAAA"}, 400, "image", "image"),
        ({"image": "http://10.0.0.1/x.jpg"}, 400, "image", "allow_hosts"),
        ({"image": "/etc/passwd"}, 400, "image", "must be a data: URL, an http(s):// URL or the id of a file"),
        ({"image": "file-000000000000000000000000"}, 400, "image", "no such file"),
        ({"image": data_url(make_pdf([PageSpec()]))}, 400, "image", "this is a PDF document, not an image"),
        ({}, 422, "image", "the request needs 'image'"),
        ({"image": data_url(b"x"), "detail": "ultra"}, 422, "detail", "'detail' must be 'low', 'high' or 'auto'"),
        ({"image": data_url(b"x"), "targets": ["openai", "nope"]}, 400, "targets", "unknown target 'nope'"),
        ({"image": data_url(b"x"), "image_max_tokens": 0}, 422, "image_max_tokens", "image_max_tokens"),
        ({"image": data_url(b"x"), "preview": "inline"}, 422, "preview", "'preview' must be one of"),
    ]
    for body, status, param, words in cases:
        r = client.post("/v1/images/inspect", json=body)
        assert r.status_code == status, (body, r.text)
        error = error_of(r)
        assert error["param"] == param and words in error["message"], (body, error)
    unknown = client.post("/v1/images/inspect", json={"image": data_url(RETINA.read_bytes()), "model": "nope"})
    assert unknown.status_code == 404 and "does not exist on this server" in error_of(unknown)["message"]
    broken = client.post("/v1/images/inspect", content=b"{", headers={"content-type": "application/json"})
    assert broken.status_code == 400 and error_of(broken)["code"] == "invalid_json"
    refused = httpx.post(client.base_url.join("/v1/images/inspect"), json={"image": data_url(RETINA.read_bytes())})
    assert refused.status_code == 401 and error_of(refused)["code"] == "invalid_api_key"
    missing = client.get("/v1/images/preview", params={"file_id": "file-000000000000000000000000", "target": "openai"})
    assert missing.status_code == 404
    assert "file-000000000000000000000000" in error_of(missing)["message"]


def test_price_table_lookups() -> None:
    assert price_of("anthropic/claude-3-5-sonnet-20241022") == 3.00
    assert price_of("bedrock/us.anthropic.claude-3-5-sonnet-20240620-v1:0") == 3.00
    assert price_of("openai/gpt-4o-mini") is None  # another image token rule: no estimate rather than a wrong one
