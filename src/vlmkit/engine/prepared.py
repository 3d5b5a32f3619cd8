"""Images prepared once: each image's mtmd chunks, kept with its identity and budget across turns.

Rendering, decoding and preprocessing an image (scaling, normalising, cutting it into tiles) costs
tens of milliseconds, and a chat sends every image again on every turn. mtmd's tokenizer cuts the
prompt's text at each media marker and tokenizes every piece of text on its own; an image becomes
its begin tokens, its chunks (one, or one per tile with the text between them) and its end
tokens, none of which depends on the text around it. So each image is tokenized once, alone (the
marker as the whole text), and kept as a :class:`PreparedImage` under its content identifier and
:class:`~vlmkit.engine.images.Budget`; every prompt is then put together by :func:`assemble` from
its text pieces, tokenized as mtmd tokenizes them, and those chunks: the chunks mtmd_tokenize
would give for the whole prompt, without touching an image already seen.

Two projectors number or align an image by its place in the prompt (HunyuanVL's image index,
DeepSeek-V4's padding to a position): for them the whole prompt is still tokenized by mtmd on each
turn, from the prepared image's input (:attr:`PreparedImages.whole_prompt`).

A prepared image holds its preprocessed pixels (float32), a few megabytes: the cache of a model is
bounded by an estimate of those bytes, and trimmed only between turns, never under a prompt that
is using its images.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from vlmkit.chat import ImagePart
from vlmkit.engine.images import Budget, ImageInput, grow_edge, natural_edge, render_input, shrink_edge
from vlmkit.engine.model import Chunk, NativeModel
from vlmkit.errors import ImageError, PredictionError

DEFAULT_PREPARED_BYTES = 512 * 1024 * 1024
MAX_ATTEMPTS = 8  # renderings tried to meet a token cap or floor

# Projectors whose image chunks depend on where the image is in the prompt (mtmd.cpp's add_media).
WHOLE_PROMPT_PROJECTORS = frozenset({"hunyuanvl", "deepseek4v"})


@dataclass(eq=False)
class PreparedImage:
    """One image at one budget, tokenized alone: its chunks (owned), and what they cost to keep."""

    key: str
    """The exact pixels: ``<content identifier>:<width>x<height>`` (see :class:`ImageInput`)."""
    chunks: list[Chunk]
    weight: int
    """Estimated bytes held (preprocessed float32 pixels, and the input when kept)."""
    source: ImageInput | None = None
    """The input, kept where the whole prompt is tokenized each turn."""

    @property
    def n_tokens(self) -> int:
        return sum(c.n_tokens for c in self.chunks if c.is_image)

    @property
    def size(self) -> str:
        """The size sent to the encoder, ``"WxH"``."""
        return self.key.rpartition(":")[2]


class PreparedImages:
    """A model's prepared images by (content identifier, budget), least recently used out first.

    Used under the model's turn only (one prediction at a time), so it takes no lock. ``free``
    releases a prepared image's native chunks; ``pixels_per_chunk`` is the projector's input size
    (image_size squared), for the estimate of what a prepared image holds.
    """

    def __init__(
        self,
        free: Callable[[Sequence[Chunk]], None],
        *,
        whole_prompt: bool = False,
        pixels_per_chunk: int = 0,
        max_bytes: int = DEFAULT_PREPARED_BYTES,
    ) -> None:
        self.whole_prompt = whole_prompt
        self.pixels_per_chunk = pixels_per_chunk
        self.max_bytes = max_bytes
        self._free = free
        self._items: OrderedDict[tuple[str, Budget], PreparedImage] = OrderedDict()
        self._bytes = 0

    def get(self, identifier: str, budget: Budget) -> PreparedImage | None:
        item = self._items.get((identifier, budget))
        if item is not None:
            self._items.move_to_end((identifier, budget))
        return item

    def put(self, identifier: str, budget: Budget, item: PreparedImage) -> None:
        """Keep ``item`` (nothing is evicted before :meth:`trim`)."""
        old = self._items.pop((identifier, budget), None)
        if old is not None and old is not item:
            self._release(old)
        self._items[(identifier, budget)] = item
        self._bytes += item.weight

    def trim(self, keep: Collection[PreparedImage] = ()) -> None:
        """Free the least recently used images until within the bound, except those in ``keep``."""
        for key in list(self._items):
            if self._bytes <= self.max_bytes:
                break
            item = self._items[key]
            if any(item is k for k in keep):
                continue
            del self._items[key]
            self._release(item)

    def clear(self) -> None:
        for item in self._items.values():
            self._release(item)
        self._items.clear()

    def _release(self, item: PreparedImage) -> None:
        self._bytes -= item.weight
        self._free(item.chunks)
        item.chunks = []

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)

    def prepare(self, native: NativeModel, part: ImagePart, budget: Budget, where: str) -> PreparedImage:
        """Render ``part`` within ``budget`` and tokenize it alone; a token cap shrinks it until it
        fits, a token floor enlarges it until it reaches it (as far as the projector lets it).

        An image that cannot be rendered or decoded raises its :class:`~vlmkit.errors.ImageError`
        located at ``where``.
        """
        edge, grow = budget.long_edge, None
        for attempt in range(MAX_ATTEMPTS):
            try:
                image = render_input(part, edge, grow_to=grow)
            except ImageError as exc:
                exc.add_location(where)
                raise
            chunks = native.tokenize_prompt(native.marker, [(image.data, image.key)], [where])
            tokens = sum(c.n_tokens for c in chunks if c.is_image)
            if attempt == MAX_ATTEMPTS - 1:
                break
            if budget.floor is not None and tokens < budget.floor:
                target = grow_edge(image, tokens, budget.floor)
            elif budget.cap is not None and tokens > budget.cap:
                target = shrink_edge(image, tokens, budget.cap)
            else:
                break
            if target is None:  # a fixed-size projector, or the longest edge: its count is what it is
                break
            native.free_chunks(chunks)
            # at most its own size the image is scaled down as the policy does; past it, scaled up
            edge, grow = (target, None) if target <= natural_edge(part) else (None, target)
        n_image_chunks = sum(1 for c in chunks if c.is_image)
        weight = 12 * max(image.width * image.height, n_image_chunks * self.pixels_per_chunk)  # RGB float32
        if self.whole_prompt:
            weight += image.nbytes
        return PreparedImage(image.key, chunks, weight, image if self.whole_prompt else None)


def occurrence_ids(prepared: Sequence[PreparedImage]) -> list[str]:
    """Each image's chunk id in a prompt: its key and which occurrence of it this is (``key@n``).

    :func:`vlmkit.engine.reuse.units_of` drops the occurrence again, so that the same picture
    twice shares its embeddings while each occurrence counts as an image.
    """
    seen: dict[str, int] = {}
    out = []
    for p in prepared:
        n = seen.get(p.key, 0)
        seen[p.key] = n + 1
        out.append(f"{p.key}@{n}")
    return out


def assemble(native: NativeModel, text: str, prepared: Sequence[PreparedImage]) -> list[Chunk]:
    """The chunks of ``text`` with ``prepared`` at its media markers, as mtmd_tokenize gives them.

    Text between markers is tokenized piece by piece (special tokens parsed, none added), adjacent
    text is merged into one chunk, and each image's chunks are borrowed from its prepared image.
    """
    if not prepared:
        return [Chunk(tokens=native.tokenize(text))] if text else []
    pieces = text.split(native.marker)
    if len(pieces) != len(prepared) + 1:
        raise PredictionError(
            "llama.cpp could not tokenize the prompt: the number of images does not match the image markers"
        )
    out: list[Chunk] = []

    def add_text(tokens: Sequence[int]) -> None:
        if not tokens:
            return
        if out and not out[-1].is_image:
            assert out[-1].tokens is not None
            out[-1].tokens.extend(tokens)
        else:
            out.append(Chunk(tokens=list(tokens)))

    add_text(native.tokenize(pieces[0]) if pieces[0] else [])
    for image, image_id, piece in zip(prepared, occurrence_ids(prepared), pieces[1:], strict=True):
        for c in image.chunks:
            if c.is_image:
                out.append(Chunk(image=c.image, image_id=image_id, n_tokens=c.n_tokens, n_pos=c.n_pos, owned=False))
            else:
                add_text(c.tokens or [])
        add_text(native.tokenize(piece) if piece else [])
    return out
