"""A loaded model: one llama.cpp context (flash attention on) and, for vision models, one mtmd context.

:class:`NativeModel` offers the operations the engine composes: tokenize a prompt with images into
chunks, evaluate text tokens and image embeddings at given positions, encode an image chunk into
embeddings, trim the KV cache, sample a token, turn a token into bytes. It keeps no chat state;
:mod:`vlmkit.engine.reuse` decides what to evaluate.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vlmkit.engine import native
from vlmkit.engine.gpu import GpuChoice, GpuSetting, choose, parse_gpu
from vlmkit.engine.grammar_guard import GrammarGuard, TokenTable
from vlmkit.errors import InvalidImageError, InvalidSettingError, ModelLoadError, PredictionError
from vlmkit.images.render import RgbPixels


@dataclass(frozen=True)
class LoadOptions:
    """How to load a model. ``None`` means the default."""

    context_length: int | None = None
    """Context window in tokens; default: the model's trained length, at most 8192."""
    cpu_threads: int | None = None
    batch_size: int = 512
    flash_attention: bool = True
    image_max_tokens: int | None = None
    """Upper bound of image tokens per image passed to mtmd (for dynamic-resolution projectors)."""
    gpu: GpuSetting = "auto"
    """Where the model runs: ``"auto"`` (all of it on the GPU when llama.cpp was built with one, else
    the CPU), ``"off"`` (the CPU), or a number of text layers to offload (see :mod:`vlmkit.engine.gpu`)."""
    encoder_cache_mb: int | None = None
    """Bound of the on-disk cache of image embeddings, in MB (0: don't use it); default:
    ``VLMKIT_ENCODER_CACHE_MB``, else 1024 (see :mod:`vlmkit.engine.encoder_cache`)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "gpu", parse_gpu(self.gpu))
        if self.encoder_cache_mb is not None and (
            isinstance(self.encoder_cache_mb, bool)
            or not isinstance(self.encoder_cache_mb, int)
            or self.encoder_cache_mb < 0
        ):
            raise InvalidSettingError(
                f"encoder_cache_mb={self.encoder_cache_mb!r} must be a whole number of megabytes, 0 or more "
                "(0 turns the on-disk cache of image embeddings off)"
            )


def default_threads() -> int:
    """The cores this process may run on (its CPU affinity: a container's or ``taskset``'s share, not
    the machine's count, which would put more threads than cores and make llama.cpp's spinning
    threads wait on each other), at most 8."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # no affinity on this platform (macOS, Windows)
        n = os.cpu_count() or 4
    return max(1, min(n, 8))


@dataclass
class Chunk:
    """One piece of a tokenized prompt: text tokens, or an image chunk (owned copy)."""

    tokens: list[int] | None = None
    image: Any = None  # mtmd_input_chunk_p (owned, freed with the ChunkList)
    image_id: str = ""
    n_tokens: int = 0  # an image chunk's tokens: its embeddings, each taking a KV cache cell
    n_pos: int = 0  # the positions it advances: n_tokens, or fewer with M-RoPE (Qwen-VL)
    owned: bool = True  # False: the image chunk is borrowed (a prepared image's), never freed with the prompt

    @property
    def is_image(self) -> bool:
        return self.image is not None


class NativeModel:
    """llama.cpp model + context (+ mtmd context). Not thread-safe: one prediction at a time."""

    def __init__(self, model_path: str | Path, mmproj_path: str | Path | None, options: LoadOptions) -> None:
        L = native.llama()
        self._L = L
        self.model_path = str(model_path)
        self.mmproj_path = str(mmproj_path) if mmproj_path else None
        self.options = options
        self.threads = options.cpu_threads or default_threads()
        self._model: Any = None
        self._ctx: Any = None
        self._mctx: Any = None
        self._batch: Any = None
        self._token_table: TokenTable | None = None
        self._guards: dict[int | None, GrammarGuard] = {}
        native.clear_recent_errors()

        self.placement: GpuChoice = choose(options.gpu)
        mp = L.llama_model_default_params()
        mp.n_gpu_layers = self.placement.layers
        self._model = L.llama_model_load_from_file(self.model_path.encode(), mp)
        if not self._model:
            raise ModelLoadError(
                f"llama.cpp could not load {self.model_path}: {native.recent_errors() or 'unknown error'}. "
                "Is it a complete GGUF file of a language model (not an mmproj)?"
            )
        try:
            self._vocab = L.llama_model_get_vocab(self._model)
            self.n_ctx_train = int(L.llama_model_n_ctx_train(self._model))
            self.n_embd = int(L.llama_model_n_embd(self._model))
            # the width of an input embedding, image embeddings included: wider than n_embd where
            # image features also feed later layers (Qwen3-VL's deepstack: n_embd x (1 + layers))
            self.n_embd_inp = int(L.llama_model_n_embd_inp(self._model))
            self.n_vocab = int(L.llama_vocab_n_tokens(self._vocab))
            n_ctx = options.context_length or min(self.n_ctx_train or 4096, 8192)
            self.batch_size = max(32, min(options.batch_size, n_ctx))

            cp = L.llama_context_default_params()
            cp.n_ctx = n_ctx
            cp.n_batch = self.batch_size
            cp.n_ubatch = self.batch_size
            cp.n_seq_max = 1
            cp.n_threads = self.threads
            cp.n_threads_batch = self.threads
            cp.flash_attn_type = (
                L.LLAMA_FLASH_ATTN_TYPE_ENABLED if options.flash_attention else L.LLAMA_FLASH_ATTN_TYPE_DISABLED
            )
            cp.no_perf = True
            # sliding-window layers keep every position (llama.cpp's default, said here because reuse
            # relies on it): a prefix trimmed back still holds the window its next token looks at
            cp.swa_full = True
            self._ctx = L.llama_init_from_model(self._model, cp)
            if not self._ctx:
                raise ModelLoadError(
                    f"llama.cpp could not create a context of {n_ctx} tokens for {self.model_path}: "
                    f"{native.recent_errors() or 'out of memory?'}; try a smaller context_length"
                )
            self.n_ctx = int(L.llama_n_ctx(self._ctx))
            self._mem = L.llama_get_memory(self._ctx)
            self._batch = L.llama_batch_init(self.batch_size, 0, 1)

            if self.mmproj_path:
                M = native.mtmd()
                prm = M.mtmd_context_params_default()
                prm.use_gpu = self.placement.projector
                prm.print_timings = False
                prm.n_threads = self.threads
                prm.warmup = False
                prm.flash_attn_type = cp.flash_attn_type
                if options.image_max_tokens:
                    prm.image_max_tokens = options.image_max_tokens
                self._mctx = M.mtmd_init_from_file(self.mmproj_path.encode(), self._model, prm)
                if not self._mctx:
                    raise ModelLoadError(
                        f"llama.cpp could not load the vision projector {self.mmproj_path} for "
                        f"{self.model_path}: {native.recent_errors() or 'unknown error'}. Does the mmproj "
                        "belong to this model (same embedding size)?"
                    )
                self.vision = bool(M.mtmd_support_vision(self._mctx))
                self.marker = (M.mtmd_default_marker() or b"<__media__>").decode()
                self.mrope = bool(M.mtmd_decode_use_mrope(self._mctx))
            else:
                self.vision = False
                self.marker = "<__media__>"
                self.mrope = False
        except BaseException:
            self.close()
            raise
        self._piece = ctypes.create_string_buffer(256)
        self._n_past_ref = L.llama_pos(0)

    # --- metadata -------------------------------------------------------------------------------

    def meta(self, key: str) -> str | None:
        buf = ctypes.create_string_buffer(64 * 1024)
        n = self._L.llama_model_meta_val_str(self._model, key.encode(), buf, len(buf))
        if n < 0:
            return None
        return buf.value.decode("utf-8", errors="replace")

    def chat_template(self) -> str | None:
        t = self._L.llama_model_chat_template(self._model, None)
        return t.decode("utf-8", errors="replace") if t else None

    def size_bytes(self) -> int:
        return int(self._L.llama_model_size(self._model))

    def is_eog(self, token: int) -> bool:
        return bool(self._L.llama_vocab_is_eog(self._vocab, token))

    # --- tokens ---------------------------------------------------------------------------------

    def tokenize(self, text: str, *, special: bool = True) -> list[int]:
        data = text.encode("utf-8")
        cap = len(data) + 16
        buf = (self._L.llama_token * cap)()
        n = self._L.llama_tokenize(self._vocab, data, len(data), buf, cap, False, special)
        if n < 0:
            cap = -n
            buf = (self._L.llama_token * cap)()
            n = self._L.llama_tokenize(self._vocab, data, len(data), buf, cap, False, special)
        return list(buf[:n])

    def piece(self, token: int) -> bytes:
        n = self._L.llama_token_to_piece(self._vocab, token, self._piece, len(self._piece), 0, False)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = self._L.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, False)
            return buf.raw[:n]
        return self._piece.raw[:n]

    def tokenize_prompt(
        self, text: str, images: Sequence[tuple[bytes | RgbPixels, str]], where: Sequence[str]
    ) -> list[Chunk]:
        """Split ``text`` at the media markers and tokenize it with ``images`` (data, id) in order.

        An image's data is a file's bytes, which llama.cpp decodes, or pixels vlmkit decoded already,
        handed over as they are. Without images this is plain tokenization (one text chunk). Image
        chunks are owned copies; release them with :meth:`free_chunks`. An image that llama.cpp's
        decoder (stb_image) cannot read is the caller's bad input, located at its ``where``: Pillow
        reads some corrupt data (a scrambled JPEG scan) without complaint, so this decode is where
        such an image shows.
        """
        if not images:
            return [Chunk(tokens=self.tokenize(text), n_tokens=0)] if text else []
        if not self._mctx:
            raise PredictionError("internal: images given to a model without a vision projector")
        M = native.mtmd()
        bitmaps = []
        chunks_p = None
        try:
            for (data, image_id), place in zip(images, where, strict=True):
                if isinstance(data, RgbPixels):
                    bitmaps.append(self._pixels_bitmap(data))
                    M.mtmd_bitmap_set_id(bitmaps[-1], image_id.encode())
                    continue
                arr = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
                native.clear_recent_errors()  # what the decoder logs now is about this image alone
                bmp = M.mtmd_helper_bitmap_init_from_buf(self._mctx, arr, len(data), False)
                if not bmp:
                    said = native.recent_errors()
                    exc = InvalidImageError(
                        "llama.cpp's image decoder cannot read this image's pixels"
                        f"{f' ({said})' if said else ''}: its header is sound but its image data is corrupt; "
                        "re-save it with an image editor, or send another image"
                    )
                    exc.add_location(place)
                    raise exc
                bitmaps.append(bmp)
                M.mtmd_bitmap_set_id(bmp, image_id.encode())
            chunks_p = M.mtmd_input_chunks_init()
            raw = text.encode("utf-8")
            inp = M.mtmd_input_text(raw, len(raw), False, True)
            arr_t = M.mtmd_bitmap_p_ctypes * len(bitmaps)
            rc = M.mtmd_tokenize(self._mctx, chunks_p, ctypes.byref(inp), arr_t(*bitmaps), len(bitmaps))
            if rc != 0:
                why = {1: "the number of images does not match the image markers", 2: "image preprocessing failed"}
                raise PredictionError(f"llama.cpp could not tokenize the prompt: {why.get(rc, f'error {rc}')}")
            out: list[Chunk] = []
            for i in range(M.mtmd_input_chunks_size(chunks_p)):
                c = M.mtmd_input_chunks_get(chunks_p, i)
                kind = M.mtmd_input_chunk_get_type(c)
                if kind == M.MTMD_INPUT_CHUNK_TYPE_TEXT:
                    n = ctypes.c_size_t(0)
                    ptr = M.mtmd_input_chunk_get_tokens_text(c, ctypes.byref(n))
                    out.append(Chunk(tokens=[ptr[j] for j in range(n.value)]))
                else:
                    cid = M.mtmd_input_chunk_get_id(c) or b""
                    out.append(
                        Chunk(
                            image=M.mtmd_input_chunk_copy(c),
                            image_id=cid.decode(),
                            n_tokens=int(M.mtmd_input_chunk_get_n_tokens(c)),
                            n_pos=int(M.mtmd_input_chunk_get_n_pos(c)),
                        )
                    )
            return out
        finally:
            if chunks_p:
                M.mtmd_input_chunks_free(chunks_p)
            for bmp in bitmaps:
                M.mtmd_bitmap_free(bmp)

    def _pixels_bitmap(self, pixels: RgbPixels) -> Any:
        M = native.mtmd()
        if len(pixels.data) != pixels.width * pixels.height * 3:
            raise PredictionError(
                f"internal: {len(pixels.data)} bytes of RGB pixels for a {pixels.width}x{pixels.height} image"
            )
        buf = (ctypes.c_uint8 * len(pixels.data)).from_buffer_copy(pixels.data)
        bmp = M.mtmd_bitmap_init(pixels.width, pixels.height, buf)  # copies the pixels
        if not bmp:
            raise PredictionError(f"llama.cpp could not take a {pixels.width}x{pixels.height} image: out of memory?")
        return bmp

    def free_chunks(self, chunks: Sequence[Chunk]) -> None:
        """Free the image chunks ``chunks`` own (borrowed ones belong to their prepared image)."""
        M = native.mtmd()
        for c in chunks:
            if c.image is not None and c.owned:
                M.mtmd_input_chunk_free(c.image)
            c.image = None

    # --- evaluation -----------------------------------------------------------------------------

    def decode_tokens(self, tokens: Sequence[int], n_past: int, *, want_logits: bool = True) -> int:
        """Evaluate ``tokens`` at positions ``n_past...``; logits for the last one. Returns the new n_past."""
        L = self._L
        b = self._batch
        step = self.batch_size
        for start in range(0, len(tokens), step):
            part = tokens[start : start + step]
            n = len(part)
            for i, tok in enumerate(part):
                b.token[i] = tok
                b.pos[i] = n_past + i
                b.n_seq_id[i] = 1
                b.seq_id[i][0] = 0
                b.logits[i] = 0
            last = start + n == len(tokens)
            if last and want_logits:
                b.logits[n - 1] = 1
            b.n_tokens = n
            rc = L.llama_decode(self._ctx, b)
            if rc != 0:
                raise PredictionError(f"llama_decode failed ({rc}): {native.recent_errors() or 'no details'}")
            n_past += n
        return n_past

    def encode_image(self, chunk: Chunk) -> np.ndarray:
        """Run the vision encoder on an image chunk; returns its embeddings (n_tokens x n_embd_inp, a copy).

        The copy is exactly what :meth:`decode_image` reads back: mtmd's decode helper takes
        ``n_embd_inp`` floats per token (checked against the projector's width when mtmd loaded).
        """
        M = native.mtmd()
        rc = M.mtmd_encode_chunk(self._mctx, chunk.image)
        if rc != 0:
            raise PredictionError(f"image encoding failed ({rc}): {native.recent_errors() or 'no details'}")
        ptr = M.mtmd_get_output_embd(self._mctx)
        n = chunk.n_tokens * self.n_embd_inp
        out: np.ndarray = np.ctypeslib.as_array(ptr, shape=(n,)).copy()
        return out

    def encode_images(self, chunks: Sequence[Chunk]) -> list[np.ndarray]:
        """Encode several image chunks in as few encoder passes as mtmd allows; their embeddings in
        order, each as :meth:`encode_image` gives it.

        Projectors whose graph takes a batch (InternVL's, Gemma 4's) run same-sized chunks through
        the encoder together, up to mtmd's ``batch_max_tokens``; for the others mtmd takes one chunk
        a batch, which is one pass each, as before.
        """
        if len(chunks) < 2:
            return [self.encode_image(c) for c in chunks]
        M = native.mtmd()
        out: list[np.ndarray] = []
        group: list[Chunk] = []
        batch = M.mtmd_batch_init(self._mctx)
        try:
            for chunk in chunks:
                rc = M.mtmd_batch_add_chunk(batch, chunk.image)
                if rc in (2, 3):  # full, or not the same shape: encode what is there, start again
                    out.extend(self._encode_batch(batch, group))
                    M.mtmd_batch_free(batch)
                    batch, group = M.mtmd_batch_init(self._mctx), []
                    rc = M.mtmd_batch_add_chunk(batch, chunk.image)
                if rc != 0:
                    raise PredictionError(f"image encoding failed ({rc}): {native.recent_errors() or 'no details'}")
                group.append(chunk)
            out.extend(self._encode_batch(batch, group))
        finally:
            M.mtmd_batch_free(batch)
        return out

    def _encode_batch(self, batch: Any, group: Sequence[Chunk]) -> list[np.ndarray]:
        M = native.mtmd()
        rc = M.mtmd_batch_encode(batch)
        if rc != 0:
            raise PredictionError(f"image encoding failed ({rc}): {native.recent_errors() or 'no details'}")
        out = []
        for c in group:
            ptr = M.mtmd_batch_get_output_embd(batch, c.image)
            if not ptr:
                raise PredictionError("internal: mtmd gave no embeddings for an image chunk it encoded")
            out.append(np.ctypeslib.as_array(ptr, shape=(c.n_tokens * self.n_embd_inp,)).copy())
        return out

    def decode_image(self, chunk: Chunk, embd: np.ndarray, n_past: int) -> int:
        """Evaluate an image chunk's embeddings at position ``n_past``; returns the new n_past.

        The chunk takes ``chunk.n_tokens`` KV cells but advances the position by ``chunk.n_pos``
        (fewer with M-RoPE, where an image's tokens share positions by row and column).
        """
        M = native.mtmd()
        embd = np.ascontiguousarray(embd, dtype=np.float32)
        if embd.size != chunk.n_tokens * self.n_embd_inp:  # mtmd would read past the end
            raise PredictionError(
                f"internal: {embd.size} image embedding values for {chunk.n_tokens} tokens of width {self.n_embd_inp}"
            )
        ptr = embd.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        rc = M.mtmd_helper_decode_image_chunk(
            self._mctx,
            self._ctx,
            chunk.image,
            ptr,
            n_past,
            0,
            self.batch_size,
            ctypes.byref(self._n_past_ref),
            M.mtmd_helper_post_decode_callback(),
            None,
        )
        if rc != 0:
            raise PredictionError(f"decoding image embeddings failed ({rc}): {native.recent_errors() or 'no details'}")
        return int(self._n_past_ref.value)

    def trim(self, n_past: int) -> bool:
        """Drop KV entries at positions >= ``n_past``; False if this model cannot drop a suffix."""
        return bool(self._L.llama_memory_seq_rm(self._mem, 0, n_past, -1))

    def clear(self) -> None:
        self._L.llama_memory_clear(self._mem, True)

    def set_threads(self, n: int) -> None:
        self._L.llama_set_n_threads(self._ctx, n, n)

    # --- sampling -------------------------------------------------------------------------------

    def make_sampler(
        self,
        *,
        temperature: float,
        top_k: int,
        top_p: float,
        min_p: float,
        repeat_penalty: float,
        seed: int,
        grammar: str | None,
    ) -> Any:
        L = self._L
        sp = L.llama_sampler_chain_default_params()
        chain = L.llama_sampler_chain_init(sp)
        if grammar is not None:
            guard = GrammarGuard(L, self.token_table())  # before the grammar: see grammar_guard
            L.llama_sampler_chain_add(chain, guard.sampler)
            g = L.llama_sampler_init_grammar(self._vocab, grammar.encode(), b"root")
            if not g:
                L.llama_sampler_free(chain)
                raise PredictionError(f"the JSON schema's grammar was refused: {native.recent_errors()}")
            L.llama_sampler_chain_add(chain, g)
            self._guards[ctypes.cast(chain, ctypes.c_void_p).value] = guard
        if repeat_penalty and repeat_penalty != 1.0:
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_penalties(self.n_vocab, 64, repeat_penalty, 0.0, 0.0))
        if temperature <= 0:
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_greedy())
        else:
            if top_k > 0:
                L.llama_sampler_chain_add(chain, L.llama_sampler_init_top_k(top_k))
            if top_p < 1.0:
                L.llama_sampler_chain_add(chain, L.llama_sampler_init_top_p(top_p, 1))
            if min_p > 0.0:
                L.llama_sampler_chain_add(chain, L.llama_sampler_init_min_p(min_p, 1))
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_temp(temperature))
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_dist(seed & 0xFFFFFFFF))
        return chain

    def sample(self, sampler: Any) -> int:
        return int(self._L.llama_sampler_sample(sampler, self._ctx, -1))

    def free_sampler(self, sampler: Any) -> None:
        self._L.llama_sampler_free(sampler)
        self._guards.pop(ctypes.cast(sampler, ctypes.c_void_p).value, None)  # its callbacks may go now

    def token_table(self) -> TokenTable:
        """Each token's bytes as the grammar guard needs them: read from the vocabulary once."""
        if self._token_table is None:
            eog = [bool(self._L.llama_vocab_is_eog(self._vocab, t)) for t in range(self.n_vocab)]
            self._token_table = TokenTable.build([self.piece(t) for t in range(self.n_vocab)], eog)
        return self._token_table

    # --- lifetime -------------------------------------------------------------------------------

    def close(self) -> None:
        L = self._L
        if self._mctx:
            native.mtmd().mtmd_free(self._mctx)
            self._mctx = None
        if self._batch is not None:
            L.llama_batch_free(self._batch)
            self._batch = None
        if self._ctx:
            L.llama_free(self._ctx)
            self._ctx = None
        if self._model:
            L.llama_model_free(self._model)
            self._model = None

    @property
    def closed(self) -> bool:
        return self._ctx is None

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()
