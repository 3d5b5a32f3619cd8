"""Read what a GGUF file says about itself: architecture, context length, vision support.

Only the header's key/value section is read (memory-mapped, values not asked for skipped by their
length), never the tensors, so listing models is cheap. Vision support is a fact of the files (an
mmproj whose metadata says it has a vision encoder), never a guess from a file name.
"""

from __future__ import annotations

import mmap
import struct
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
    """The values of ``keys`` (and of any ``*.context_length``) in the file's metadata.

    The key/value section is walked straight from a memory map and every value not asked for is
    skipped by its length: a model's tokenizer (hundreds of thousands of strings) is never built
    into Python objects, which made reading a real model's metadata take seconds."""
    if not is_gguf(path):
        raise ModelLoadError(f"{path} is not a GGUF file (it does not start with the GGUF magic)")
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            return _walk(m, keys)
    except (struct.error, ValueError, UnicodeDecodeError, OSError) as exc:  # truncated or corrupt header
        raise ModelLoadError(f"{path} is not a readable GGUF file: {exc}") from exc


# GGUF's value types (gguf-py's GGUFValueType): the fixed-size ones by their struct format
_FIXED = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9


def _walk(m: mmap.mmap, keys: set[str]) -> dict[str, Any]:
    (version,) = struct.unpack_from("<I", m, 4)
    if version < 2:
        raise ValueError(f"GGUF version {version} is too old (llama.cpp reads version 2 and later)")
    _tensors, n_kv = struct.unpack_from("<QQ", m, 8)
    pos = 24
    out: dict[str, Any] = {}
    for _ in range(n_kv):
        key, pos = _string(m, pos, True)
        (kind,) = struct.unpack_from("<I", m, pos)
        want = key in keys or key.endswith(".context_length")
        value, pos = _value(m, pos + 4, kind, want)
        if want:
            out[key] = value
    return out


def _string(m: mmap.mmap, pos: int, want: bool) -> tuple[Any, int]:
    (n,) = struct.unpack_from("<Q", m, pos)
    end = pos + 8 + n
    if end > len(m):
        raise ValueError(f"a string of {n} bytes at offset {pos} runs past the end of the file")
    return (m[pos + 8 : end].decode("utf-8") if want else None), end


def _value(m: mmap.mmap, pos: int, kind: int, want: bool) -> tuple[Any, int]:
    if kind in _FIXED:
        fmt = "<" + _FIXED[kind]
        return (struct.unpack_from(fmt, m, pos)[0] if want else None), pos + struct.calcsize(fmt)
    if kind == _STRING:
        return _string(m, pos, want)
    if kind != _ARRAY:
        raise ValueError(f"unknown GGUF value type {kind} at offset {pos}")
    item, count = struct.unpack_from("<IQ", m, pos)
    pos += 12
    if item in _FIXED:
        fmt = f"<{count}{_FIXED[item]}"
        end = pos + struct.calcsize(fmt)
        if end > len(m):
            raise ValueError(f"an array of {count} values at offset {pos} runs past the end of the file")
        return (list(struct.unpack_from(fmt, m, pos)) if want else None), end
    values = []
    for _ in range(count):
        value, pos = _value(m, pos, item, want)
        if want:
            values.append(value)
    return (values if want else None), pos


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
