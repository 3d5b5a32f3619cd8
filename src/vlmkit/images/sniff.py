"""What an image really is, read from its first bytes and never from a name, extension or header."""

from __future__ import annotations

from enum import Enum


class ImageFormat(str, Enum):
    """The image formats vlmkit reads. The value is the MIME type."""

    JPEG = "image/jpeg"
    PNG = "image/png"
    WEBP = "image/webp"
    GIF = "image/gif"
    BMP = "image/bmp"
    TIFF = "image/tiff"
    HEIF = "image/heif"
    HEIC = "image/heic"
    AVIF = "image/avif"

    @property
    def mime_type(self) -> str:
        return self.value

    @classmethod
    def from_mime(cls, mime: str) -> ImageFormat | None:
        """The format a MIME type names, accepting the common aliases (``image/jpg``...)."""
        key = mime.split(";", 1)[0].strip().lower()
        return _MIME_ALIASES.get(key)


_MIME_ALIASES: dict[str, ImageFormat] = {f.value: f for f in ImageFormat}
_MIME_ALIASES.update(
    {
        "image/jpg": ImageFormat.JPEG,
        "image/pjpeg": ImageFormat.JPEG,
        "image/x-png": ImageFormat.PNG,
        "image/x-ms-bmp": ImageFormat.BMP,
        "image/x-bmp": ImageFormat.BMP,
        "image/tif": ImageFormat.TIFF,
        "image/heic-sequence": ImageFormat.HEIC,
        "image/heif-sequence": ImageFormat.HEIF,
    }
)

# ISO base media file brands (the `ftyp` box) that mean an HEIF-family still image.
_AVIF_BRANDS = {b"avif", b"avis"}
_HEIC_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs"}
_HEIF_BRANDS = {b"mif1", b"msf1", b"mif2"}


def sniff_format(data: bytes | memoryview) -> ImageFormat | None:
    """The image format of ``data`` from its magic numbers, or ``None`` when it is no image we read."""
    head = bytes(data[:64])
    if head.startswith(b"\xff\xd8\xff"):
        return ImageFormat.JPEG
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return ImageFormat.PNG
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return ImageFormat.WEBP
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return ImageFormat.GIF
    if head[:2] == b"BM" and len(head) >= 26:
        return ImageFormat.BMP
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return ImageFormat.TIFF
    if head[4:8] == b"ftyp":
        return _sniff_isobmff(data)
    return None


def _sniff_isobmff(data: bytes | memoryview) -> ImageFormat | None:
    box_size = int.from_bytes(data[0:4], "big")
    if box_size < 16 or box_size > 4096 or len(data) < min(box_size, 64):
        box_size = min(len(data), 64)
    major = bytes(data[8:12])
    compatible = {bytes(data[i : i + 4]) for i in range(16, box_size - 3, 4)}
    brands = {major} | compatible
    if major in _AVIF_BRANDS or (major in _HEIF_BRANDS and brands & _AVIF_BRANDS):
        return ImageFormat.AVIF
    if major in _HEIC_BRANDS or (major in _HEIF_BRANDS and brands & _HEIC_BRANDS):
        return ImageFormat.HEIC
    if major in _HEIF_BRANDS:
        return ImageFormat.HEIF
    return None


def describe_non_image(data: bytes | memoryview) -> str:
    """A short human name for data that is not an image vlmkit reads, for error messages."""
    head = bytes(data[:512])
    stripped = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if not head:
        return "empty data (0 bytes)"
    if stripped.startswith(b"<svg") or (stripped.startswith(b"<?xml") and b"<svg" in stripped):
        return "an SVG (vector) image, which vision models do not read; rasterise it to PNG first"
    if head.startswith(b"%PDF"):
        return "a PDF document; read it with vlmkit.prepare_document(...), which renders its pages as images"
    if head[4:8] == b"ftyp":
        brand = head[8:12].decode("latin-1", "replace")
        return f"an ISO media file of brand {brand!r} (video or another non-image container)"
    for magic, name in _OTHER_MAGIC:
        if head.startswith(magic):
            return name
    if stripped.startswith((b"<!doctype html", b"<html")):
        return "an HTML page (a URL that answered with a web page instead of an image?)"
    if _looks_like_text(head):
        preview = head[:40].decode("utf-8", "replace").replace("\n", " ")
        return f"text ({preview!r}...)" if len(head) > 40 else f"text ({preview!r})"
    return f"unrecognised binary data starting with {head[:8].hex(' ')}"


_OTHER_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x00\x00\x01\x00", "an ICO icon file; convert it to PNG first"),
    (b"8BPS", "a Photoshop (PSD) file; export it to PNG or JPEG first"),
    (b"PK\x03\x04", "a ZIP archive"),
    (b"\x1f\x8b", "gzip-compressed data"),
    (b"\x00\x00\x00\x0cjP  ", "a JPEG 2000 image, which vlmkit does not read; convert it to PNG first"),
    (b"\xff\x0a", "a JPEG XL image, which vlmkit does not read; convert it to PNG first"),
    (b"\x00\x00\x00\x0cJXL ", "a JPEG XL image, which vlmkit does not read; convert it to PNG first"),
    (b"OggS", "Ogg audio/video"),
    (b"ID3", "MP3 audio"),
    (b"\x1aE\xdf\xa3", "a Matroska/WebM video"),
)


def _looks_like_text(head: bytes) -> bool:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(ch.isprintable() or ch in "\t\r\n" for ch in text)
