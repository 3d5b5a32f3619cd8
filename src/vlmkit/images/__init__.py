"""The image input layer: sources, sniffing, validation, policies, rendering, safe fetching, token estimates.

Whatever a user hands in as an image becomes an :class:`ImageHandle` (sniffed from its bytes and
validated from its header), and ``handle.render(policy)`` gives bytes that a target accepts.
:mod:`vlmkit.images.resolve` reads the images a request names (the only image I/O besides
``prepare_image`` itself).
"""

from vlmkit.images.document import Document, DocumentPage, prepare_document
from vlmkit.images.fetch import FetchedImage, FetchOptions, FetchRemedies, afetch_image, fetch_image
from vlmkit.images.handle import ImageHandle, image_from_bytes
from vlmkit.images.policy import (
    ANTHROPIC,
    BEDROCK,
    GEMINI,
    LLAMA_CPP,
    OLLAMA,
    OPENAI,
    POLICIES,
    ImagePolicy,
)
from vlmkit.images.probe import DEFAULT_MAX_PIXELS
from vlmkit.images.render import RenderedImage, render, render_cache
from vlmkit.images.resolve import ResolveOptions, aresolve_images, resolve_images
from vlmkit.images.sniff import ImageFormat, sniff_format
from vlmkit.images.source import aprepare_image, prepare_image
from vlmkit.images.tokens import estimate_image_tokens
from vlmkit.images.video import Video, VideoFrame, prepare_video

__all__ = [
    "ANTHROPIC",
    "BEDROCK",
    "DEFAULT_MAX_PIXELS",
    "GEMINI",
    "LLAMA_CPP",
    "OLLAMA",
    "OPENAI",
    "POLICIES",
    "Document",
    "DocumentPage",
    "FetchOptions",
    "FetchRemedies",
    "FetchedImage",
    "ImageFormat",
    "ImageHandle",
    "ImagePolicy",
    "RenderedImage",
    "ResolveOptions",
    "Video",
    "VideoFrame",
    "afetch_image",
    "aprepare_image",
    "aresolve_images",
    "estimate_image_tokens",
    "fetch_image",
    "image_from_bytes",
    "prepare_document",
    "prepare_image",
    "prepare_video",
    "render",
    "render_cache",
    "resolve_images",
    "sniff_format",
]
