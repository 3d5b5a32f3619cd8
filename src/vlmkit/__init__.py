"""vlmkit: images into vision-language models, local or cloud."""

from vlmkit.chat import Chat
from vlmkit.errors import (
    BadRequestError,
    ImageError,
    ImageFetchError,
    ImageFormatMismatchError,
    ImageSourceError,
    ImageTooLargeError,
    InvalidImageError,
    InvalidMessageError,
    UnsupportedImageError,
    VlmkitError,
)
from vlmkit.images import (
    ImageHandle,
    ImagePolicy,
    RenderedImage,
    aprepare_image,
    estimate_image_tokens,
    prepare_image,
)
from vlmkit.providers import acompletion, completion, supports_vision

__version__ = "0.1.0"

__all__ = [
    "BadRequestError",
    "Chat",
    "ImageError",
    "ImageFetchError",
    "ImageFormatMismatchError",
    "ImageHandle",
    "ImagePolicy",
    "ImageSourceError",
    "ImageTooLargeError",
    "InvalidImageError",
    "InvalidMessageError",
    "RenderedImage",
    "UnsupportedImageError",
    "VlmkitError",
    "__version__",
    "acompletion",
    "aprepare_image",
    "completion",
    "estimate_image_tokens",
    "prepare_image",
    "supports_vision",
]
