"""Reuse across turns: the evaluated prefix in the KV cache, and a bounded cache of image embeddings.

llama-cpp-python's chat handlers clear the KV cache and re-encode every image on every call. Here a
loaded model remembers what its KV cache holds, as a list of *units*: one per text token and one
per image chunk (named by the image's content identifier, so the same picture always has the same
name). A new prompt is tokenized, compared with that list, and only the part after the longest
common prefix is evaluated. The follow-up turn of a chat therefore evaluates just the new message.

Image chunks that must be evaluated again (a NEW chat about a picture seen before, or a prefix
that changed before the image) take their embeddings from :class:`EmbeddingCache` instead of the
vision encoder, which is most of the cost of a first turn; behind it, the encoder cache on disk
(:mod:`vlmkit.engine.encoder_cache`) keeps them for the next process.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from vlmkit.engine.encoder_cache import EncoderCache
from vlmkit.errors import ContextLengthError, PredictionCancelledError

Unit = tuple[str, object]  # ("t", token id) or ("i", image chunk key)

DEFAULT_EMBEDDING_CACHE_BYTES = 256 * 1024 * 1024


class ChunkLike(Protocol):
    tokens: list[int] | None
    image_id: str
    n_tokens: int

    @property
    def is_image(self) -> bool: ...


class Evaluator(Protocol):
    """What :class:`PrefixState` needs from a model (see :class:`vlmkit.engine.model.NativeModel`)."""

    n_ctx: int
    n_embd_inp: int

    def decode_tokens(self, tokens: Sequence[int], n_past: int, *, want_logits: bool = True) -> int: ...
    def encode_image(self, chunk: Any) -> np.ndarray: ...
    def encode_images(self, chunks: Sequence[Any]) -> list[np.ndarray]: ...
    def decode_image(self, chunk: Any, embd: np.ndarray, n_past: int) -> int: ...
    def trim(self, n_past: int) -> bool: ...
    def clear(self) -> None: ...


class EmbeddingCache:
    """Image-chunk embeddings by key, least recently used first out, bounded in bytes.

    With ``disk``, a miss here is looked for there (under ``namespace``, which names the projector
    and its preprocessing) and every embedding put here is also written there.
    """

    def __init__(
        self,
        max_bytes: int = DEFAULT_EMBEDDING_CACHE_BYTES,
        *,
        disk: EncoderCache | None = None,
        namespace: str = "",
    ) -> None:
        self.max_bytes = max_bytes
        self.disk = disk
        self.namespace = namespace
        self._items: OrderedDict[str, np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: str, n_values: int | None = None) -> np.ndarray | None:
        """The embeddings of ``key`` (``n_values`` of them, when given), from memory or disk; else None."""
        with self._lock:
            item = self._items.get(key)
            if item is not None:
                self._items.move_to_end(key)
                return item
        if self.disk is None:
            return None
        item = self.disk.get(f"{self.namespace}|{key}", n_values)
        if item is not None:
            self._remember(key, item)
        return item

    def put(self, key: str, embd: np.ndarray) -> None:
        self._remember(key, embd)
        if self.disk is not None:
            self.disk.put(f"{self.namespace}|{key}", embd)

    def flush(self) -> None:
        """Wait for the writes to disk (so that another process, or the next load, finds them)."""
        if self.disk is not None:
            self.disk.flush()

    def _remember(self, key: str, embd: np.ndarray) -> None:
        if embd.nbytes > self.max_bytes:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old.nbytes
            self._items[key] = embd
            self._bytes += embd.nbytes
            while self._bytes > self.max_bytes and self._items:
                _, dropped = self._items.popitem(last=False)
                self._bytes -= dropped.nbytes

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items


@dataclass
class EvalReport:
    """What evaluating a prompt did."""

    prompt_tokens: int = 0
    cached_tokens: int = 0
    images_encoded: int = 0
    images_reused: int = 0
    n_past: int = 0


def chunk_key(image_id: str, index: int) -> str:
    """Key of the ``index``-th image chunk of an image whose bitmap id is ``image_id``.

    Bitmap ids are ``<content key>@<occurrence>``; the occurrence is dropped so that the same picture
    sent twice (or in another chat) shares its embeddings.
    """
    return f"{image_id.split('@', 1)[0]}#{index}"


def units_of(chunks: Sequence[ChunkLike]) -> tuple[list[Unit], list[int]]:
    """The units of a tokenized prompt, and for each chunk the index of its first unit."""
    units: list[Unit] = []
    firsts: list[int] = []
    seen: dict[str, int] = {}
    for c in chunks:
        firsts.append(len(units))
        if c.is_image:
            k = seen.get(c.image_id, 0)
            seen[c.image_id] = k + 1
            units.append(("i", chunk_key(c.image_id, k)))
        else:
            units.extend(("t", t) for t in (c.tokens or ()))
    return units, firsts


def cells_of(chunk: ChunkLike) -> int:
    """The KV cache cells a chunk fills: one per text token, one per image token (not per position)."""
    return chunk.n_tokens if chunk.is_image else len(chunk.tokens or ())


def common_prefix(a: Sequence[Unit], b: Sequence[Unit]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


@dataclass
class PrefixState:
    """What a model's KV cache holds: its units, and where each starts in positions and in cells.

    Positions and cells part ways with M-RoPE (Qwen-VL): an image chunk fills a cell per token but
    advances the position only by its number of rows or columns, whichever is larger. Evaluation
    and trimming go by positions; the context's limit is on cells (:attr:`n_cells`).
    """

    units: list[Unit] = field(default_factory=list)
    starts: list[int] = field(default_factory=list)
    cells: list[int] = field(default_factory=list)  # the cells in use before each unit
    n_past: int = 0  # the next position
    n_cells: int = 0  # the cells in use

    def reset(self) -> None:
        self.units.clear()
        self.starts.clear()
        self.cells.clear()
        self.n_past = 0
        self.n_cells = 0

    def _truncate(self, keep: int) -> None:
        if keep < len(self.units):
            self.n_past = self.starts[keep]
            self.n_cells = self.cells[keep]
            del self.units[keep:]
            del self.starts[keep:]
            del self.cells[keep:]

    def _push(self, unit: Unit, n_pos: int, n_cells: int) -> None:
        self.units.append(unit)
        self.starts.append(self.n_past)
        self.cells.append(self.n_cells)
        self.n_past += n_pos
        self.n_cells += n_cells

    @staticmethod
    def _encode_missing(
        model: Evaluator,
        chunks: Sequence[ChunkLike],
        units: list[Unit],
        firsts: list[int],
        keep: int,
        cache: EmbeddingCache,
        should_stop: Callable[[], bool],
    ) -> dict[str, tuple[str, np.ndarray]]:
        """Encode together, before any is decoded, the image chunks to evaluate that no cache holds:
        several images of one turn (or tiles of one image) take one encoder pass where the
        projector batches. Returns ``(image id, embeddings)`` by chunk key (also put in ``cache``)."""
        missing: dict[str, ChunkLike] = {}
        for ci, c in enumerate(chunks):
            key = str(units[firsts[ci]][1])
            fresh_needed = c.is_image and firsts[ci] >= keep and key not in missing
            if fresh_needed and cache.get(key, c.n_tokens * model.n_embd_inp) is None:
                missing[key] = c
        if len(missing) < 2:
            return {}
        if should_stop():
            raise PredictionCancelledError("the prediction was cancelled while reading the prompt")
        fresh = {}
        for (key, c), embd in zip(missing.items(), model.encode_images(list(missing.values())), strict=True):
            cache.put(key, embd)
            fresh[key] = (c.image_id, embd)
        return fresh

    def push_token(self, token: int) -> None:
        """Record a generated token that was just evaluated at ``n_past``."""
        self._push(("t", token), 1, 1)

    def evaluate(
        self,
        model: Evaluator,
        chunks: Sequence[ChunkLike],
        cache: EmbeddingCache,
        *,
        should_stop: Callable[[], bool] = lambda: False,
        reserve: int = 1,
    ) -> EvalReport:
        """Bring the KV cache to hold exactly ``chunks`` (logits ready for the last token).

        Evaluates only what differs from what is already there; image chunks come from ``cache``
        when they can. ``reserve`` cells must stay free for generation.
        """
        units, firsts = units_of(chunks)
        report = EvalReport(prompt_tokens=sum(cells_of(c) for c in chunks))
        if report.prompt_tokens + reserve > model.n_ctx:
            raise ContextLengthError(
                f"the prompt takes {report.prompt_tokens} tokens but the model's context holds {model.n_ctx} "
                f"(and {reserve} must stay free for the reply); shorten the chat or send fewer images, "
                "lower the image detail, or load the model with a larger context_length"
            )

        keep = common_prefix(self.units, units)
        if keep == len(units):
            keep -= 1  # the last token is evaluated again: its logits start the reply
            while keep > 0 and units[keep][0] == "i":
                keep -= 1
        if keep < len(self.units):
            if keep == 0 or not model.trim(self.starts[keep]):
                model.clear()
                keep = 0
            self._truncate(keep)

        encoded: set[str] = set()
        touched: set[str] = set()
        fresh = self._encode_missing(model, chunks, units, firsts, keep, cache, should_stop)
        encoded.update(image_id for image_id, _ in fresh.values())
        for ci, c in enumerate(chunks):
            first = firsts[ci]
            last_chunk = ci == len(chunks) - 1
            if c.is_image:
                touched.add(c.image_id)
                if first < keep:
                    report.cached_tokens += c.n_tokens
                    continue
                if should_stop():
                    raise PredictionCancelledError("the prediction was cancelled while reading the prompt")
                key = str(units[first][1])
                embd = fresh[key][1] if key in fresh else None
                if embd is None:
                    embd = cache.get(key, c.n_tokens * model.n_embd_inp)
                if embd is None:
                    embd = model.encode_image(c)
                    cache.put(key, embd)
                    encoded.add(c.image_id)
                n_after = model.decode_image(c, embd, self.n_past)
                self._push(units[first], n_after - self.n_past, c.n_tokens)
            else:
                tokens = c.tokens or []
                skip = max(0, min(len(tokens), keep - first))
                report.cached_tokens += skip
                todo = tokens[skip:]
                if not todo:
                    continue
                if should_stop():
                    raise PredictionCancelledError("the prediction was cancelled while reading the prompt")
                step = 256
                for s in range(0, len(todo), step):
                    part = todo[s : s + step]
                    start = self.n_past
                    model.decode_tokens(part, start, want_logits=last_chunk and s + step >= len(todo))
                    for i, t in enumerate(part):
                        self.units.append(("t", t))
                        self.starts.append(start + i)
                        self.cells.append(self.n_cells + i)
                    self.n_past = start + len(part)
                    self.n_cells += len(part)
                    if s + step < len(todo) and should_stop():
                        raise PredictionCancelledError("the prediction was cancelled while reading the prompt")
        report.images_encoded = len(encoded)
        report.images_reused = len(touched - encoded)
        report.n_past = self.n_past
        return report
