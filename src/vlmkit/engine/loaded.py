"""A model the engine has loaded: native handles, what its KV cache holds, its caches and its turn queue.

Its caches: the images it has prepared (:mod:`vlmkit.engine.prepared`), and the embeddings it has
encoded, in memory and on disk (:mod:`vlmkit.engine.reuse`, :mod:`vlmkit.engine.encoder_cache`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from vlmkit.engine import encoder_cache
from vlmkit.engine.gguf_meta import MmprojMeta, read_mmproj_meta, read_model_meta
from vlmkit.engine.images import RENDERING
from vlmkit.engine.model import LoadOptions, NativeModel
from vlmkit.engine.prepared import WHOLE_PROMPT_PROJECTORS, PreparedImages
from vlmkit.engine.prompt import ChatTemplate, compile_template
from vlmkit.engine.queue import TurnQueue
from vlmkit.engine.reuse import DEFAULT_EMBEDDING_CACHE_BYTES, EmbeddingCache, PrefixState
from vlmkit.prediction import ModelInfo


@dataclass
class LoadedModel:
    key: str
    native: NativeModel
    template: ChatTemplate
    info: ModelInfo
    ttl: float | None
    queue: TurnQueue
    prepared: PreparedImages
    state: PrefixState = field(default_factory=PrefixState)
    embeddings: EmbeddingCache = field(default_factory=EmbeddingCache)
    last_used: float = field(default_factory=time.monotonic)

    @classmethod
    def load(
        cls,
        key: str,
        model_path: Path,
        mmproj_path: Path | None,
        options: LoadOptions,
        *,
        ttl: float | None,
        max_queue: int,
        embedding_cache_bytes: int = DEFAULT_EMBEDDING_CACHE_BYTES,
    ) -> LoadedModel:
        meta = read_model_meta(model_path)
        disk = encoder_cache.open_cache(options.encoder_cache_mb) if mmproj_path is not None else None
        native = NativeModel(model_path, mmproj_path, options)
        try:
            projector = read_mmproj_meta(mmproj_path) if mmproj_path is not None else None
            bos = _token_text(native, meta.bos_token_id)
            eos = _token_text(native, meta.eos_token_id)
            template = compile_template(native.chat_template() or meta.chat_template, bos, eos)
            info = ModelInfo(
                key=key,
                path=str(model_path),
                mmproj_path=str(mmproj_path) if mmproj_path else None,
                architecture=meta.architecture,
                context_length=native.n_ctx,
                vision=native.vision,
                size_bytes=model_path.stat().st_size + (mmproj_path.stat().st_size if mmproj_path else 0),
                projector_type=projector.projector_type if projector else None,
                n_params=None,
            )
            namespace = _embedding_namespace(mmproj_path, projector, native) if disk is not None else ""
        except BaseException:
            native.close()
            raise
        return cls(
            key=key,
            native=native,
            template=template,
            info=info,
            ttl=ttl,
            queue=TurnQueue(max_queue),
            prepared=PreparedImages(
                native.free_chunks,
                whole_prompt=(projector.projector_type if projector else None) in WHOLE_PROMPT_PROJECTORS,
                pixels_per_chunk=(projector.image_size or 0) ** 2 if projector else 0,
            ),
            embeddings=EmbeddingCache(embedding_cache_bytes, disk=disk, namespace=namespace),
        )

    def close(self) -> None:
        self.state.reset()
        self.prepared.clear()
        self.embeddings.flush()
        self.embeddings.clear()
        self.native.close()

    def touch(self) -> None:
        self.last_used = time.monotonic()

    def idle_for(self) -> float:
        return time.monotonic() - self.last_used


def _token_text(native: NativeModel, token: int | None) -> str:
    if token is None or token < 0:
        return ""
    try:
        import ctypes

        buf = ctypes.create_string_buffer(256)
        n = native._L.llama_token_to_piece(native._vocab, token, buf, len(buf), 0, True)
        return buf.raw[: max(0, n)].decode("utf-8", errors="replace")
    except Exception:
        return ""


def _embedding_namespace(mmproj_path: Path | None, projector: MmprojMeta | None, native: NativeModel) -> str:
    """What names this model's embeddings on disk beside each image (see :func:`encoder_cache.namespace`)."""
    assert mmproj_path is not None and projector is not None
    options = native.options
    preprocessing = (
        f"{RENDERING}|projector_type={projector.projector_type}|image_max_tokens={options.image_max_tokens}"
        f"|flash_attention={options.flash_attention}"
    )
    device = native.placement.backend if native.placement.projector else "CPU"
    return encoder_cache.namespace(mmproj_path, preprocessing=preprocessing, device=device)
