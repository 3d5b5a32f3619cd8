"""Which providers read a PDF themselves, and up to what: a document goes to them as the PDF when it
fits, and as its rendered pages otherwise (and to every other provider).

The limits are each provider's documented ones for a PDF sent inline: Anthropic (32 MB request, 100
pages), Gemini (20 MB inline request, 1000 pages), Bedrock Converse (4.5 MB per document; Claude's
100 pages), OpenAI file inputs (32 MB, 100 pages). Only a whole document goes natively: pages chosen
out of a PDF are sent as those pages, never as the file that holds the others too.
"""

from __future__ import annotations

from dataclasses import dataclass

from vlmkit.images.document import Document
from vlmkit.images.policy import MB, base64_length


@dataclass(frozen=True)
class PdfLimits:
    max_pages: int
    max_bytes: int
    """Of the PDF as it goes in the body (base64 where the body is JSON)."""
    base64: bool = True


NATIVE_PDF: dict[str, PdfLimits] = {
    "anthropic": PdfLimits(max_pages=100, max_bytes=32 * MB),
    "gemini": PdfLimits(max_pages=1000, max_bytes=20 * MB),
    "bedrock": PdfLimits(max_pages=100, max_bytes=4_500_000, base64=False),
    "openai": PdfLimits(max_pages=100, max_bytes=32 * MB),
}
"""By provider name (not by protocol: the OpenAI-compatible family does not read file parts)."""


def sends_native(document: Document, limits: PdfLimits | None) -> bool:
    """Whether ``document`` goes as the PDF itself under ``limits`` (None: the provider reads no PDFs)."""
    if limits is None or not document.whole or document.page_count > limits.max_pages:
        return False
    size = base64_length(document.size_bytes) if limits.base64 else document.size_bytes
    return size <= limits.max_bytes
