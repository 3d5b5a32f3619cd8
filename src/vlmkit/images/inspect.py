"""What one target would be sent for an image, and what that changed: the facts behind ``vlmkit image
inspect`` and the server's ``POST /v1/images/inspect``.

Rendering decides (:mod:`vlmkit.images.render`); this module only names what it did, in the words a
person debugging an image wants: untouched, or converted (another format), first frame (animation
dropped), rotated (EXIF orientation baked in), downscaled, recompressed (same format and size, new
bytes: a byte limit, or pixels the target cannot decode). Token estimates are the documented ones
(:mod:`vlmkit.images.tokens`), computed on the size that is sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vlmkit._types import Detail
from vlmkit.images.handle import ImageHandle
from vlmkit.images.policy import ImagePolicy
from vlmkit.images.render import RenderedImage, needs_change
from vlmkit.images.tokens import TOKEN_RULES

__all__ = ["TargetReport", "changes_of", "image_facts", "inspect_target"]


@dataclass(frozen=True)
class TargetReport:
    """What ``policy``'s target gets for an image: the rendered bytes, why and how they changed, their tokens."""

    target: str
    rendered: RenderedImage
    reasons: tuple[str, ...]
    """Why the original bytes would not do (empty when they are sent untouched)."""
    changes: tuple[str, ...]
    """What rendering did: ``converted``, ``first frame``, ``rotated``, ``downscaled``, ``recompressed``."""
    tokens: int | None
    """The documented estimate for the target's token rule, or None where the model decides (local models)."""
    token_rule: str | None

    @property
    def untouched(self) -> bool:
        return not self.rendered.changed

    def to_dict(self) -> dict[str, Any]:
        out = self.rendered
        return {
            "target": self.target,
            "untouched": self.untouched,
            "changes": list(self.changes),
            "why": list(self.reasons),
            "mime_type": out.mime_type,
            "width": out.width,
            "height": out.height,
            "bytes": len(out.data),
            "tokens": self.tokens,
            "token_rule": self.token_rule,
        }


def changes_of(handle: ImageHandle, policy: ImagePolicy, rendered: RenderedImage) -> tuple[str, ...]:
    """What turning ``handle`` into ``rendered`` for ``policy`` did (empty when it passed through)."""
    if not rendered.changed:
        return ()
    changes: list[str] = []
    if rendered.mime_type != handle.mime_type:
        changes.append("converted")
    if handle.animated and not policy.animated:
        changes.append("first frame")
    if handle.orientation != 1 and not policy.applies_exif_orientation:
        changes.append("rotated")
    if (
        handle.width is not None
        and handle.height is not None
        and rendered.width * rendered.height < (handle.width * handle.height)
    ):
        changes.append("downscaled")
    if not changes:
        changes.append("recompressed")
    return tuple(changes)


def inspect_target(
    handle: ImageHandle, policy: ImagePolicy, *, token_rule: str | None = None, detail: Detail = "auto"
) -> TargetReport:
    """Render ``handle`` for ``policy`` (cached, as every send is) and say what that did.

    ``token_rule`` (``openai``, ``anthropic`` or ``gemini``) prices the sent size in tokens; None
    leaves the count to the model (a local model's projector decides it).
    """
    rendered = handle.render(policy)
    reasons = tuple(needs_change(handle, policy))
    tokens = None
    if token_rule is not None:
        tokens = TOKEN_RULES[token_rule](rendered.width, rendered.height, detail)
    return TargetReport(policy.name, rendered, reasons, changes_of(handle, policy, rendered), tokens, token_rule)


def image_facts(handle: ImageHandle) -> dict[str, Any]:
    """What the image itself is, sniffed and probed: type, size, frames, orientation, pixels, identity."""
    return {
        "name": handle.name,
        "identifier": handle.identifier,
        "mime_type": handle.mime_type,
        "width": handle.width,
        "height": handle.height,
        "frames": handle.frames,
        "exif_orientation": handle.orientation,
        "mode": handle.mode,
        "bytes": handle.size_bytes,
    }
