"""Read what a GGUF file says about itself: architecture, context length, vision support.

Only the header and metadata are read (memory-mapped by the ``gguf`` package), never the weights,
so listing models is cheap. Vision support is a fact of the files (an mmproj whose metadata says it
has a vision encoder), never a guess from a file name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlmkit.errors import ModelLoadError

GGUF_MAGIC = b"GGUF"


@dataclass(frozen=True)
class ModelMeta:
    architecture: str
    name: str | None
    context_length: int | None
    chat_template: str | None
    bos_token_id: int | None
    eos_token_id: int | None
    is_projector: bool


@dataclass(frozen=True)
class MmprojMeta:
    projector_type: str | None
    vision: bool
    audio: bool
    image_size: int | None = None
    """The vision encoder's input size in pixels (a side of its square), where the file says."""


def is_gguf(path: str | Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == GGUF_MAGIC
    except OSError:
        return False


def _fields(path: str | Path, keys: set[str]) -> dict[str, Any]:
    from gguf import GGUFReader

    if not is_gguf(path):
        raise ModelLoadError(f"{path} is not a GGUF file (it does not start with the GGUF magic)")
    try:
        reader = GGUFReader(str(path), "r")
    except Exception as exc:  # truncated or corrupt header
        raise ModelLoadError(f"{path} is not a readable GGUF file: {exc}") from exc
    out: dict[str, Any] = {}
    for key, field in reader.fields.items():
        if key in keys or key.endswith(".context_length"):
            try:
                out[key] = field.contents()
            except Exception:
                continue
    return out


def read_model_meta(path: str | Path) -> ModelMeta:
    arch_key = "general.architecture"
    first = _fields(
        path,
        {
            arch_key,
            "general.name",
            "tokenizer.chat_template",
            "tokenizer.ggml.bos_token_id",
            "tokenizer.ggml.eos_token_id",
        },
    )
    arch = str(first.get(arch_key, "unknown"))
    ctx = first.get(f"{arch}.context_length")
    return ModelMeta(
        architecture=arch,
        name=first.get("general.name"),
        context_length=int(ctx) if ctx is not None else None,
        chat_template=first.get("tokenizer.chat_template"),
        bos_token_id=_int(first.get("tokenizer.ggml.bos_token_id")),
        eos_token_id=_int(first.get("tokenizer.ggml.eos_token_id")),
        is_projector=arch == "clip",
    )


def read_mmproj_meta(path: str | Path) -> MmprojMeta:
    f = _fields(
        path,
        {
            "general.architecture",
            "clip.has_vision_encoder",
            "clip.has_audio_encoder",
            "clip.projector_type",
            "clip.vision.projector_type",
            "clip.vision.image_size",
        },
    )
    if f.get("general.architecture") != "clip":
        raise ModelLoadError(
            f"{path} is not a vision projector (mmproj) file: its architecture is "
            f"{f.get('general.architecture')!r}, not 'clip'"
        )
    proj = f.get("clip.projector_type") or f.get("clip.vision.projector_type")
    return MmprojMeta(
        projector_type=str(proj) if proj else None,
        vision=bool(f.get("clip.has_vision_encoder", False)),
        audio=bool(f.get("clip.has_audio_encoder", False)),
        image_size=_int(f.get("clip.vision.image_size")),
    )


def has_vision_encoder(mmproj: str | Path | None) -> bool:
    """Whether a model with this projector (``None``: none) takes images: its metadata says it has a vision encoder."""
    return mmproj is not None and read_mmproj_meta(mmproj).vision


def _int(v: Any) -> int | None:
    try:
        return int(v) if v is not None else None
    except (TypeError, ValueError):
        return None
