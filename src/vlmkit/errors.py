"""vlmkit's one error hierarchy.

Every error vlmkit raises on purpose is a :class:`VlmkitError`. Each message says what was wrong and
what to do about it. ``status_code`` is the HTTP status the server answers with for that error, so
bad input is a 4xx everywhere and never a 500.
"""

from __future__ import annotations


class VlmkitError(Exception):
    """Base class of every error vlmkit raises on purpose."""

    status_code: int = 500

    location: str | None = None
    """Where in a request the error was found, e.g. ``messages[2].content[1]``."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.detail = message

    def add_location(self, outer: str) -> None:
        """Record that the error happened inside ``outer`` (called from the innermost level outwards)."""
        self.location = f"{outer}.{self.location}" if self.location else outer
        self.message = f"{self.location}: {self.detail}"
        self.args = (self.message, *self.args[1:])


class BadRequestError(VlmkitError):
    """The caller's input is wrong (a bad image, a malformed message): always the caller's to fix."""

    status_code = 400


class InvalidMessageError(BadRequestError):
    """A chat message or content part is malformed."""

    @classmethod
    def at(cls, message: str, where: str) -> InvalidMessageError:
        """The error for a bad part of a request at ``where`` (``messages[2].content[1]``)."""
        exc = cls(message)
        exc.add_location(where)
        return exc


class UnknownFileError(InvalidMessageError):
    """An image part names an uploaded file the server does not have (never uploaded, deleted, or
    uploaded before the server restarted): error code ``file_not_found`` on the server's faces."""


class InvalidSettingError(BadRequestError, ValueError):
    """A prediction or load setting is out of range, of the wrong type, or unknown.

    Also a ``ValueError``, so code that validates settings the usual Python way still catches it.
    """


# --- images -------------------------------------------------------------------------------------


class ImageError(BadRequestError):
    """Something is wrong with an image the caller handed in."""


class ImageSourceError(ImageError):
    """The thing handed in as an image is not a file, URL or image data vlmkit can read."""


class UnsupportedImageError(ImageError):
    """The bytes are not an image format vlmkit reads (SVG, PDF, text, unknown data)."""


class ImageFormatMismatchError(ImageError):
    """A declared MIME type (``format=``) disagrees with what the bytes really are."""

    def __init__(self, message: str, *, declared: str, actual: str) -> None:
        super().__init__(message)
        self.declared = declared
        self.actual = actual


class InvalidImageError(ImageError):
    """The data starts like an image but is truncated or corrupt."""


class ImageTooLargeError(ImageError):
    """The image is over a pixel or byte limit and cannot be brought under it."""


class ImageFetchError(ImageError):
    """An image URL was refused (unsafe address, too large, too slow) or could not be fetched."""


# --- models and engine --------------------------------------------------------------------------


class ModelError(VlmkitError):
    """Something about a model: finding it, fetching it, loading it or running it."""


class ModelNotFoundError(ModelError):
    """No model answers to that key, repository or path."""

    status_code = 404


class ModelCapabilityError(ModelError, BadRequestError):
    """The model cannot do what was asked (an image sent to a text-only model)."""

    status_code = 400

    def __init__(self, message: str, *, model: str) -> None:
        super().__init__(message)
        self.model = model


class ModelLoadError(ModelError):
    """The model files exist but llama.cpp could not load them."""

    status_code = 500


class ModelDownloadError(ModelError):
    """A model file could not be downloaded; nothing half-written was left behind."""

    status_code = 502


class HubUnreachableError(ModelDownloadError):
    """The Hugging Face hub cannot be reached (offline, firewall, DNS)."""

    status_code = 503


class PredictionError(VlmkitError):
    """A prediction failed while it ran."""

    status_code = 500


class StructuredOutputError(PredictionError):
    """A reply asked for as structured output (``response_format``) does not parse or fit the schema.

    The grammar keeps a local model's reply to the schema, so this is a reply cut short (by the token
    limit, the context window or a stop string; the message names the limit to raise) or a remote
    model that did not keep to the schema. ``content`` is the reply as it came, ``stop_reason`` why
    it ended (a :class:`~vlmkit.prediction.StopReason` value).
    """

    status_code = 422

    def __init__(self, message: str, *, content: str, stop_reason: str) -> None:
        super().__init__(message)
        self.content = content
        self.stop_reason = stop_reason


class QueueFullError(PredictionError):
    """Too many callers are already waiting for this model."""

    status_code = 429

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PredictionCancelledError(PredictionError):
    """The prediction was cancelled before it could finish."""

    status_code = 499


class PredictionTimeoutError(PredictionError):
    """The prediction took longer than its deadline."""

    status_code = 504


class ContextLengthError(PredictionError, BadRequestError):
    """The prompt alone does not fit in the model's context window."""

    status_code = 400


class ChatTemplateError(PredictionError, BadRequestError):
    """The model's chat template refused the chat (e.g. roles that do not alternate)."""

    status_code = 400


# --- providers ----------------------------------------------------------------------------------


class ProviderError(VlmkitError):
    """A model provider answered with an error, or could not be reached.

    ``provider`` names the provider (``"openai"``, ``"anthropic"``, ...), ``status_code`` is the HTTP
    status it answered with (or the status vlmkit reports for it), and ``message`` carries the
    provider's own words, so the cause is never hidden behind a generic failure.
    """

    status_code = 502

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        status_code: int | None = None,
        body: object = None,
    ) -> None:
        super().__init__(message)
        self.provider = provider
        if status_code is not None:
            self.status_code = status_code
        self.body = body
        """The provider's decoded error body, when it sent one."""


class ProviderBadRequestError(ProviderError, BadRequestError):
    """The provider refused the request as malformed (HTTP 400 or 422)."""

    status_code = 400


class ContextWindowExceededError(ProviderBadRequestError):
    """The prompt (text and images) is longer than the model's context window."""


class AuthenticationError(ProviderError):
    """The API key is missing, wrong or expired (HTTP 401)."""

    status_code = 401


class PermissionDeniedError(ProviderError):
    """The key is valid but may not use this model or resource (HTTP 403)."""

    status_code = 403


class NotFoundError(ProviderError):
    """The model or endpoint does not exist at the provider (HTTP 404)."""

    status_code = 404


class RateLimitError(ProviderError):
    """The provider's rate limit or quota was hit (HTTP 429), still after the retries."""

    status_code = 429


class ServerError(ProviderError):
    """The provider failed (HTTP 5xx, or overloaded), still after the retries."""

    status_code = 502


class APIConnectionError(ProviderError):
    """The provider could not be reached (refused connection, DNS failure, broken stream)."""

    status_code = 502


class APITimeoutError(APIConnectionError):
    """The provider did not answer in time."""

    status_code = 504


# --- client -------------------------------------------------------------------------------------


class ClientError(VlmkitError):
    """The SDK client was used in a way it cannot serve (closed, configured too late)."""


class ClientClosedError(ClientError):
    """A client (or a model handle from it) was used after the client was closed."""


class DefaultClientAlreadyCreatedError(ClientError):
    """``configure_default_client`` was called after the default client was already in use."""


# --- tools --------------------------------------------------------------------------------------


class InvalidToolError(BadRequestError):
    """A tool definition, a tool call or a tool result is malformed: a schema that is not JSON Schema,
    arguments that do not parse as JSON, a tool result answering no call, a ``tool_choice`` naming no
    tool. ``location`` names the part (``tools[1].function.parameters``, ``messages[3].tool_call_id``)."""


# --- batch --------------------------------------------------------------------------------------


class BatchJobError(ProviderError):
    """A provider's batch job ended without answering a request (failed, expired or cancelled)."""

    status_code = 502


# --- media: grounding, documents, video -----------------------------------------------------------


class GroundingError(BadRequestError):
    """Coordinates in an answer cannot be mapped: an unknown model convention, or no image to map them to."""


class DocumentError(BadRequestError):
    """A PDF handed in as a source cannot be used as given (a bad page selection, setting or file)."""


class InvalidDocumentError(DocumentError):
    """The PDF is truncated, damaged, or not a PDF at all."""


class EncryptedDocumentError(DocumentError):
    """The PDF is encrypted and no (or a wrong) password was given."""


class EmptyDocumentError(DocumentError):
    """The PDF has no pages."""


class DocumentTooLargeError(DocumentError):
    """More pages (or larger pages) than the limit allows; the message names the limit and how to choose fewer."""


class VideoError(BadRequestError):
    """A video or animation handed in as a source cannot be used as given (a bad setting or file)."""


class InvalidVideoError(VideoError):
    """The file is no video or animation vlmkit reads, or it is damaged."""


class TooManyImagesError(BadRequestError):
    """A request holds more images than the provider takes in one request (pages and frames included)."""


class VideoTooLargeError(VideoError):
    """Sampling would go over a limit (frames, bytes, tokens); the message names it and how to get under it."""


class ConfigError(VlmkitError):
    """The server's config file is missing, unreadable or says something that cannot be served."""
