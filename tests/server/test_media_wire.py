"""PDFs and videos through ``vlmkit serve`` from every source a client has: an upload named by its id,
an http(s) URL (the safe fetcher, then sniffing), a data URL; vLLM's ``video_url`` part; and the
limit of images per request counting every page and frame. The requests go through the official
``openai`` client (the parts it has no type for are passed as dicts, as users do) to a real server
on 127.0.0.1 serving the generated test model."""

from __future__ import annotations

import base64
import io
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import openai
import pytest
from PIL import Image

from tests.media import PageSpec, make_pdf, make_video
from tests.server.conftest import API_KEY, Running, start_server
from vlmkit.images.fetch import FetchOptions
from vlmkit.server import ServerSettings


def client(server: Running) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base, api_key=API_KEY, max_retries=0, timeout=60)


def ask(server: Running, part: dict[str, Any]) -> Any:
    return client(server).chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": [{"type": "text", "text": "What is this?"}, part]}],  # type: ignore[list-item]
        max_tokens=2,
        temperature=0,
    )


def refused(server: Running, part: dict[str, Any]) -> dict[str, Any]:
    """The error body (OpenAI's shape, as the client read it) of a request holding ``part``."""
    with pytest.raises(openai.BadRequestError) as caught:
        ask(server, part)
    body = caught.value.body
    assert isinstance(body, dict) and caught.value.status_code == 400
    assert set(body) >= {"message", "type", "param", "code"}
    return body


def images_sent(server: Running) -> int:
    return len(server.results[-1].sent_images)


def data_url(data: bytes, mime: str) -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


PDF = make_pdf([PageSpec(size=(200, 260), text="One"), PageSpec(size=(200, 260), text="Two")])


def animated_gif(frames: int = 4) -> bytes:
    images = [Image.new("RGB", (48, 32), (60 * i, 0, 255 - 60 * i)) for i in range(frames)]
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], duration=250, loop=0)
    return buf.getvalue()


# --- a web server with files on it, and a server allowed to fetch from 127.0.0.1 ---------------


@pytest.fixture()
def web() -> Iterator[dict[str, bytes]]:
    """Files served at ``http://127.0.0.1:PORT/NAME`` (``web["port"]`` is the port, as text bytes), all
    as ``application/octet-stream``: what a file is comes from its bytes, never from the label."""
    files: dict[str, bytes] = {}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            data = files.get(self.path.lstrip("/"))
            self.send_response(200 if data is not None else 404)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(data or b"")))
            self.end_headers()
            self.wfile.write(data or b"")

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    files["port"] = str(httpd.server_address[1]).encode()
    yield files
    httpd.shutdown()
    httpd.server_close()


def url_of(web: dict[str, bytes], name: str) -> str:
    return f"http://127.0.0.1:{web['port'].decode()}/{name}"


@pytest.fixture()
def fetching(settings: ServerSettings) -> Iterator[Running]:
    running = start_server(settings.with_overrides(fetch=FetchOptions(allow_hosts=frozenset({"127.0.0.1"}))))
    yield running
    running.stop()


# --- 1. PDFs from every source -----------------------------------------------------------------


def test_an_uploaded_pdf_is_read_as_its_pages_by_file_id(server: Running) -> None:
    uploaded = client(server).files.create(file=("notes.pdf", PDF, "application/pdf"), purpose="user_data")
    extra = uploaded.model_extra or {}
    assert (extra["mime_type"], extra["pages"], uploaded.bytes) == ("application/pdf", 2, len(PDF))
    assert client(server).files.content(uploaded.id).content == PDF
    for part in (
        {"type": "file", "file": {"file_id": uploaded.id}},
        {"type": "image_url", "image_url": {"url": uploaded.id}},
        {"type": "image_url", "image_url": {"file_id": uploaded.id}},
    ):
        ask(server, part)
        assert images_sent(server) == 2, part  # one image a page


def test_a_damaged_pdf_upload_is_refused_at_upload_time(server: Running) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client(server).files.create(file=("notes.pdf", PDF[:300], "application/pdf"), purpose="user_data")
    message = str(caught.value)
    assert "file: the PDF 'notes.pdf' cannot be read" in message and "truncated or damaged" in message


def test_a_pdf_at_a_url_is_fetched_and_sniffed_as_a_pdf(fetching: Running, web: dict[str, bytes]) -> None:
    web["report"] = PDF  # no .pdf in the name, and served as application/octet-stream
    ask(fetching, {"type": "image_url", "image_url": {"url": url_of(web, "report")}})
    assert images_sent(fetching) == 2
    ask(fetching, {"type": "file", "file": {"file_data": data_url(PDF, "application/pdf")}})
    assert images_sent(fetching) == 2


def test_a_file_that_is_neither_image_nor_pdf_is_a_400_naming_the_part(
    fetching: Running, web: dict[str, bytes]
) -> None:
    web["notes.txt"] = b"just some text, not a picture\n" * 4
    for part in (
        {"type": "image_url", "image_url": {"url": url_of(web, "notes.txt")}},
        {"type": "file", "file": {"file_data": data_url(web["notes.txt"], "application/pdf")}},
    ):
        body = refused(fetching, part)
        assert body["param"] == "messages[0].content[1]", part
        message = str(body["message"])
        assert "is neither an image nor a PDF: found text ('just some text" in message
        assert "Send an image (JPEG, PNG, WebP, GIF, BMP, TIFF, HEIC/HEIF, AVIF) or a PDF" in message


# --- 2. videos ---------------------------------------------------------------------------------


def test_a_video_url_part_is_read_as_frames_from_every_source(fetching: Running, web: dict[str, bytes]) -> None:
    mp4 = make_video(seconds=2.0, fps=10)
    web["clip"] = mp4
    uploaded = client(fetching).files.create(file=("clip.mp4", mp4, "video/mp4"), purpose="user_data")
    extra = uploaded.model_extra or {}
    assert extra["mime_type"] == "video/mp4" and extra["duration"] == pytest.approx(2.0, abs=0.15)
    for url in (data_url(mp4, "video/mp4"), url_of(web, "clip"), uploaded.id):
        ask(fetching, {"type": "video_url", "video_url": {"url": url}})
        assert images_sent(fetching) == 8, url[:30]  # the default: 8 frames, each after its time
    ask(fetching, {"type": "video_url", "video_url": {"file_id": uploaded.id}})
    assert images_sent(fetching) == 8


def test_an_animation_is_one_image_as_an_image_url_and_frames_as_a_video_url(server: Running) -> None:
    gif = animated_gif(frames=4)
    ask(server, {"type": "image_url", "image_url": {"url": data_url(gif, "image/gif")}})
    assert images_sent(server) == 1  # as today: the first frame
    ask(server, {"type": "video_url", "video_url": {"url": data_url(gif, "image/gif")}})
    assert images_sent(server) == 8  # 1 s of animation, 8 frames spread over it


def test_a_video_sent_as_an_image_says_to_send_it_as_a_video_url(server: Running) -> None:
    body = refused(server, {"type": "image_url", "image_url": {"url": data_url(make_video(0.5), "video/mp4")}})
    assert body["param"] == "messages[0].content[1]"
    assert "is neither an image nor a PDF" in body["message"] and "send a video as a video_url part" in body["message"]


def test_a_still_image_or_a_bad_file_as_a_video_is_a_400_naming_the_part(server: Running) -> None:
    png = io.BytesIO()
    Image.new("RGB", (8, 8)).save(png, format="PNG")
    body = refused(server, {"type": "video_url", "video_url": {"url": data_url(png.getvalue(), "image/png")}})
    assert body["param"] == "messages[0].content[1]"
    assert "is a still image (image/png), not a video or an animation" in body["message"]
    body = refused(server, {"type": "video_url", "video_url": {"url": data_url(b"not a video at all", "video/mp4")}})
    assert body["param"] == "messages[0].content[1]"
    assert "is neither an image nor a video FFmpeg reads" in body["message"]
    body = refused(server, {"type": "video_url", "video_url": {"url": "/etc/passwd"}})
    assert body["param"] == "messages[0].content[1]"
    assert "a video_url must be a data: URL, an http(s):// URL or the id of a file" in body["message"]


# --- 3. the limit of images per request counts pages and frames --------------------------------


def test_pages_over_the_images_per_request_limit_are_a_400_naming_part_limit_and_remedy(server: Running) -> None:
    limit = server.state.settings.max_images_per_request
    pdf = make_pdf([PageSpec(size=(60, 80), text=str(n)) for n in range(limit + 1)])
    body = refused(server, {"type": "file", "file": {"file_data": data_url(pdf, "application/pdf")}})
    assert body["param"] == "messages[0].content[1]"
    message = str(body["message"])
    assert f"this PDF gives {limit + 1} pages" in message
    assert f"over this server's limit of {limit} per request" in message
    assert "send fewer pages (split the PDF" in message and "max_images_per_request" in message


def test_the_frame_budget_shares_the_limit_and_pages_with_frames_over_it_name_the_part(
    settings: ServerSettings,
) -> None:
    running = start_server(settings.with_overrides(max_images_per_request=4))
    try:
        png = io.BytesIO()
        Image.new("RGB", (32, 32), (9, 9, 9)).save(png, format="PNG")
        image = {"type": "image_url", "image_url": {"url": data_url(png.getvalue(), "image/png")}}
        video = {"type": "video_url", "video_url": {"url": data_url(make_video(1.0), "video/mp4")}}
        pdf = make_pdf([PageSpec(size=(60, 80), text=str(n)) for n in range(3)])
        document = {"type": "file", "file": {"file_data": data_url(pdf, "application/pdf")}}

        def send(*parts: dict[str, Any]) -> Any:
            return client(running).chat.completions.create(
                model="tiny",
                messages=[{"role": "user", "content": list(parts)}],  # type: ignore[misc]
                max_tokens=2,
            )

        send(video)
        assert images_sent(running) == 4  # the frame budget: min(8, the limit)
        send(image, video)
        assert images_sent(running) == 4  # the image and 3 frames: what the limit leaves the video
        send(document, video)
        assert images_sent(running) == 4  # the PDF's 3 pages are read first: 1 frame is left
        send(video, video)
        assert images_sent(running) == 4  # 2 frames each
        with pytest.raises(openai.BadRequestError) as caught:
            send(document, document, video)  # 6 pages, and the one frame every video gets
        body = caught.value.body
        assert isinstance(body, dict) and body["param"] == "messages[0].content[1]"
        message = str(body["message"])
        assert "this PDF gives 3 pages, and with it the request holds 6 images" in message
        assert "over this server's limit of 4 per request; send fewer pages (split the PDF" in message
    finally:
        running.stop()


def test_pages_over_the_models_context_name_the_biggest_pdf_and_how_to_send_fewer(settings: ServerSettings) -> None:
    running = start_server(settings.with_overrides(max_images_per_request=500))
    try:  # the test model's context holds 4096 tokens, and each page (with its "Page N:") costs about 24
        pdfs = [make_pdf([PageSpec(size=(60, 80), text=str(n)) for n in range(count)]) for count in (60, 95, 50)]
        parts = [{"type": "file", "file": {"file_data": data_url(pdf, "application/pdf")}} for pdf in pdfs]
        with pytest.raises(openai.BadRequestError) as caught:
            client(running).chat.completions.create(
                model="tiny",
                messages=[{"role": "user", "content": parts}],  # type: ignore[misc]
                max_tokens=2,
            )
        body = caught.value.body
        assert isinstance(body, dict) and body["param"] == "messages[0].content[1]"
        assert body["code"] == "context_length_exceeded"
        message = str(body["message"])
        assert message.startswith("messages[0].content[1]: the prompt takes ")
        assert "the model's context holds" in message
        assert message.endswith("this PDF gives 95 pages, an image each: send fewer pages (split the PDF)")
    finally:
        running.stop()


def test_pdf_and_video_uploads_survive_a_restart_and_a_pdf_has_no_image_preview(server: Running, tmp_path: Any) -> None:
    from vlmkit.server.files import FileStore, read_upload

    store = FileStore(10 * 1024 * 1024, tmp_path)
    pdf = store.add(read_upload(PDF, "notes.pdf"), "notes.pdf", "user_data")
    mp4 = make_video(seconds=1.0)
    video = store.add(read_upload(mp4, "clip.mp4"), "clip.mp4", "user_data")
    again = FileStore(10 * 1024 * 1024, tmp_path)  # a new server reads the uploads back from files_dir
    assert again.get(pdf.id).to_dict() == pdf.to_dict() and again.get(pdf.id).data == PDF
    assert again.get(video.id).to_dict()["mime_type"] == "video/mp4" and again.used_bytes == len(PDF) + len(mp4)

    uploaded = client(server).files.create(file=("notes.pdf", PDF, "application/pdf"), purpose="user_data")
    r = httpx.get(
        server.base + "/images/preview",
        params={"file_id": uploaded.id, "target": "openai"},
        headers={"Authorization": f"Bearer {API_KEY}"},
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "file_id"
    assert "is an upload of type application/pdf, not an image" in r.json()["error"]["message"]
