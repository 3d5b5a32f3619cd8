"""Reading an image's header and checking its structure, without decoding its pixels."""

from __future__ import annotations

import io
from dataclasses import dataclass
from functools import cache

from PIL import Image

from vlmkit.errors import ImageTooLargeError, InvalidImageError
from vlmkit.images.sniff import ImageFormat

DEFAULT_MAX_PIXELS = 100_000_000
"""Images with more pixels than this are refused from their header (decompression bombs)."""

_EXIF_ORIENTATION = 0x0112


def image_summary(mime_type: str | None, width: int | None, height: int | None, size_bytes: int | None) -> str:
    """``image/jpeg, 1024x768, 183,412 bytes``: what an image is, in a few words (for reprs)."""
    size = f"{size_bytes:,} bytes" if size_bytes is not None else "size unknown"
    return f"{mime_type or 'unknown type'}, {width}x{height}, {size}"


@dataclass(frozen=True)
class ImageInfo:
    width: int
    height: int
    frames: int
    orientation: int
    """EXIF orientation, 1 (upright) to 8."""
    mode: str
    """Pillow's pixel mode of the stored image, e.g. ``RGB``, ``RGBA``, ``CMYK``."""

    @property
    def display_size(self) -> tuple[int, int]:
        """Width and height as the image is meant to be seen (EXIF orientation applied)."""
        return (self.height, self.width) if self.orientation in (5, 6, 7, 8) else (self.width, self.height)


@cache
def register_plugins() -> None:
    """Teach Pillow to read HEIC/HEIF (AVIF is built into Pillow >= 11.3). Done once, on first need."""
    from pillow_heif import register_heif_opener

    register_heif_opener()


def open_image(data: bytes, fmt: ImageFormat) -> Image.Image:
    """Open ``data`` lazily with Pillow (reads the header only), through the format's own opener.

    ``Image.open`` would also apply Pillow's process-wide decompression-bomb limit
    (``Image.MAX_IMAGE_PIXELS``): a warning on stderr above about 89 million pixels, an error that
    names no remedy above 179 million, whatever vlmkit's own ``max_pixels`` says. vlmkit checks the
    pixel count itself (:func:`probe`, before any pixels are decoded), so it opens images the way
    ``Image.open`` does minus that check, and leaves Pillow's setting alone for everyone else.
    Pillow still checks in two places after opening, decoding a TIFF's pixels and seeking to a GIF
    frame that grows the image: over twice its limit, :func:`over_pillow_limit` says what to do;
    between the two, Pillow warns (only reached when ``max_pixels`` is above its limit).
    """
    if fmt in (ImageFormat.HEIC, ImageFormat.HEIF):
        register_plugins()
    name = _PILLOW_FORMAT[fmt]
    if name not in Image.OPEN:
        Image.init()
    factory, _ = Image.OPEN[name]
    return factory(io.BytesIO(data), "")


_PILLOW_FORMAT = {
    ImageFormat.JPEG: "JPEG",
    ImageFormat.PNG: "PNG",
    ImageFormat.WEBP: "WEBP",
    ImageFormat.GIF: "GIF",
    ImageFormat.BMP: "BMP",
    ImageFormat.TIFF: "TIFF",
    ImageFormat.HEIC: "HEIF",
    ImageFormat.HEIF: "HEIF",
    ImageFormat.AVIF: "AVIF",
}


def probe(data: bytes, fmt: ImageFormat, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageInfo:
    """Header facts of ``data`` (already sniffed as ``fmt``), refusing truncated files and bombs.

    No pixel buffer is allocated: the pixel limit is checked from the header alone.
    """
    check_structure(data, fmt)
    what = fmt.name
    try:
        with open_image(data, fmt) as im:
            width, height = im.size
            if width <= 0 or height <= 0:
                raise InvalidImageError(f"the {what} header gives an empty size {width}x{height}")
            if width * height > max_pixels:
                raise _too_large(what, width, height, max_pixels)
            frames = int(getattr(im, "n_frames", 1))
            grown_width, grown_height = im.size  # seeking through a GIF's frames can grow it
            if grown_width * grown_height > max_pixels:
                raise _too_large(what, grown_width, grown_height, max_pixels)
            orientation = _orientation(im, data, fmt)
            mode = im.mode
    except Image.DecompressionBombError:  # a GIF frame reaching outside the image's size, past twice Pillow's limit
        if max_pixels >= 2 * (Image.MAX_IMAGE_PIXELS or 0):
            raise over_pillow_limit(what) from None
        raise ImageTooLargeError(  # past max_pixels as well: vlmkit's limit is the one to name
            f"the {what} image has a frame of more than {max_pixels:,} pixels, reaching outside the size its header "
            "gives: over the limit; it is refused before decoding. Downscale it first, or raise max_pixels "
            "if you trust the source"
        ) from None
    except InvalidImageError:
        raise
    except ImageTooLargeError:
        raise
    except Exception as exc:  # Pillow's parsers raise many types on malformed headers.
        raise InvalidImageError(
            f"the data starts like a {what} image but its header cannot be read ({exc}); "
            f"the file is corrupt or not really a {what}"
        ) from None
    if orientation not in range(1, 9):
        orientation = 1
    return ImageInfo(width, height, max(frames, 1), orientation, mode)


def _orientation(im: Image.Image, data: bytes, fmt: ImageFormat) -> int:
    """The EXIF orientation tag, read without decoding pixels."""
    if fmt is ImageFormat.PNG and "exif" not in im.info:
        # Pillow's PNG getexif() decodes the whole image to look for an eXIf chunk after the pixels;
        # find the chunk ourselves instead.
        at = data.find(b"eXIf")
        if at < 4:
            return 1
        size = int.from_bytes(data[at - 4 : at], "big")
        exif = Image.Exif()
        exif.load(data[at + 4 : at + 4 + size])
        return int(exif.get(_EXIF_ORIENTATION, 1))
    return int(im.getexif().get(_EXIF_ORIENTATION, 1))


def _too_large(what: str, width: int, height: int, max_pixels: int) -> ImageTooLargeError:
    return ImageTooLargeError(
        f"the {what} image is {width}x{height} = {width * height:,} pixels, over the limit of "
        f"{max_pixels:,}; it is refused before decoding. Downscale it first, or raise max_pixels "
        "if you trust the source"
    )


def over_pillow_limit(what: str) -> ImageTooLargeError:
    """Pillow refused to decode part of an image that vlmkit's ``max_pixels`` allowed (a frame reaching
    outside the image's size, or the pixels of a TIFF), under its own process-wide limit."""
    return ImageTooLargeError(
        f"the {what} image needs more than {2 * (Image.MAX_IMAGE_PIXELS or 0):,} pixels decoded at once, over "
        "Pillow's decompression-bomb limit (PIL.Image.MAX_IMAGE_PIXELS), which applies beside vlmkit's "
        "max_pixels; downscale the image first, or raise PIL.Image.MAX_IMAGE_PIXELS if you trust the source"
    )


def check_structure(data: bytes, fmt: ImageFormat) -> None:
    """Cheap checks that the file is complete, so a truncated image is never sent on as it is."""
    what = fmt.name
    if fmt is ImageFormat.JPEG:
        sos = _jpeg_scan_start(data)
        if sos < 0:
            raise InvalidImageError(f"the {what} data has no image scan: it is truncated or corrupt")
        if data.rfind(b"\xff\xd9") < sos:
            raise InvalidImageError(f"the {what} data ends before its end-of-image marker: it is truncated")
    elif fmt is ImageFormat.PNG:
        last_idat = data.rfind(b"IDAT")
        if last_idat < 0 or data.rfind(b"IEND") < last_idat:
            raise InvalidImageError(f"the {what} data ends before its IEND chunk: it is truncated")
    elif fmt is ImageFormat.GIF:
        if not data[-1024:].rstrip(b"\x00").endswith(b";"):
            raise InvalidImageError(f"the {what} data ends without its trailer: it is truncated")
    elif fmt is ImageFormat.WEBP:
        declared = int.from_bytes(data[4:8], "little") + 8
        if len(data) < declared:
            raise InvalidImageError(
                f"the {what} data is {len(data)} bytes but its header says {declared}: it is truncated"
            )
    elif fmt is ImageFormat.BMP:
        declared = int.from_bytes(data[2:6], "little")
        offset = int.from_bytes(data[10:14], "little")
        if len(data) <= offset or (declared and len(data) < declared):
            raise InvalidImageError(f"the {what} data is shorter than its header says: it is truncated")


def _jpeg_scan_start(data: bytes) -> int:
    """Offset of the first start-of-scan marker, walking the marker segments; -1 if none."""
    pos, end = 2, len(data)
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            return -1
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xDA:
            return pos
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    return -1
