"""PDFs as a source: pages rendered for the target, chosen by number, and every bad PDF a typed 400."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import vlmkit as vk
from tests.media import A4_LANDSCAPE, LETTER, PageSpec, encrypted_pdf, make_pdf, no_page_pdf
from vlmkit.chat import ImagePart, MediaPart, TextPart
from vlmkit.errors import (
    BadRequestError,
    DocumentError,
    DocumentTooLargeError,
    EmptyDocumentError,
    EncryptedDocumentError,
    InvalidDocumentError,
    UnsupportedImageError,
)
from vlmkit.images import ANTHROPIC, LLAMA_CPP, prepare_document, prepare_image

RECT = (100.0, 150.0, 300.0, 250.0)  # on page 2, in points from its top-left corner


@pytest.fixture(scope="module")
def pdf() -> bytes:
    return make_pdf(
        [
            PageSpec(LETTER, "Page one"),
            PageSpec(A4_LANDSCAPE, "Page two", [RECT]),
            PageSpec(LETTER, "Page three"),
            PageSpec(LETTER, "Page four"),
        ]
    )


def green_box(image: Image.Image) -> tuple[int, int, int, int] | None:
    px = np.asarray(image.convert("RGB")).astype(int)
    ys, xs = np.nonzero((px[..., 1] > 150) & (px[..., 0] < 80) & (px[..., 2] < 80))
    if len(xs) == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def dark_pixels(image: Image.Image) -> int:
    return int((np.asarray(image.convert("L")) < 100).sum())


def decoded(handle: vk.ImageHandle) -> Image.Image:
    return Image.open(io.BytesIO(handle.data))


def test_pages_render_to_fit_the_target_with_their_content(pdf: bytes) -> None:
    doc = prepare_document(pdf, target=ANTHROPIC)
    assert doc.page_count == 4 and [p.number for p in doc.pages] == [1, 2, 3, 4] and doc.whole
    letter = ANTHROPIC.target_size(2550, 3300)  # the page at 300 dpi, brought within the limits
    landscape = ANTHROPIC.target_size(3508, 2479)
    assert [(p.image.width, p.image.height) for p in doc.pages] == [letter, landscape, letter, letter]
    assert [p.size_points for p in doc.pages] == [LETTER, A4_LANDSCAPE, LETTER, LETTER]
    for page in doc.pages:
        assert page.image.mime_type == "image/png"
        assert not page.image.render(ANTHROPIC).changed  # rendered once, straight to what Anthropic takes
        image = decoded(page.image)
        assert dark_pixels(image) > 200  # the page's text is there
        box = green_box(image)
        if page.number != 2:
            assert box is None
            continue
        scale = image.width / A4_LANDSCAPE[0]
        expected = [v * scale for v in RECT]
        assert box is not None and all(abs(a - b) <= 1.5 for a, b in zip(box, expected, strict=True)), (box, expected)


def test_sources_selection_and_resolution(pdf: bytes, tmp_path: Path) -> None:
    path = tmp_path / "report.pdf"
    path.write_bytes(pdf)
    by_path = prepare_document(path, pages="2-3", dpi=72)
    assert by_path.name == "report.pdf" and [p.number for p in by_path.pages] == [2, 3]
    assert (by_path.pages[0].image.width, by_path.pages[0].image.height) == (842, 595)  # 72 dpi: a pixel a point
    assert by_path.pages[1].image.name == "report-page-3.png"
    with path.open("rb") as f:
        assert [p.number for p in prepare_document(f, pages=[4, 1, 4], dpi=36).pages] == [1, 4]
    assert [p.number for p in prepare_document(str(path), pages="3-", dpi=36).pages] == [3, 4]
    assert [p.number for p in prepare_document(pdf, pages=range(1, 3), dpi=36).pages] == [1, 2]
    default = prepare_document(pdf, pages=1)
    assert (default.pages[0].image.width, default.pages[0].image.height) == (1275, 1650)  # 150 dpi
    assert "4 pages, rendered page 1" in repr(default)


def test_a_document_in_a_chat_is_its_pages_with_their_numbers(pdf: bytes) -> None:
    doc = prepare_document(pdf, pages="1,3", target=LLAMA_CPP)
    chat = vk.Chat()
    chat.add_user_message("Summarise this report.", images=[doc], detail="low")
    message = chat.messages[0]
    assert message.content == [TextPart("Summarise this report."), MediaPart(doc, "low")]
    parts = message.flat_content  # what a model that reads only images gets
    assert [type(p) for p in parts] == [TextPart, TextPart, ImagePart, TextPart, ImagePart]
    assert [p.text for p in parts if isinstance(p, TextPart)] == ["Summarise this report.", "Page 1:", "Page 3:"]
    assert [p.detail for p in parts if isinstance(p, ImagePart)] == ["low", "low"]
    assert chat.images == doc.page_images
    # saved and read back, a document is its pages
    again = vk.Chat.from_json(chat.to_json())
    assert again.messages[0].content == parts


def test_a_pdf_given_as_an_image_points_to_prepare_document(pdf: bytes) -> None:
    with pytest.raises(UnsupportedImageError, match=r"a PDF document; read it with vlmkit.prepare_document"):
        prepare_image(pdf)


@pytest.mark.parametrize(
    ("data", "error", "says"),
    [
        (encrypted_pdf(), EncryptedDocumentError, ["is encrypted", "password=", "qpdf --decrypt"]),
        (no_page_pdf(), EmptyDocumentError, ["has no pages"]),
        (b"%PDF-1.7\n1 0 obj\n<< /Type /Catalog", InvalidDocumentError, ["truncated or damaged", "export it again"]),
        (b"GIF89a not a pdf", InvalidDocumentError, ["is not a PDF", "%PDF-"]),
    ],
    ids=["encrypted", "no-pages", "truncated", "not-a-pdf"],
)
def test_bad_pdfs_are_typed_400s(data: bytes, error: type[DocumentError], says: list[str]) -> None:
    with pytest.raises(error) as caught:
        prepare_document(data, name="scan.pdf")
    assert isinstance(caught.value, BadRequestError) and caught.value.status_code == 400
    message = str(caught.value)
    assert "'scan.pdf'" in message
    for words in says:
        assert words in message


def test_a_cut_file_is_damaged(pdf: bytes) -> None:
    with pytest.raises(InvalidDocumentError, match="truncated or damaged"):
        prepare_document(pdf[: len(pdf) // 2])


def test_a_wrong_password_says_so() -> None:
    with pytest.raises(EncryptedDocumentError, match="is encrypted and the password given is wrong"):
        prepare_document(encrypted_pdf(), password="guess")


def test_page_cap_and_bad_selections(pdf: bytes) -> None:
    with pytest.raises(DocumentTooLargeError) as caught:
        prepare_document(pdf, max_pages=2, dpi=36)
    assert "4 pages of" in str(caught.value) and "max_pages=2" in str(caught.value)
    assert 'pages="1-2"' in str(caught.value)
    assert len(prepare_document(pdf, max_pages=2, pages="3-4", dpi=36).pages) == 2
    cases = {
        "9": "page 9 is not in 'x.pdf', which has pages 1 to 4",
        "0-2": "page 0 is not in",
        "3-1": "runs backwards",
        "one": "is not a page selection",
    }
    for pages, says in cases.items():
        with pytest.raises(DocumentError, match=says):
            prepare_document(pdf, name="x.pdf", pages=pages, dpi=36)
    with pytest.raises(DocumentError, match="dpi must be positive"):
        prepare_document(pdf, dpi=0)
    with pytest.raises(DocumentTooLargeError, match="render it at a lower dpi="):
        prepare_document(pdf, pages=1, dpi=3000)
