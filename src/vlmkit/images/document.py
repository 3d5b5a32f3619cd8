"""PDF documents as a source: ``prepare_document`` renders the pages a model should read as images.

Most pictures sent to vision models come out of a PDF (a scan, a slide deck, a form). A model that
reads only images gets the pages, rendered with pdfium (``pypdfium2``, the ``media`` extra) at the
size the target takes: the page is rasterised straight to the policy's long edge and pixel limits
(``target=ANTHROPIC`` gives pages of 1568 px that the rendering ladder then sends untouched), or at
``dpi=`` when asked. A :class:`Document` keeps its bytes, for providers that read PDFs themselves.

``pages`` chooses pages (1-based: ``"1-3,7"``, ``[1, 2]``, ``range(1, 11)``); more pages than
``max_pages`` is an error that says how to choose fewer. An encrypted, damaged or empty PDF is a
:class:`~vlmkit.errors.DocumentError` (HTTP 400) saying which.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import pybase64
from PIL import Image

from vlmkit.errors import (
    DocumentError,
    DocumentTooLargeError,
    EmptyDocumentError,
    EncryptedDocumentError,
    InvalidDocumentError,
)
from vlmkit.images.handle import ImageHandle, content_identifier, image_from_bytes
from vlmkit.images.policy import ImagePolicy
from vlmkit.images.probe import DEFAULT_MAX_PIXELS
from vlmkit.images.source import ImageSource, read_source

PDF_MIME = "application/pdf"
DEFAULT_MAX_PAGES = 100
"""The most pages one document may give (Anthropic's and Bedrock's own limit for a PDF)."""
DEFAULT_DPI = 150
"""Resolution without a target: enough for body text to stay legible."""
MAX_TARGET_DPI = 300
"""A target's size limits are met by rendering at most this finely (no page is drawn larger)."""
POINTS_PER_INCH = 72

PageSelection = str | int | Iterable[int] | None
"""Pages to render, 1-based: ``"1-3,7,10-"``, one number, numbers, a ``range``, or ``None`` for all."""


def is_pdf(data: bytes | memoryview) -> bool:
    """Whether ``data`` is a PDF (its header, possibly after a little leading junk as readers allow)."""
    return b"%PDF-" in bytes(data[:1024])


@dataclass(frozen=True)
class DocumentPage:
    """One rendered page: its number in the document (1-based) and its image."""

    number: int
    image: ImageHandle
    size_points: tuple[float, float]
    """The page's size in PDF points (1/72 inch)."""


@dataclass(frozen=True, eq=False)
class Document:
    """A PDF and the pages chosen from it, rendered as images."""

    data: bytes = field(repr=False)
    name: str
    page_count: int
    """Pages in the whole document."""
    pages: tuple[DocumentPage, ...]
    """The chosen pages, rendered, in document order."""

    mime_type = PDF_MIME

    @property
    def size_bytes(self) -> int:
        return len(self.data)

    @property
    def identifier(self) -> str:
        return content_identifier(self.data)

    @cached_property
    def base64(self) -> str:
        """The PDF as base64 (computed once), for providers that read PDFs themselves."""
        return pybase64.b64encode_as_string(self.data)

    @property
    def page_images(self) -> list[ImageHandle]:
        return [p.image for p in self.pages]

    @property
    def whole(self) -> bool:
        """Whether every page was chosen (then the PDF itself says the same as the pages)."""
        return len(self.pages) == self.page_count

    def interleaved(self) -> list[str | ImageHandle]:
        """The pages as a model that reads only images gets them: ``"Page N:"`` before each page's image."""
        out: list[str | ImageHandle] = []
        for page in self.pages:
            out += [f"Page {page.number}:", page.image]
        return out

    def __repr__(self) -> str:
        numbers = _ranges([p.number for p in self.pages])
        return f"Document({self.name!r}, {self.page_count} pages, rendered {numbers}, {self.size_bytes:,} bytes)"


def prepare_document(
    src: ImageSource,
    name: str | None = None,
    *,
    pages: PageSelection = None,
    max_pages: int = DEFAULT_MAX_PAGES,
    target: ImagePolicy | None = None,
    dpi: float | None = None,
    password: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Document:
    """Read a PDF (a path, bytes, or a binary file object) and render the chosen pages.

    ``target`` is the policy of the model the pages are for: each page is rendered to fit its size
    limits (at most :data:`MAX_TARGET_DPI`); ``dpi`` renders at that resolution instead; neither:
    :data:`DEFAULT_DPI`. ``password`` opens an encrypted PDF.
    """
    data, default_name, _ = read_source(src)
    name = name or default_name or f"document-{content_identifier(data)[:12]}.pdf"
    if not is_pdf(data):
        raise InvalidDocumentError(f"{name!r} is not a PDF: it does not start with a %PDF- header")
    pdf = _open(data, name, password)
    try:
        count = len(pdf)
        if count == 0:
            raise _no_pages(name)
        numbers = select_pages(pages, count, name)
        if len(numbers) > max_pages:
            raise DocumentTooLargeError(
                f"{len(numbers)} pages of {name!r} were chosen, over the limit of max_pages={max_pages}; "
                f'choose fewer with pages= (e.g. pages="1-{max_pages}") or raise max_pages'
            )
        rendered = tuple(_render_page(pdf, n, name, target, dpi, max_pixels) for n in numbers)
    finally:
        pdf.close()
    return Document(data=data, name=name, page_count=count, pages=rendered)


def _open(data: bytes, name: str, password: str | None) -> Any:
    import pypdfium2 as pdfium

    try:
        return pdfium.PdfDocument(data, password=password)
    except pdfium.PdfiumError as exc:
        # pdfium's error code is process-wide and is not reset by a failure that sets none (a file with
        # no page), so the code is believed only where the bytes agree with it
        code = getattr(exc, "err_code", None)
        if code in (pdfium.raw.FPDF_ERR_PASSWORD, pdfium.raw.FPDF_ERR_SECURITY) and b"/Encrypt" in data:
            if code == pdfium.raw.FPDF_ERR_SECURITY:
                raise EncryptedDocumentError(
                    f"the PDF {name!r} uses a security handler pdfium does not support; save a copy without encryption"
                ) from None
            if password is None:
                raise EncryptedDocumentError(
                    f"the PDF {name!r} is encrypted; pass its password (password=...), or save a copy without "
                    "one (e.g. qpdf --decrypt in.pdf out.pdf)"
                ) from None
            raise EncryptedDocumentError(f"the PDF {name!r} is encrypted and the password given is wrong") from None
        counts = _PAGE_COUNT.findall(data)
        if counts and not any(int(c) for c in counts):
            raise _no_pages(name) from None
        raise InvalidDocumentError(
            f"the PDF {name!r} cannot be read ({exc}); the file is truncated or damaged: download or export it again"
        ) from None


_PAGE_COUNT = re.compile(rb"/Count\s*(\d+)")


def _no_pages(name: str) -> EmptyDocumentError:
    return EmptyDocumentError(f"the PDF {name!r} has no pages, so there is nothing to show a model; check the file")


_RANGE = re.compile(r"^\s*(\d*)\s*(-?)\s*(\d*)\s*$")


def select_pages(pages: PageSelection, count: int, name: str = "the PDF") -> list[int]:
    """The 1-based page numbers ``pages`` chooses from ``count`` pages, sorted, each once."""
    if pages is None:
        return list(range(1, count + 1))
    chosen: set[int] = set()
    if isinstance(pages, str):
        for piece in pages.split(","):
            m = _RANGE.match(piece)
            if m is None or not (m.group(1) or m.group(3)) or (not m.group(2) and m.group(3)):
                raise DocumentError(
                    f"pages={pages!r} is not a page selection; write page numbers and ranges such as '1-3,7,10-'"
                )
            first = int(m.group(1)) if m.group(1) else 1
            last = (int(m.group(3)) if m.group(3) else count) if m.group(2) else first
            if first > last:
                raise DocumentError(f"pages={pages!r}: the range {piece.strip()!r} runs backwards")
            _check_page(first, count, name)
            _check_page(last, count, name)
            chosen.update(range(first, last + 1))
    else:
        numbers = [pages] if isinstance(pages, int) else list(pages)
        for n in numbers:
            if isinstance(n, bool) or not isinstance(n, int):
                raise DocumentError(f"pages must hold page numbers (ints), not {type(n).__name__}")
            _check_page(n, count, name)
        chosen.update(numbers)
    if not chosen:
        raise DocumentError("pages= chooses no page; leave it out to take every page")
    return sorted(chosen)


def _check_page(n: int, count: int, name: str) -> None:
    if not 1 <= n <= count:
        raise DocumentError(f"page {n} is not in {name!r}, which has pages 1 to {count} (pages are numbered from 1)")


_HAIR = 1 - 1e-9
"""pdfium rounds each side up (ceil(points * scale)): a hair under the exact scale keeps a side that is a
whole number of pixels (792 pt at 150 dpi: 1650) from becoming one more through a float's last digit."""


def render_scale(width_pt: float, height_pt: float, target: ImagePolicy | None, dpi: float | None) -> float:
    """Pixels per point for a page of ``width_pt`` x ``height_pt``: from ``dpi``, else to fit ``target``."""
    if dpi is not None:
        if dpi <= 0:
            raise DocumentError(f"dpi must be positive, not {dpi!r}")
        return dpi / POINTS_PER_INCH * _HAIR
    if target is None:
        return DEFAULT_DPI / POINTS_PER_INCH * _HAIR
    finest = MAX_TARGET_DPI / POINTS_PER_INCH
    fit_w, fit_h = target.target_size(max(1, round(width_pt * finest)), max(1, round(height_pt * finest)))
    return min(fit_w / width_pt, fit_h / height_pt) * _HAIR


def _render_page(
    pdf: Any, number: int, name: str, target: ImagePolicy | None, dpi: float | None, max_pixels: int
) -> DocumentPage:
    import pypdfium2 as pdfium

    try:
        page = pdf[number - 1]
    except pdfium.PdfiumError as exc:
        raise InvalidDocumentError(
            f"page {number} of the PDF {name!r} cannot be read ({exc}); the file is damaged"
        ) from None
    try:
        width_pt, height_pt = page.get_size()
        scale = render_scale(width_pt, height_pt, target, dpi)
        size = (math.ceil(width_pt * scale), math.ceil(height_pt * scale))
        if size[0] * size[1] > max_pixels:
            raise DocumentTooLargeError(
                f"page {number} of {name!r} ({width_pt:.0f} x {height_pt:.0f} pt) would be {size[0]}x{size[1]} pixels, "
                f"over max_pixels={max_pixels:,}; render it at a lower dpi="
            )
        bitmap = page.render(scale=scale, draw_annots=True)
        image = bitmap.to_pil()
    finally:
        page.close()
    if target is not None and dpi is None and not target.fits_size(*image.size):
        image = image.resize(target.target_size(*image.size), Image.Resampling.LANCZOS)
    return DocumentPage(
        number, _encode_page(image, f"{name.removesuffix('.pdf')}-page-{number}.png"), (width_pt, height_pt)
    )


def _encode_page(image: Image.Image, name: str) -> ImageHandle:
    """A page as PNG: lossless for text, and quick to write at the lowest compression."""
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)
    return image_from_bytes(buf.getvalue(), name)


def _ranges(numbers: Sequence[int]) -> str:
    """``[1, 2, 3, 7]`` -> ``"pages 1-3, 7"``."""
    spans: list[str] = []
    i = 0
    while i < len(numbers):
        j = i
        while j + 1 < len(numbers) and numbers[j + 1] == numbers[j] + 1:
            j += 1
        spans.append(f"{numbers[i]}-{numbers[j]}" if j > i else str(numbers[i]))
        i = j + 1
    return ("page " if len(numbers) == 1 else "pages ") + ", ".join(spans)
