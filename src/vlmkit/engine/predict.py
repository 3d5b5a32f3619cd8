"""One prediction on a loaded model: prompt in (reusing what the KV cache holds), tokens out.

The caller holds the model's turn (see :mod:`vlmkit.engine.queue`); this module does the work:
render the chat with the model's template, tokenize it with its images (each image rendered and
preprocessed once for its ``detail``, then kept: :mod:`vlmkit.engine.prepared`), evaluate what is
new (:mod:`vlmkit.engine.reuse`), then sample until a stop condition, streaming text fragments that
never split a UTF-8 character or show part of a stop string.

A ``response_format`` constrains sampling with a grammar (:mod:`vlmkit.engine.json_grammar`), so a
reply that ends is JSON of the schema. The reply is returned as text with its stop reason and
parsed by the SDK (:func:`vlmkit.prediction.parse_structured`): a reply cut by a limit still
reaches the server as text, which answers it as OpenAI does (``finish_reason: "length"``).

Tools (:mod:`vlmkit.engine.tool_calls`): the chat template shows them; a required call is
constrained by a grammar to a declared tool's name and valid arguments (and its text is not streamed
as fragments: it is the result's ``tool_calls``), a call the model may choose is read from its reply.
``n`` other than 1 is refused here: one prediction makes one choice (the faces that take ``n`` ask
for each choice in turn).
"""

from __future__ import annotations

import codecs
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

from vlmkit.chat import Chat, ChatMessage, ImagePart, TextPart
from vlmkit.engine.images import Budget, budget_of
from vlmkit.engine.json_grammar import json_schema_grammar
from vlmkit.engine.loaded import LoadedModel
from vlmkit.engine.model import Chunk
from vlmkit.engine.native import clear_recent_errors
from vlmkit.engine.prepared import PreparedImage, assemble, occurrence_ids
from vlmkit.engine.prompt import Prompt
from vlmkit.engine.reuse import chunk_key
from vlmkit.engine.tool_calls import (
    CALL_OPEN,
    HeldCalls,
    call_schema,
    forced,
    offered,
    parse_calls,
    read_forced_call,
)
from vlmkit.errors import (
    ContextLengthError,
    ModelCapabilityError,
    PredictionCancelledError,
    PredictionError,
    VlmkitError,
)
from vlmkit.images import ImageHandle
from vlmkit.images.grounding import SentImage
from vlmkit.images.render import transform_to
from vlmkit.prediction import (
    PredictionConfig,
    PredictionFragment,
    PredictionResult,
    PredictionStats,
    PreparedImageInfo,
    StopReason,
    json_schema_of,
    setting_error,
)
from vlmkit.tools import ToolCall, ToolChoice

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
    if cfg.n not in (None, 1):
        raise setting_error("n", f"one prediction makes one choice, not n={cfg.n}; ask for each choice in turn")
    t0 = time.perf_counter()
    clear_recent_errors()  # a failure here is explained by this prediction's log lines alone
    native = lm.native
    must_call = forced(cfg.tool_choice, cfg.tools)
    prompt = lm.template.render(chat, native.marker, cfg.tools)
    if must_call and (CALL_OPEN in lm.template.source or not lm.template.knows_tools):
        prompt = Prompt(prompt.text + CALL_OPEN + "\n", prompt.images, prompt.locations)  # the model's own format
    if prompt.images and not native.vision:
        refused = _no_vision(lm)
        refused.add_location(prompt.locations[0])  # the first image: where the request went wrong
        raise refused
    if cfg.cpu_threads:
        native.set_threads(cfg.cpu_threads)
    schema: dict[str, Any] | None
    held: HeldCalls | None = None
    if must_call:
        choice = cfg.tool_choice if isinstance(cfg.tool_choice, ToolChoice) else None
        schema = call_schema(cfg.tools, choice.name if choice else None)
        emit = None  # the call is the result's tool_calls, not text
    else:
        schema = json_schema_of(cfg.response_format)
        if emit is not None and offered(cfg.tool_choice, cfg.tools):
            emit = held = HeldCalls(emit)  # a call the model chooses is not shown as text
    grammar = json_schema_grammar(schema) if schema is not None else None  # a bad schema fails before any work

    prepared, n_preprocessed = _prepare_images(lm, prompt, cfg)
    try:
        chunks = _tokenize(lm, prompt, prepared)
        try:
            reserve = 1 if cfg.max_tokens is None else max(1, min(cfg.max_tokens, 16))
            report = lm.state.evaluate(native, chunks, lm.embeddings, should_stop=should_stop, reserve=reserve)
        finally:
            native.free_chunks(chunks)
    finally:
        lm.prepared.trim(keep=prepared)
    if lm.prepared.whole_prompt:
        n_preprocessed += len(prepared)  # mtmd preprocessed them again with the whole prompt
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
    if held is not None:
        held.flush()
    t_end = time.perf_counter()

    gen_time = t_end - t_prompt
    stats = PredictionStats(
        stop_reason=stop_reason,
        prompt_tokens=report.prompt_tokens,
        predicted_tokens=n_predicted,
        cached_prompt_tokens=report.cached_tokens,
        images_encoded=report.images_encoded,
        images_reused=report.images_reused,
        images_preprocessed=n_preprocessed,
        image_tokens=sum(p.n_tokens for p in prepared),
        image_sizes=[p.size for p in prepared],
        time_to_first_token_sec=(t_first - t0) if t_first is not None else None,
        tokens_per_second=(n_predicted / gen_time) if n_predicted and gen_time > 0 else None,
        total_time_sec=t_end - t0,
    )
    content, calls = out.text, list[ToolCall]()
    if must_call:
        call = read_forced_call(content) if stop_reason is StopReason.EOS_FOUND else None
        if call is not None:
            content, calls = "", [call]
    elif offered(cfg.tool_choice, cfg.tools):
        content, calls = parse_calls(content, cfg.tools)
    if calls:
        stats.stop_reason = StopReason.TOOL_CALLS
    return PredictionResult(
        content=content,
        stats=stats,
        model_info=lm.info,
        tool_calls=calls,
        sent_images=_sent_images(prompt, prepared),
    )


def settle(
    lm: LoadedModel,
    chat: Chat | Sequence[ChatMessage],
    reply: str,
    config: PredictionConfig | None,
    *,
    should_stop: Callable[[], bool] = lambda: False,
) -> int:
    """Bring the KV cache to hold ``chat`` with ``reply`` as the template writes it, so that the
    follow-up question finds its prefix evaluated and evaluates only its own message.

    After a reply, the cache holds the tokens as they were sampled, but the next prompt is the
    template's rendering of that reply (often other tokens: a space, a trimmed end, an end-of-turn
    marker), so without this the follow-up evaluates the whole reply again before its question.
    Run while the model is idle (the user reading, then typing); ``should_stop`` (someone waiting
    for the model) ends it between steps, keeping what was evaluated. Returns the tokens evaluated.
    Generation never changes: the cache holds exactly the rendered text's tokens.
    """
    cfg = DEFAULTS.merged(config)
    messages = [*(chat.messages if isinstance(chat, Chat) else chat), ChatMessage("assistant", [TextPart(reply)])]
    try:
        prompt = lm.template.render(messages, lm.native.marker, cfg.tools, add_generation_prompt=False)
    except VlmkitError:
        return 0  # a template that will not end on a reply: nothing to settle
    if prompt.images and not lm.native.vision:
        return 0
    prepared, _ = _prepare_images(lm, prompt, cfg)
    try:
        chunks = _tokenize(lm, prompt, prepared)
        try:
            report = lm.state.evaluate(lm.native, chunks, lm.embeddings, should_stop=should_stop)
        except (PredictionCancelledError, ContextLengthError):
            return 0
        finally:
            lm.native.free_chunks(chunks)
    finally:
        lm.prepared.trim(keep=prepared)
    return report.prompt_tokens - report.cached_tokens


def _sent_images(prompt: Prompt, prepared: Sequence[PreparedImage]) -> list[SentImage]:
    """Each image of the prompt with the transform to the size it was sent to mtmd at (for grounding)."""
    out = []
    for part, item in zip(prompt.images, prepared, strict=True):
        width, _, height = item.size.partition("x")
        out.append(SentImage(part.image, transform_to(part.image, int(width), int(height))))
    return out


def prepare(lm: LoadedModel, image: ImageHandle, config: PredictionConfig | None) -> PreparedImageInfo:
    """Prepare ``image`` for ``config``'s budget and encode it into the model's embedding caches
    (memory and disk), generating nothing: a later prompt about it encodes nothing.

    The caller holds the model's turn. Where a projector places an image by its position in the
    prompt (:attr:`PreparedImages.whole_prompt`) the image is only preprocessed: its embeddings are
    made with the prompt.
    """
    cfg = DEFAULTS.merged(config)
    clear_recent_errors()
    if not lm.native.vision:
        raise _no_vision(lm)
    part = ImagePart(image)
    item, _ = _prepared(lm, part, budget_of(part, cfg), "image")
    cached = True
    try:
        if lm.prepared.whole_prompt:
            cached = False
        else:
            (image_id,) = occurrence_ids([item])
            images = [c for c in item.chunks if c.is_image]
            missing = {
                chunk_key(image_id, k): c
                for k, c in enumerate(images)
                if lm.embeddings.get(chunk_key(image_id, k), c.n_tokens * lm.native.n_embd_inp) is None
            }
            for key, embd in zip(missing, lm.native.encode_images(list(missing.values())), strict=True):
                lm.embeddings.put(key, embd)
            cached = not missing
    finally:
        lm.prepared.trim(keep=[item])
    return PreparedImageInfo(image_tokens=item.n_tokens, image_size=item.size, already_cached=cached)


def _no_vision(lm: LoadedModel) -> ModelCapabilityError:
    return ModelCapabilityError(
        f"model {lm.key!r} does not support images (it was loaded without a vision projector); "
        "use a vision model, or load this one with its mmproj file",
        model=lm.key,
    )


def _prepare_images(lm: LoadedModel, prompt: Prompt, cfg: PredictionConfig) -> tuple[list[PreparedImage], int]:
    """Each image of the prompt prepared for its budget: kept from an earlier turn, else made now.

    Returns them in prompt order, and how many had to be made (rendered and preprocessed).
    """
    out: list[PreparedImage] = []
    made = 0
    for part, where in zip(prompt.images, prompt.locations, strict=True):
        item, new = _prepared(lm, part, budget_of(part, cfg), where)
        out.append(item)
        made += new
    return out, made


def _prepared(lm: LoadedModel, part: ImagePart, budget: Budget, where: str) -> tuple[PreparedImage, bool]:
    """``part`` prepared for ``budget``: kept from before, else made now (then True)."""
    item = lm.prepared.get(part.image.identifier, budget)
    if item is not None:
        return item, False
    item = lm.prepared.prepare(lm.native, part, budget, where)
    lm.prepared.put(part.image.identifier, budget, item)
    return item, True


def _tokenize(lm: LoadedModel, prompt: Prompt, prepared: Sequence[PreparedImage]) -> list[Chunk]:
    """The prompt's chunks: assembled from the prepared images, or, where a projector places an
    image by its position, tokenized whole by mtmd from their inputs."""
    if not lm.prepared.whole_prompt or not prepared:
        return assemble(lm.native, prompt.text, prepared)
    inputs = []
    for item, image_id in zip(prepared, occurrence_ids(prepared), strict=True):
        assert item.source is not None
        inputs.append((item.source.data, image_id))
    return lm.native.tokenize_prompt(prompt.text, inputs, prompt.locations)


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
