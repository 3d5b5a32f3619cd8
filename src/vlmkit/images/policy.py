"""What a target accepts as an image, and the policies of the targets vlmkit ships with.

A policy is a frozen (hashable) value: rendered results are cached by ``(identifier, policy)``.
Figures come from each provider's documentation; where a provider resizes larger images itself, the
policy's long edge is the size it would resize to, so we never send pixels that are thrown away.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from vlmkit.images.sniff import ImageFormat

MB = 1024 * 1024


@dataclass(frozen=True)
class ImagePolicy:
    """Limits a rendered image must satisfy. ``None`` means no limit of that kind."""

    name: str
    formats: frozenset[ImageFormat]
    max_width: int | None = None
    max_height: int | None = None
    max_long_edge: int | None = None
    max_pixels: int | None = None
    max_bytes: int | None = None
    """Limit on the encoded image bytes."""
    max_base64_bytes: int | None = None
    """Limit on the base64 form (what some APIs count, e.g. Anthropic's 5 MB)."""
    animated: bool = False
    """Whether animated GIF/WebP may be sent as they are; otherwise the first frame is sent."""
    applies_exif_orientation: bool = False
    """Whether the target rotates by EXIF itself; otherwise rotated images are re-encoded upright."""
    modes: frozenset[str] | None = None
    """Pillow modes the target decodes (e.g. no CMYK JPEG for stb_image); ``None`` means any."""
    jpeg_quality: int = 85
    """Quality of the first JPEG/WebP attempt when re-encoding; lowered only to meet a byte limit."""

    def replace(self, **changes: object) -> ImagePolicy:
        """A copy with some fields changed, e.g. ``LLAMA_CPP.replace(max_long_edge=512)``."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def accepts_format(self, fmt: ImageFormat) -> bool:
        return fmt in self.formats

    def fits_size(self, width: int, height: int) -> bool:
        """Whether ``width`` x ``height`` is within every dimension limit."""
        return (
            (self.max_width is None or width <= self.max_width)
            and (self.max_height is None or height <= self.max_height)
            and (self.max_long_edge is None or max(width, height) <= self.max_long_edge)
            and (self.max_pixels is None or width * height <= self.max_pixels)
        )

    def fits_bytes(self, size: int) -> bool:
        """Whether an encoded image of ``size`` bytes is within the byte limits."""
        return (self.max_bytes is None or size <= self.max_bytes) and (
            self.max_base64_bytes is None or base64_length(size) <= self.max_base64_bytes
        )

    def scale_for(self, width: int, height: int) -> float:
        """The largest scale (at most 1) that brings ``width`` x ``height`` within the limits."""
        scale = 1.0
        if self.max_width is not None:
            scale = min(scale, self.max_width / width)
        if self.max_height is not None:
            scale = min(scale, self.max_height / height)
        if self.max_long_edge is not None:
            scale = min(scale, self.max_long_edge / max(width, height))
        if self.max_pixels is not None:
            scale = min(scale, (self.max_pixels / (width * height)) ** 0.5)
        return scale

    def target_size(self, width: int, height: int) -> tuple[int, int]:
        """``width`` x ``height`` scaled down (aspect kept, rounded down) to fit every dimension limit."""
        scale = self.scale_for(width, height)
        if scale >= 1.0:
            return width, height
        return max(1, int(width * scale)), max(1, int(height * scale))


def base64_length(size: int) -> int:
    """Length of the base64 encoding of ``size`` bytes (with padding, no newlines)."""
    return 4 * ((size + 2) // 3)


_WEB = frozenset({ImageFormat.JPEG, ImageFormat.PNG, ImageFormat.WEBP, ImageFormat.GIF})

# OpenAI: PNG, JPEG, WebP, non-animated GIF; up to 20 MB each. High detail fits the image within
# 2048 x 2048 before tiling, so larger pixels are never seen by the model.
OPENAI = ImagePolicy(
    name="openai",
    formats=_WEB,
    max_long_edge=2048,
    max_bytes=20 * MB,
)

# Anthropic: JPEG, PNG, GIF, WebP; 8000 x 8000 at most, 5 MB per image (of the base64 form).
# Images over 1568 px on the long edge or about 1.15 megapixels are downscaled by the API itself,
# at a cost in latency, so we send that size. The documented largest sizes that are not resized
# (1092x1092, 951x1268, 896x1344, 819x1456, 784x1568) set the pixel limit at 784 x 1568.
ANTHROPIC = ImagePolicy(
    name="anthropic",
    formats=_WEB,
    max_width=8000,
    max_height=8000,
    max_long_edge=1568,
    max_pixels=784 * 1568,
    max_base64_bytes=5 * MB,
)

# Gemini: PNG, JPEG, WebP, HEIC, HEIF; inline requests up to 20 MB in all; large images are scaled
# down to fit 3072 x 3072 before tiling.
GEMINI = ImagePolicy(
    name="gemini",
    formats=frozenset({ImageFormat.JPEG, ImageFormat.PNG, ImageFormat.WEBP, ImageFormat.HEIC, ImageFormat.HEIF}),
    max_long_edge=3072,
    max_base64_bytes=20 * MB,
)

# AWS Bedrock Converse: png, jpeg, gif, webp; 3.75 MB and 8000 x 8000 per image.
BEDROCK = ImagePolicy(
    name="bedrock",
    formats=_WEB,
    max_width=8000,
    max_height=8000,
    max_bytes=3_750_000,
)

# Ollama decodes with Go's image packages (JPEG and PNG) and does not apply EXIF orientation.
OLLAMA = ImagePolicy(
    name="ollama",
    formats=frozenset({ImageFormat.JPEG, ImageFormat.PNG}),
    max_long_edge=2048,
    max_bytes=20 * MB,
)

# The embedded llama.cpp engine: mtmd decodes with stb_image, which reads baseline and progressive
# JPEG (not CMYK), PNG, BMP and the first frame of GIF, and ignores EXIF orientation.
LLAMA_CPP = ImagePolicy(
    name="llama.cpp",
    formats=frozenset({ImageFormat.JPEG, ImageFormat.PNG, ImageFormat.BMP, ImageFormat.GIF}),
    max_long_edge=2048,
    modes=frozenset({"1", "L", "LA", "P", "RGB", "RGBA", "I;16"}),
)

POLICIES: dict[str, ImagePolicy] = {p.name: p for p in (OPENAI, ANTHROPIC, GEMINI, BEDROCK, OLLAMA, LLAMA_CPP)}
