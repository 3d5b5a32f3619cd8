"""vlmkit: images into vision-language models, local or cloud.

>>> import vlmkit as vk
>>> chat = vk.Chat()
>>> chat.add_user_message("Describe this image please", images=[vk.prepare_image("photo.jpg")])
>>> print(vk.llm("qwen2-vl-2b-instruct").respond(chat).content)

Importing vlmkit is light: llama.cpp loads with the first local model.
"""

from vlmkit._version import __version__
from vlmkit.chat import Chat
from vlmkit.client import (
    LLM,
    AsyncClient,
    AsyncLLM,
    AsyncPredictionStream,
    Client,
    PredictionStream,
    configure_default_client,
    get_default_client,
    list_downloaded_models,
    list_loaded_models,
    llm,
)
from vlmkit.errors import (
    BadRequestError,
    ClientClosedError,
    ClientError,
    ContextLengthError,
    DefaultClientAlreadyCreatedError,
    ImageError,
    ImageFetchError,
    ImageFormatMismatchError,
    ImageSourceError,
    ImageTooLargeError,
    InvalidImageError,
    InvalidMessageError,
    InvalidSettingError,
    ModelCapabilityError,
    ModelError,
    ModelLoadError,
    ModelNotFoundError,
    PredictionCancelledError,
    PredictionError,
    PredictionTimeoutError,
    ProviderError,
    QueueFullError,
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
from vlmkit.prediction import (
    ModelInfo,
    PredictionConfig,
    PredictionFragment,
    PredictionResult,
    PredictionStats,
    StopReason,
)
from vlmkit.providers import acompletion, completion, supports_vision

__all__ = [
    "LLM",
    "AsyncClient",
    "AsyncLLM",
    "AsyncPredictionStream",
    "BadRequestError",
    "Chat",
    "Client",
    "ClientClosedError",
    "ClientError",
    "ContextLengthError",
    "DefaultClientAlreadyCreatedError",
    "ImageError",
    "ImageFetchError",
    "ImageFormatMismatchError",
    "ImageHandle",
    "ImagePolicy",
    "ImageSourceError",
    "ImageTooLargeError",
    "InvalidImageError",
    "InvalidMessageError",
    "InvalidSettingError",
    "ModelCapabilityError",
    "ModelError",
    "ModelInfo",
    "ModelLoadError",
    "ModelNotFoundError",
    "PredictionCancelledError",
    "PredictionConfig",
    "PredictionError",
    "PredictionFragment",
    "PredictionResult",
    "PredictionStats",
    "PredictionStream",
    "PredictionTimeoutError",
    "ProviderError",
    "QueueFullError",
    "RenderedImage",
    "StopReason",
    "UnsupportedImageError",
    "VlmkitError",
    "__version__",
    "acompletion",
    "aprepare_image",
    "completion",
    "configure_default_client",
    "estimate_image_tokens",
    "get_default_client",
    "list_downloaded_models",
    "list_loaded_models",
    "llm",
    "prepare_image",
    "supports_vision",
]
