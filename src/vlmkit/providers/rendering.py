"""A request's images as a provider accepts them: rendered with the provider's policy, and any error
naming the part of the request it is in (``messages[2].content[1]``)."""

from __future__ import annotations

from typing import cast

from vlmkit.errors import BadRequestError, VlmkitError
from vlmkit.images import ImagePolicy, RenderedImage
from vlmkit.providers.base import ProviderConfig
from vlmkit.providers.request import ImageInput


def render(image: ImageInput, policy: ImagePolicy) -> RenderedImage:
    """The image's bytes as ``policy`` accepts them; any image error names the part it is in.

    A provider module puts the result's text in its body as a :class:`~vlmkit.providers.jsonbody.Blob`
    (``Blob(rendered.base64)``), so that :func:`~vlmkit.providers.jsonbody.encode_json` copies it once.
    """
    try:
        if image.handle is None:  # resolved before building for providers that do not fetch
            raise BadRequestError(f"the image URL {image.url!r} was not fetched")
        return image.handle.render(policy)
    except VlmkitError as exc:
        if image.location and not exc.location:
            exc.add_location(image.location)
        raise


def sent_policy(module: object, cfg: ProviderConfig, image: ImageInput) -> ImagePolicy:
    """The policy ``image`` is rendered with for this provider: its module's ``image_policy`` where it
    has one (the policy can depend on the image's detail), else the provider's policy."""
    choose = getattr(module, "image_policy", None)
    return cast(ImagePolicy, choose(cfg, image.detail)) if choose is not None else cfg.policy


def reference_error(image: ImageInput, provider: str, hint: str) -> BadRequestError:
    """The error for a ``gs://``/``s3://`` reference sent to a provider that cannot read it."""
    source = image.handle.source if image.handle else image.url
    exc = BadRequestError(f"{provider} cannot read {source!r}: {hint}")
    if image.location:
        exc.add_location(image.location)
    return exc
