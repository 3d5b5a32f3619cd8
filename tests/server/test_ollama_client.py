"""The official ``ollama`` client against a ``vlmkit serve`` subprocess: chat and generate with images
(paths, bytes, and, past Ollama, http URLs and data URLs), NDJSON streaming, ``format``, ``options``,
``keep_alive``, ``list``, ``show``, ``ps``, ``pull`` from a stand-in of the hub, ``/api/version``, and
every bad input as Ollama's ``{"error": ...}`` with a 4xx."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ollama
import pytest

from tests.conftest import photo_path
from tests.engine.test_download_store import Hub
from tests.server.conftest import API_KEY, data_url
from tests.server.served import Served, serve_fixture
from vlmkit.engine.catalog import catalog

PULLED = "smolvlm-256m"


@pytest.fixture(scope="module")
def hub(tiny_files: tuple[Path, Path, Path]) -> Iterator[Hub]:
    entry = catalog()[PULLED]
    assert entry.mmproj is not None
    files = {
        f"{entry.repo}/{entry.model}": tiny_files[0].read_bytes(),
        f"{entry.repo}/{entry.mmproj}": tiny_files[1].read_bytes(),
    }
    with Hub(files) as h:
        yield h


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, tiny_files: tuple[Path, Path, Path], hub: Hub) -> Iterator[Served]:
    extra = "fetch: {allow_hosts: [127.0.0.1]}\n"  # the test's image server is on this machine
    yield from serve_fixture(tmp_path_factory, tiny_files, extra=extra, env={"HF_ENDPOINT": hub.url})


def client(served: Served) -> ollama.Client:
    return ollama.Client(host=served.url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=120)


HOPPER = photo_path("grace_hopper.jpg")


def test_chat_with_an_image_path(served: Served) -> None:
    response = client(served).chat(
        model="tiny",
        messages=[{"role": "user", "content": "Describe this image.", "images": [str(HOPPER)]}],
        options={"num_predict": 5, "temperature": 0},
    )
    assert response.model == "tiny" and response.done and response.done_reason == "length"
    assert response.message.role == "assistant" and isinstance(response.message.content, str)
    assert response.eval_count == 5 and (response.prompt_eval_count or 0) > 10  # the image's tokens are in it
    assert (response.total_duration or 0) > 0


def test_a_streamed_chat_says_what_the_whole_one_says(served: Served) -> None:
    ask = [{"role": "user", "content": "Describe this image.", "images": [HOPPER.read_bytes()]}]
    parts = list(
        client(served).chat(model="tiny", messages=ask, stream=True, options={"num_predict": 5, "temperature": 0})
    )
    assert all(not p.done for p in parts[:-1]) and parts[-1].done and parts[-1].done_reason == "length"
    text = "".join(p.message.content or "" for p in parts)
    whole = client(served).chat(model="tiny", messages=ask, options={"num_predict": 5, "temperature": 0})
    assert whole.message.content == text


def test_generate_with_images_and_the_raw_ndjson(served: Served) -> None:
    response = client(served).generate(
        model="tiny", prompt="What is this?", images=[HOPPER.read_bytes()], options={"num_predict": 3}
    )
    assert response.done and response.eval_count == 3 and isinstance(response.response, str)
    r = served.post("/api/generate", {"model": "tiny", "prompt": "Hi", "options": {"num_predict": 3}})
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-ndjson"
    lines = [json.loads(line) for line in r.text.splitlines()]
    assert [line["done"] for line in lines] == [False] * (len(lines) - 1) + [True]


def client_safe_url(url: str) -> str:
    """``url`` with a query that the ollama client lets through: it sends a string that does not end in
    an image extension and that Python's lenient base64 decoder accepts, as it is."""
    for query in ("?a", "?ab", "?abc", "?abcd", "?x=1", "?x=12"):
        try:
            base64.b64decode(url + query)
            return url + query
        except ValueError:
            continue
    raise AssertionError(f"no query makes {url!r} pass the ollama client's check")


def test_the_ollama_client_sends_an_image_url(served: Served) -> None:
    url = client_safe_url(f"http://127.0.0.1:{served.upstream.port}/images/grace_hopper.jpg")
    response = client(served).chat(
        model="tiny",
        messages=[{"role": "user", "content": "Describe this image.", "images": [url]}],
        options={"num_predict": 3},
    )
    text_only = client(served).chat(
        model="tiny", messages=[{"role": "user", "content": "Describe this image."}], options={"num_predict": 3}
    )
    assert response.done and response.eval_count == 3
    assert (response.prompt_eval_count or 0) > (text_only.prompt_eval_count or 0) + 10  # the image's tokens


def test_images_as_urls_and_data_urls_go_past_ollama(served: Served) -> None:
    url = f"http://127.0.0.1:{served.upstream.port}/images/grace_hopper.jpg"
    for image in (url, data_url(HOPPER.read_bytes())):
        ask = {"role": "user", "content": "Describe this image.", "images": [image]}
        r = served.post("/api/chat", {"model": "gw", "messages": [ask], "stream": False})
        assert r.status_code == 200, r.text
        assert r.json()["message"]["content"] == "a fake answer"
        sent = served.upstream.requests[-1]["messages"][0]["content"][1]["image_url"]["url"]
        assert sent.startswith("data:image/jpeg;base64,")


def test_format_and_options_reach_the_gateway(served: Served) -> None:
    schema = {"type": "object", "properties": {"colour": {"type": "string"}}, "required": ["colour"]}
    c = client(served)
    c.chat(
        model="gw",
        messages=[{"role": "user", "content": "hi"}],
        format="json",
        options={"num_predict": 9, "stop": ["x"]},
    )
    sent = served.upstream.requests[-1]
    assert sent["response_format"] == {"type": "json_object"}
    assert sent["max_completion_tokens"] == 9 and sent["stop"] == ["x"]
    c.chat(model="gw", messages=[{"role": "user", "content": "hi"}], format=schema)
    assert served.upstream.requests[-1]["response_format"]["json_schema"]["schema"] == schema


def test_a_schema_format_on_the_local_model(served: Served) -> None:
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    response = client(served).chat(
        model="tiny",
        messages=[{"role": "user", "content": "Say something."}],
        format=schema,
        options={"num_predict": 60},
    )
    assert response.done_reason == "stop", response
    assert isinstance(json.loads(response.message.content or "")["ok"], bool)


def test_list_show_version(served: Served) -> None:
    c = client(served)
    names = {m.model for m in c.list().models}
    assert {"tiny", "gw"} <= names
    tiny = c.show("tiny")
    assert tiny.capabilities is not None and "vision" in tiny.capabilities and "completion" in tiny.capabilities
    assert tiny.details is not None and tiny.details.format == "gguf"
    gw = c.show("gw")
    assert gw.capabilities is not None and "vision" in gw.capabilities
    version = served.get("/api/version")
    assert version.status_code == 200 and isinstance(version.json()["version"], str)


def test_keep_alive_and_ps(served: Served) -> None:
    c = client(served)
    c.generate(model="tiny", prompt="", keep_alive="10m")  # Ollama's way to load a model
    assert "tiny" in {m.model for m in c.ps().models}
    c.chat(model="tiny", messages=[{"role": "user", "content": "hi"}], options={"num_predict": 2}, keep_alive=0)
    assert "tiny" not in {m.model for m in c.ps().models}  # keep_alive 0: unloaded after the request
    unloaded = c.generate(model="tiny", prompt="", keep_alive=0)
    assert unloaded.done_reason == "unload"


def test_pull_streams_progress_from_the_hub(served: Served) -> None:
    c = client(served)
    updates = list(c.pull(PULLED, stream=True))
    assert updates[0].status == "pulling manifest" and updates[-1].status == "success"
    assert any(u.completed for u in updates)
    assert PULLED in {m.model for m in c.list().models}
    assert "vision" in (c.show(PULLED).capabilities or [])
    assert c.pull(PULLED).status == "success"  # not streamed: one answer when it is done


# --- bad input: Ollama's {"error": ...}, naming the part and what to do --------------------------


def error_of(exc: ollama.ResponseError) -> str:
    return str(exc.error)


def test_a_corrupt_image(served: Served) -> None:
    junk = base64.b64encode(b"not an image at all" * 10).decode()
    with pytest.raises(ollama.ResponseError) as caught:
        client(served).chat(model="tiny", messages=[{"role": "user", "content": "hi", "images": [junk]}])
    assert caught.value.status_code == 400
    assert error_of(caught.value).startswith("messages[0].images[0]: ")
    assert "is neither an image nor a PDF" in error_of(caught.value)


def test_invalid_base64(served: Served) -> None:
    r = served.post("/api/chat", {"model": "tiny", "messages": [{"role": "user", "content": "hi", "images": ["a*b"]}]})
    assert r.status_code == 400 and set(r.json()) == {"error"}
    assert r.json()["error"].startswith("messages[0].images[0]: ")
    assert "base64" in r.json()["error"]


def test_a_mislabelled_data_url_is_read_as_what_its_bytes_are(served: Served) -> None:
    ask = {"role": "user", "content": "hi", "images": [data_url(HOPPER.read_bytes(), "image/png")]}
    r = served.post("/api/chat", {"model": "gw", "messages": [ask], "stream": False})
    assert r.status_code == 200
    sent = served.upstream.requests[-1]["messages"][0]["content"][1]["image_url"]["url"]
    assert sent.startswith("data:image/jpeg;base64,")


def test_an_oversized_body(served: Served) -> None:
    big = base64.b64encode(bytes(3 * 1024 * 1024)).decode()
    with pytest.raises(ollama.ResponseError) as caught:
        client(served).chat(model="tiny", messages=[{"role": "user", "content": "hi", "images": [big]}])
    assert caught.value.status_code == 413
    assert "larger than this server's limit of 3,145,728 bytes" in error_of(caught.value)


def test_an_unknown_model(served: Served) -> None:
    with pytest.raises(ollama.ResponseError) as caught:
        client(served).chat(model="llama9", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.status_code == 404
    assert "the model 'llama9' does not exist on this server; served: " in error_of(caught.value)
    with pytest.raises(ollama.ResponseError) as shown:
        client(served).show("llama9")
    assert shown.value.status_code == 404


@pytest.mark.parametrize(
    ("body", "fact"),
    [
        ({"model": "tiny", "prompt": "hi", "options": {"num_predict": 0}}, "num_predict must be at least 1"),
        ({"model": "tiny", "prompt": "hi", "keep_alive": "soon"}, "keep_alive 'soon' is not a duration"),
        ({"model": "tiny", "prompt": "hi", "format": "xml"}, 'format must be "json" or a JSON schema object'),
        ({"model": "tiny", "prompt": "hi", "images": [3]}, "images[0]: an image must be a base64 string"),
        (
            {"model": "tiny", "prompt": "hi", "tools": [{"type": "function"}]},
            "use /v1/chat/completions, which calls tools",
        ),
    ],
)
def test_bad_requests_name_the_field(served: Served, body: dict[str, Any], fact: str) -> None:
    r = served.post("/api/generate", body)
    assert r.status_code == 400, r.text
    assert set(r.json()) == {"error"} and fact in r.json()["error"], r.json()


def test_an_unknown_route_in_ollama_shape(served: Served) -> None:
    r = served.post("/api/embed", {"model": "tiny", "input": "hi"})
    assert r.status_code == 404 and r.json() == {"error": "no route POST /api/embed on this server"}


def test_a_failing_upstream_is_a_502_in_ollama_shape(served: Served) -> None:
    served.upstream.status, served.upstream.error_message = 500, "the upstream is down"
    ask = [{"role": "user", "content": "hi"}]
    try:
        with pytest.raises(ollama.ResponseError) as whole:
            client(served).chat(model="gw", messages=ask)
        with pytest.raises(ollama.ResponseError) as streamed:
            list(client(served).chat(model="gw", messages=ask, stream=True))
    finally:
        served.upstream.status = 200
    for caught in (whole, streamed):
        assert caught.value.status_code == 502
        assert "the upstream is down" in error_of(caught.value)
