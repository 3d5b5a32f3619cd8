"""PDFs made for the tests: drawn with pdfium (text and filled rectangles on known pages), or written
byte by byte where pdfium cannot make them (encrypted, no pages)."""

from __future__ import annotations

import ctypes
import io
from collections.abc import Sequence
from dataclasses import dataclass, field

import pypdfium2 as pdfium
import pypdfium2.raw as raw

LETTER = (612.0, 792.0)
A4_LANDSCAPE = (842.0, 595.0)


@dataclass(frozen=True)
class PageSpec:
    size: tuple[float, float] = LETTER
    text: str = ""
    rects: Sequence[tuple[float, float, float, float]] = field(default_factory=tuple)
    """Green filled rectangles, (left, top, right, bottom) in points from the page's top-left corner."""


def make_pdf(pages: Sequence[PageSpec]) -> bytes:
    doc = pdfium.PdfDocument.new()
    try:
        for spec in pages:
            width, height = spec.size
            page = doc.new_page(width, height)
            for left, top, right, bottom in spec.rects:
                rect = raw.FPDFPageObj_CreateNewRect(left, height - bottom, right - left, bottom - top)
                raw.FPDFPageObj_SetFillColor(rect, 0, 200, 0, 255)
                raw.FPDFPath_SetDrawMode(rect, raw.FPDF_FILLMODE_ALTERNATE, False)
                raw.FPDFPage_InsertObject(page.raw, rect)
            if spec.text:
                text = raw.FPDFPageObj_NewTextObj(doc.raw, b"Helvetica", ctypes.c_float(36))
                encoded = (spec.text + "\x00").encode("utf-16-le")
                buf = ctypes.create_string_buffer(encoded, len(encoded))
                raw.FPDFText_SetText(text, ctypes.cast(buf, ctypes.POINTER(raw.FPDF_WCHAR)))
                raw.FPDFPageObj_Transform(text, 1, 0, 0, 1, 36, height - 72)
                raw.FPDFPage_InsertObject(page.raw, text)
            page.gen_content()
            page.close()
        out = io.BytesIO()
        doc.save(out)
        return out.getvalue()
    finally:
        doc.close()


def written_pdf(objects: Sequence[bytes], trailer: bytes = b"") -> bytes:
    """A PDF of ``objects`` (numbered from 1; object 1 the catalog) with a correct cross-reference table."""
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R %s >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, trailer, xref)
    return bytes(out)


def no_page_pdf() -> bytes:
    return written_pdf([b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [] /Count 0 >>"])


def encrypted_pdf() -> bytes:
    """One page under the standard security handler, with a user password that is not empty."""
    return written_pdf(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] >>",
            b"<< /Filter /Standard /V 1 /R 2 /O <%s> /U <%s> /P -44 >>" % (b"ab" * 32, b"cd" * 32),
        ],
        b"/Encrypt 4 0 R /ID [<%s> <%s>]" % (b"01" * 16, b"01" * 16),
    )


def make_video(seconds: float = 3.0, fps: int = 10, size: tuple[int, int] = (160, 120)) -> bytes:
    """An MP4 (MPEG-4 Part 2) whose frame i shows a white block at x = 5 * i on black: a frame's
    number can be read back from its pixels through any compression."""
    import av
    import numpy as np

    width, height = size
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as out:
        stream = out.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.bit_rate = 2_000_000
        for i in range(round(seconds * fps)):
            pixels = np.zeros((height, width, 3), np.uint8)
            pixels[40:80, 5 * i : 5 * i + 10] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()


def frame_number(image_bytes: bytes) -> int:
    """The number :func:`make_video` drew into a frame: where its white block starts, / 5."""
    import numpy as np
    from PIL import Image

    with Image.open(io.BytesIO(image_bytes)) as im:
        row = np.asarray(im.convert("L"))[60]
    return round(int(np.nonzero(row > 128)[0].min()) / 5)
