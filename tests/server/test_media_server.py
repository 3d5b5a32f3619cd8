"""A PDF sent to the server as OpenAI's ``file`` part: a local model reads its pages; a broken PDF is a 400."""

from __future__ import annotations

import base64

import openai
import pytest

from tests.media import PageSpec, make_pdf
from tests.server.conftest import API_KEY, Running


def client(server: Running) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base, api_key=API_KEY, max_retries=0, timeout=60)


def pdf_part(pdf: bytes) -> dict[str, object]:
    url = "data:application/pdf;base64," + base64.b64encode(pdf).decode()
    return {"type": "file", "file": {"filename": "notes.pdf", "file_data": url}}


def test_a_pdf_file_part_reaches_a_local_model_as_pages(server: Running) -> None:
    pdf = make_pdf([PageSpec(text="First"), PageSpec(text="Second")])
    response = client(server).chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": [{"type": "text", "text": "Summarise."}, pdf_part(pdf)]}],  # type: ignore[list-item]
        max_tokens=2,
        temperature=0,
    )
    stats = (response.model_extra or {})["stats"]
    assert stats["images_encoded"] + stats["images_reused"] == 2  # one image a page
    assert len(server.results[-1].sent_images) == 2


def test_a_broken_pdf_is_a_400_naming_the_part(server: Running) -> None:
    broken = make_pdf([PageSpec(text="First")])[:200]
    with pytest.raises(openai.BadRequestError) as caught:
        client(server).chat.completions.create(
            model="tiny",
            messages=[{"role": "user", "content": [{"type": "text", "text": "Read."}, pdf_part(broken)]}],  # type: ignore[list-item]
            max_tokens=2,
        )
    body = caught.value.body
    assert isinstance(body, dict)
    assert "truncated or damaged" in str(body["message"]) and body.get("param") == "messages[0].content[1]"
