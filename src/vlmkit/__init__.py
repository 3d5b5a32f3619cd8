"""vlmkit: images into vision-language models, local or cloud."""

from vlmkit.errors import (
    ImageError,
    ImageFetchError,
    ImageFormatMismatchError,
    ImageSourceError,
    ImageTooLargeError,
    InvalidImageError,
    UnsupportedImageError,
    VlmkitError,
)
from vlmkit.providers import acompletion, completion, supports_vision

__version__ = "0.1.0"

__all__ = [
    "ImageError",
    "ImageFetchError",
    "ImageFormatMismatchError",
    "ImageSourceError",
    "ImageTooLargeError",
    "InvalidImageError",
    "UnsupportedImageError",
    "VlmkitError",
    "__version__",
    "acompletion",
    "completion",
    "supports_vision",
]
