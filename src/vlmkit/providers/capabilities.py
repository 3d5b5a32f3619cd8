"""``supports_vision``: whether a model takes images, from the table shipped in ``capabilities.json``
(cloud models, as their providers document them) or, for ``local/KEY``, from the model file itself.

Unknown models answer False: vlmkit does not guess that a model it has never heard of sees.
"""

from __future__ import annotations

import fnmatch
import importlib.resources
import json
import re
from functools import cache
from typing import Any

from vlmkit.errors import VlmkitError

_DATE = re.compile(r"(-\d{4}-\d{2}-\d{2}|-\d{8}|@\d{8}|@latest|@\d{3})$")
_BEDROCK_GEO = re.compile(r"^(us|eu|apac|us-gov|global|jp|au|ca)\.")


@cache
def _table() -> dict[str, Any]:
    text = importlib.resources.files("vlmkit.providers").joinpath("capabilities.json").read_text("utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


def supports_vision(model: str, custom_llm_provider: str | None = None) -> bool:
    """True when ``model`` (``"provider/name"``) accepts image input.

    ``custom_llm_provider`` names the provider when ``model`` has no prefix (LiteLLM's argument).
    """
    from vlmkit.providers.registry import ROUTES, split_model

    if custom_llm_provider and not model.startswith(custom_llm_provider + "/"):
        model = f"{custom_llm_provider}/{model}"
    try:
        provider, name = split_model(model)
    except Exception:
        return False
    if ROUTES[provider].kind == "local":
        return _local_vision(name)
    return _lookup(provider, name)


def _lookup(provider: str, name: str, depth: int = 0) -> bool:
    data = _table()
    table_name = data["aliases"].get(provider, provider)
    answer = _answer(table_name, name.lower(), depth)
    return bool(answer)


def _candidates(table_name: str, name: str) -> list[str]:
    """The name, then forms without dates, region prefixes, versions and tags, most precise first."""
    names = [name]
    if table_name == "bedrock":
        name = _BEDROCK_GEO.sub("", name.removeprefix("converse/"))
        names.append(name)
    if table_name == "ollama" and ":" in name:
        names.append(name.split(":", 1)[0])
    if table_name in ("gemini", "vertex_ai"):
        names.append(name.removeprefix("models/"))
    undated = _DATE.sub("", name)
    if undated != name:
        names.append(undated)
    return names


def _answer(table_name: str, name: str, depth: int) -> bool | None:
    providers = _table()["providers"]
    table = providers.get(table_name)
    if table is None or depth > 3:
        return None
    names = _candidates(table_name, name)
    text, vision = table.get("text", []), table.get("vision", [])
    for candidate in names:
        if candidate in text:
            return False
        if candidate in vision:
            return True
    for candidate in names:
        if any("*" in p and fnmatch.fnmatchcase(candidate, p) for p in text):
            return False
        if any("*" in p and fnmatch.fnmatchcase(candidate, p) for p in vision):
            return True
    for parent in table.get("inherit", []):
        found = _answer(parent, name, depth + 1)
        if found is not None:
            return found
    routes = table.get("routes")
    if routes and "/" in name:
        org, _, rest = name.partition("/")
        target = routes.get(org)
        if target:
            found = _answer(target, rest, depth + 1)
            if found is None and target != "local_servers":
                found = _answer(target, re.sub(r"(\d)\.(\d)", r"\1-\2", rest), depth + 1)
            return found
    return None


def _local_vision(key: str) -> bool:
    """A local model sees when its files carry a vision projector: read from the model store and the
    GGUF headers (a model in memory answers from its info), without loading anything."""
    from vlmkit.engine.owner import has_vision

    try:
        return has_vision(key)
    except VlmkitError:  # unknown key, unreadable file: not a model known to see
        return False
