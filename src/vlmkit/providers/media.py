"""Which providers read a PDF or a video themselves, and up to what: such a file goes to them as
itself when it fits, and as images otherwise (a PDF's pages, a video's frames), as to every other
provider.

The limits are each provider's documented ones for a file sent inline. PDFs: Anthropic (32 MB
request, 100 pages), Gemini (20 MB inline request, 1000 pages), Bedrock Converse (4.5 MB per
document; Claude's 100 pages), OpenAI file inputs (32 MB, 100 pages). Videos: Gemini (20 MB inline
request; MP4 and MOV, MPEG, WebM, FLV, 3GPP). Only a whole document goes as the file: pages
chosen out of a PDF are sent as those pages, never as the file that holds the others too. A video
goes whole where it fits (the provider samples it itself); its frames where it does not.
"""

from __future__ import annotations

from dataclasses import dataclass

from vlmkit.images.document import PDF_MIME, Document
from vlmkit.images.policy import MB, base64_length
from vlmkit.images.video import Video


@dataclass(frozen=True)
class FileLimits:
    max_bytes: int
    """Of the file as it goes in the body (its base64: every body here is JSON)."""
    max_pages: int | None = None


GEMINI_VIDEO = frozenset({"video/mp4", "video/mpeg", "video/webm", "video/x-flv", "video/3gpp"})
"""The video types Gemini reads that vlmkit names the same way (an AVI or WMV goes as frames)."""

NATIVE: dict[str, dict[str, FileLimits]] = {
    "anthropic": {PDF_MIME: FileLimits(32 * MB, max_pages=100)},
    "gemini": {PDF_MIME: FileLimits(20 * MB, max_pages=1000)} | {m: FileLimits(20 * MB) for m in GEMINI_VIDEO},
    "bedrock": {PDF_MIME: FileLimits(4_500_000, max_pages=100)},
    "openai": {PDF_MIME: FileLimits(32 * MB, max_pages=100)},
}
"""By provider name (not by protocol: the OpenAI-compatible family reads no file parts), then MIME type."""


def sends_native(media: Document | Video, provider: str) -> bool:
    """Whether ``media`` goes to ``provider`` as the file itself."""
    limits = NATIVE.get(provider, {}).get(media.mime_type)
    if limits is None:
        return False
    if isinstance(media, Document) and (
        not media.whole or (limits.max_pages is not None and media.page_count > limits.max_pages)
    ):
        return False
    return base64_length(media.size_bytes) <= limits.max_bytes
