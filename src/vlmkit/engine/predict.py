"""One prediction on a loaded model: prompt in (reusing what the KV cache holds), tokens out.

The caller holds the model's turn (see :mod:`vlmkit.engine.queue`); this module does the work:
render the chat with the model's template, render and tokenize the images (bounded by ``detail``),
evaluate what is new (:mod:`vlmkit.engine.reuse`), then sample until a stop condition, streaming
text fragments that never split a UTF-8 character or show part of a stop string.

A ``response_format`` constrains sampling with a grammar (:mod:`vlmkit.engine.json_grammar`), so a
reply that ends is JSON of the schema. The reply is returned as text with its stop reason and
parsed by the SDK (:func:`vlmkit.prediction.parse_structured`): a reply cut by a limit still
reaches the server as text, which answers it as OpenAI does (``finish_reason: "length"``).
"""

from __future__ import annotations

import codecs
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

from vlmkit.chat import Chat, ChatMessage
from vlmkit.engine.images import ImageInput, render_inputs, shrink_edge
from vlmkit.engine.json_grammar import json_schema_grammar
from vlmkit.engine.loaded import LoadedModel
from vlmkit.engine.model import Chunk
from vlmkit.engine.native import clear_recent_errors
from vlmkit.engine.prompt import Prompt
from vlmkit.errors import ModelCapabilityError, PredictionCancelledError, PredictionError
from vlmkit.prediction import (
    PredictionConfig,
    PredictionFragment,
    PredictionResult,
    PredictionStats,
    StopReason,
    json_schema_of,
)

DEFAULTS = PredictionConfig(temperature=0.8, top_k=40, top_p=0.95, min_p=0.05, repeat_penalty=1.1)

Emit = Callable[[PredictionFragment], None]


def run(
    lm: LoadedModel,
    chat: Chat | Sequence[ChatMessage],
    config: PredictionConfig | None,
    *,
    emit: Emit | None = None,
    on_first_token: Callable[[], None] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> PredictionResult:
    cfg = DEFAULTS.merged(config)
    t0 = time.perf_counter()
    clear_recent_errors()  # a failure here is explained by this prediction's log lines alone
    native = lm.native
    prompt = lm.template.render(chat, native.marker)
    if prompt.images and not native.vision:
        raise ModelCapabilityError(
            f"model {lm.key!r} does not support images (it was loaded without a vision projector); "
            "use a vision model, or load this one with its mmproj file",
            model=lm.key,
        )
    if cfg.cpu_threads:
        native.set_threads(cfg.cpu_threads)
    schema = json_schema_of(cfg.response_format)
    grammar = json_schema_grammar(schema) if schema is not None else None  # a bad schema fails before any work

    chunks = _tokenize(lm, prompt, cfg)
    try:
        reserve = 1 if cfg.max_tokens is None else max(1, min(cfg.max_tokens, 16))
        report = lm.state.evaluate(native, chunks, lm.embeddings, should_stop=should_stop, reserve=reserve)
    finally:
        native.free_chunks(chunks)
    t_prompt = time.perf_counter()

    sampler = native.make_sampler(
        temperature=cfg.temperature or 0.0,
        top_k=cfg.top_k or 0,
        top_p=cfg.top_p if cfg.top_p is not None else 1.0,
        min_p=cfg.min_p or 0.0,
        repeat_penalty=cfg.repeat_penalty or 1.0,
        seed=cfg.seed if cfg.seed is not None else random.getrandbits(32),
        grammar=grammar,
    )
    out = _Output(cfg.stop, emit)
    stop_reason = StopReason.MAX_PREDICTED_TOKENS_REACHED
    n_predicted = 0
    t_first: float | None = None
    try:
        while True:
            if cfg.max_tokens is not None and n_predicted >= cfg.max_tokens:
                stop_reason = StopReason.MAX_PREDICTED_TOKENS_REACHED
                break
            if should_stop():
                stop_reason = StopReason.USER_STOPPED
                break
            token = native.sample(sampler)
            if t_first is None:
                t_first = time.perf_counter()
                if on_first_token is not None:
                    on_first_token()
            if native.is_eog(token):
                stop_reason = StopReason.EOS_FOUND
                break
            n_predicted += 1
            if out.feed(native.piece(token)):
                stop_reason = StopReason.STOP_STRING_FOUND
                break
            if lm.state.n_cells + 1 >= native.n_ctx:  # cells, not positions: M-RoPE images take fewer of those
                stop_reason = StopReason.CONTEXT_LENGTH_REACHED
                break
            if cfg.max_tokens is not None and n_predicted >= cfg.max_tokens:
                continue  # no need to evaluate a token nothing will follow
            native.decode_tokens([token], lm.state.n_past)
            lm.state.push_token(token)
    except PredictionCancelledError:
        raise
    except PredictionError:
        raise
    except Exception as exc:  # llama.cpp failures surface as PredictionError with the cause
        raise PredictionError(f"generation failed: {exc}") from exc
    finally:
        native.free_sampler(sampler)
    out.finish()
    t_end = time.perf_counter()

    gen_time = t_end - t_prompt
    stats = PredictionStats(
        stop_reason=stop_reason,
        prompt_tokens=report.prompt_tokens,
        predicted_tokens=n_predicted,
        cached_prompt_tokens=report.cached_tokens,
        images_encoded=report.images_encoded,
        images_reused=report.images_reused,
        time_to_first_token_sec=(t_first - t0) if t_first is not None else None,
        tokens_per_second=(n_predicted / gen_time) if n_predicted and gen_time > 0 else None,
        total_time_sec=t_end - t0,
    )
    return PredictionResult(content=out.text, stats=stats, model_info=lm.info)


def _tokenize(lm: LoadedModel, prompt: Prompt, cfg: PredictionConfig) -> list[Chunk]:
    """Tokenize with images rendered for ``detail``; with a token cap, shrink images until they fit."""
    text, images, where = prompt.text, prompt.images, prompt.locations
    edges: dict[int, int | None] = {}
    cap = cfg.detail if isinstance(cfg.detail, int) else None
    for _attempt in range(5):
        inputs = render_inputs(images, cfg.detail, edges, where)
        chunks = lm.native.tokenize_prompt(text, [(i.data, i.bitmap_id) for i in inputs], where)
        over = _over_cap(chunks, inputs, images, cap)
        if not over:
            return chunks
        lm.native.free_chunks(chunks)
        changed = False
        for index, tokens in over.items():
            detail = images[index].detail
            part_cap = detail if isinstance(detail, int) else cap
            edge = shrink_edge(inputs[index], tokens, part_cap) if part_cap is not None else None
            if edge is not None:
                edges[index] = edge
                changed = True
        if not changed:  # a fixed-size projector: its token count is what it is
            break
    inputs = render_inputs(images, cfg.detail, edges, where)
    return lm.native.tokenize_prompt(text, [(i.data, i.bitmap_id) for i in inputs], where)


def _over_cap(
    chunks: Sequence[Chunk], inputs: Sequence[ImageInput], images: Sequence[Any], cap: int | None
) -> dict[int, int]:
    per_id: dict[str, int] = {}
    for c in chunks:
        if c.is_image:
            per_id[c.image_id] = per_id.get(c.image_id, 0) + c.n_tokens
    over: dict[int, int] = {}
    for i, inp in enumerate(inputs):
        limit = images[i].detail if isinstance(images[i].detail, int) else cap
        n = per_id.get(inp.bitmap_id, 0)
        if limit is not None and n > limit:
            over[i] = n
    return over


class _Output:
    """Accumulates decoded text; emits what is safe to show (no half character, no partial stop string)."""

    def __init__(self, stop: Sequence[str], emit: Emit | None) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stop = [s for s in stop if s]
        self._hold = max((len(s) for s in self._stop), default=1) - 1
        self._emit = emit
        self._emitted = 0
        self._pending_tokens = 0
        self.text = ""
        self.stopped = False

    def feed(self, data: bytes) -> bool:
        """Add a token's bytes; True when a stop string has appeared (the text is cut before it)."""
        self.text += self._decoder.decode(data)
        self._pending_tokens += 1
        if self._stop:
            start = max(0, self._emitted - self._hold)
            hits = [i for i in (self.text.find(s, start) for s in self._stop) if i >= 0]
            if hits:
                self.text = self.text[: min(hits)]
                self.stopped = True
                self._flush(len(self.text))
                return True
            self._flush(max(self._emitted, len(self.text) - self._hold))
        else:
            self._flush(len(self.text))
        return False

    def finish(self) -> None:
        if not self.stopped:
            self.text += self._decoder.decode(b"", final=True)
        self._flush(len(self.text))

    def _flush(self, upto: int) -> None:
        if upto > self._emitted:
            piece = self.text[self._emitted : upto]
            self._emitted = upto
            if self._emit is not None:
                self._emit(PredictionFragment(content=piece, tokens_count=self._pending_tokens))
            self._pending_tokens = 0
