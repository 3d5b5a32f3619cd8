"""The catalog of known vision models: a short key names a Hugging Face repository and two files.

The data lives in ``catalog.json`` next to this module (one entry per model: repository, the GGUF
of the language model in a sensible default quantisation, its mmproj, the trained context length).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources


@dataclass(frozen=True)
class CatalogEntry:
    key: str
    name: str
    repo: str
    model: str
    mmproj: str | None
    context_length: int
    aliases: tuple[str, ...] = ()
    family: str | None = None
    """The generated stand-in of this model's shape that the tests run
    (:data:`vlmkit.engine.synthetic_families.FAMILIES`), where there is one."""


@lru_cache(maxsize=1)
def catalog() -> dict[str, CatalogEntry]:
    raw = json.loads(resources.files("vlmkit.engine").joinpath("catalog.json").read_text("utf-8"))
    return {
        key: CatalogEntry(
            key=key,
            name=e["name"],
            repo=e["repo"],
            model=e["model"],
            mmproj=e.get("mmproj"),
            context_length=int(e["context_length"]),
            aliases=tuple(e.get("aliases", ())),
            family=e.get("family"),
        )
        for key, e in raw.items()
    }


def lookup(key: str) -> CatalogEntry | None:
    """The entry for a key or alias (case-insensitive), or None."""
    k = key.strip().lower()
    entries = catalog()
    if k in entries:
        return entries[k]
    for entry in entries.values():
        if k in entry.aliases:
            return entry
    return None


def keys() -> list[str]:
    return sorted(catalog())
