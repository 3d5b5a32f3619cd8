"""Where downloaded models live: ``$VLMKIT_HOME/models/<key>/`` (default ``~/.vlmkit``).

Each model directory holds its GGUF, its mmproj (if any) and ``model.json`` naming them, written
last, so a directory without it is an unfinished download and is never listed as a model.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from vlmkit._files import write_whole
from vlmkit.engine.gguf_meta import has_vision_encoder, read_model_meta
from vlmkit.errors import ModelLoadError, ModelNotFoundError

MANIFEST = "model.json"


def vlmkit_home() -> Path:
    return Path(os.environ.get("VLMKIT_HOME") or Path.home() / ".vlmkit")


def models_dir(override: str | Path | None = None) -> Path:
    return Path(override) if override is not None else vlmkit_home() / "models"


def dir_name(key: str) -> str:
    """A directory name for a key or ``repo/name`` (slashes become ``--``)."""
    return key.strip().replace("/", "--")


@dataclass(frozen=True)
class StoredModel:
    key: str
    directory: Path
    model: Path
    mmproj: Path | None
    repo: str | None

    @property
    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in (self.model, self.mmproj) if p is not None and p.exists())


@dataclass(frozen=True)
class ModelListing:
    """One line of ``vlmkit ls``."""

    key: str
    size_bytes: int
    vision: bool
    architecture: str
    context_length: int | None
    path: str


def write_manifest(directory: Path, key: str, model: str, mmproj: str | None, repo: str | None) -> None:
    manifest = {"key": key, "model": model, "mmproj": mmproj, "repo": repo}
    write_whole(directory / MANIFEST, json.dumps(manifest, indent=2).encode("utf-8"))


def find(key: str, root: str | Path | None = None) -> StoredModel | None:
    directory = models_dir(root) / dir_name(key)
    return _read(directory)


def _read(directory: Path) -> StoredModel | None:
    try:
        data = json.loads((directory / MANIFEST).read_text("utf-8"))
    except (OSError, ValueError):
        return None
    model = directory / data["model"]
    mmproj = directory / data["mmproj"] if data.get("mmproj") else None
    if not model.exists() or (mmproj is not None and not mmproj.exists()):
        return None
    return StoredModel(key=data["key"], directory=directory, model=model, mmproj=mmproj, repo=data.get("repo"))


def list_downloaded(root: str | Path | None = None) -> list[ModelListing]:
    """Every complete downloaded model, with size and vision support read from the files."""
    base = models_dir(root)
    out: list[ModelListing] = []
    if not base.is_dir():
        return out
    for directory in sorted(p for p in base.iterdir() if p.is_dir()):
        stored = _read(directory)
        if stored is None:
            continue
        try:
            meta = read_model_meta(stored.model)
            vision = has_vision_encoder(stored.mmproj)
        except ModelLoadError:
            continue
        out.append(
            ModelListing(
                key=stored.key,
                size_bytes=stored.size_bytes,
                vision=vision,
                architecture=meta.architecture,
                context_length=meta.context_length,
                path=str(stored.directory),
            )
        )
    return out


def remove(key: str, root: str | Path | None = None) -> Path:
    """Delete a downloaded model; returns the directory removed."""
    from vlmkit.engine.catalog import lookup

    entry = lookup(key)
    candidates = [key] + ([entry.key] if entry else [])
    for k in candidates:
        directory = models_dir(root) / dir_name(k)
        if directory.is_dir():
            shutil.rmtree(directory)
            return directory
    raise ModelNotFoundError(f"no downloaded model {key!r} in {models_dir(root)}; `vlmkit ls` lists them")
