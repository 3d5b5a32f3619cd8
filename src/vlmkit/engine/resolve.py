"""From what a user names (a key, ``repo/name``, a path) to the files to load."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vlmkit.engine import store
from vlmkit.engine.catalog import lookup
from vlmkit.engine.gguf_meta import is_gguf, read_model_meta
from vlmkit.errors import ModelLoadError, ModelNotFoundError


@dataclass(frozen=True)
class ModelFiles:
    key: str
    model: Path
    mmproj: Path | None


def resolve_model(spec: str, *, mmproj: str | Path | None = None, models_dir: str | Path | None = None) -> ModelFiles:
    """Resolve ``spec``: a .gguf path, a directory holding one, a catalog key or a downloaded ``repo/name``.

    For a .gguf path without ``mmproj``, a single ``mmproj*.gguf`` beside it is used.
    """
    mm = Path(mmproj).expanduser() if mmproj is not None else None
    if mm is not None and not mm.is_file():
        raise ModelNotFoundError(f"the mmproj file {mm} does not exist; fix the path")
    path = Path(spec).expanduser()
    if path.is_file():
        if not is_gguf(path):
            raise ModelLoadError(f"{path} is not a GGUF file")
        if read_model_meta(path).is_projector:
            raise ModelLoadError(
                f"{path} is a vision projector (mmproj); pass the language model's GGUF, and this file as mmproj"
            )
        return ModelFiles(key=path.stem, model=path, mmproj=mm or _sibling_mmproj(path.parent, exclude=path))
    if path.is_dir():
        ggufs = sorted(p for p in path.glob("*.gguf") if "mmproj" not in p.name.lower())
        if len(ggufs) != 1:
            raise ModelNotFoundError(f"{path} holds {len(ggufs)} language-model GGUF files; name one")
        return ModelFiles(key=path.name, model=ggufs[0], mmproj=mm or _sibling_mmproj(path, exclude=ggufs[0]))
    if _is_path(spec):
        raise ModelNotFoundError(
            f"the model file {path} does not exist; fix the path, or name a downloaded model (`vlmkit ls`)"
        )
    entry = lookup(spec)
    stored = store.find(entry.key if entry else spec, models_dir)
    if stored is not None:
        return ModelFiles(key=stored.key, model=stored.model, mmproj=mm or stored.mmproj)
    hint = (
        f"run `vlmkit get {entry.key if entry else spec}` first"
        if entry or "/" in spec
        else "use a catalog key, `repo/name`, or a path to a .gguf file"
    )
    raise ModelNotFoundError(f"model {spec!r} is not downloaded or found as a file; {hint}")


def _is_path(spec: str) -> bool:
    """Whether ``spec`` names a file, not a catalog key or a hub ``repo/name`` (which ``vlmkit get`` fetches)."""
    return (
        spec.lower().endswith(".gguf")
        or spec.startswith((".", "~", "/", "\\"))
        or Path(spec).is_absolute()
        or spec.count("/") > 1
        or "\\" in spec
    )


def _sibling_mmproj(directory: Path, *, exclude: Path) -> Path | None:
    found = [p for p in directory.glob("*.gguf") if "mmproj" in p.name.lower() and p != exclude]
    return found[0] if len(found) == 1 else None
