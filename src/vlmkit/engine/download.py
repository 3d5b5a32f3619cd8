"""``vlmkit get``: download a model's GGUF and mmproj from the Hugging Face hub into the model store.

Downloads go through ``huggingface_hub`` into ``$VLMKIT_HOME/models/<key>/``: bytes land in an
``.incomplete`` file under that directory's ``.cache`` and are moved into place only when complete,
so an interrupted download resumes where it stopped and never leaves a partial file at the final
path; the model's ``model.json`` is written last. ``HF_ENDPOINT`` (or ``endpoint=``) points at a mirror.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from vlmkit.engine import store
from vlmkit.engine.catalog import lookup
from vlmkit.engine.gguf_meta import is_gguf, read_model_meta
from vlmkit.errors import HubUnreachableError, ModelDownloadError, ModelLoadError, ModelNotFoundError

_QUANT_PREFERENCE = ("q4_k_m", "q4_k_s", "q5_k_m", "q8_0", "q6_k", "f16", "bf16")


def get(
    key: str,
    *,
    mmproj: str | Path | None = None,
    models_dir: str | Path | None = None,
    endpoint: str | None = None,
    progress: bool = True,
    token: str | bool | None = None,
) -> store.StoredModel:
    """Download (or adopt local files for) ``key``; returns where the files are.

    ``key`` is a catalog key (``qwen2-vl-2b-instruct``), a hub ``repo/name`` (its GGUF files are
    listed and a sensible quantisation is picked; ``repo/name:file.gguf`` names one), or a local
    .gguf path (with ``mmproj=`` for its projector), which is copied into the store.
    """
    local = Path(key).expanduser()
    if local.is_file():
        return _adopt(local, Path(mmproj).expanduser() if mmproj else None, models_dir)
    entry = lookup(key)
    if entry is not None:
        name, repo, files = entry.key, entry.repo, [entry.model, *([entry.mmproj] if entry.mmproj else [])]
        model_file, mmproj_file = entry.model, entry.mmproj
    elif "/" in key and not key.startswith((".", "/")):
        repo, _, explicit = key.partition(":")
        model_file, mmproj_file = _pick_files(repo, explicit or None, endpoint, token)
        name = repo
        files = [model_file, *([mmproj_file] if mmproj_file else [])]
    else:
        from vlmkit.engine.catalog import keys

        raise ModelNotFoundError(
            f"{key!r} is not a catalog key, a hub repo/name or a file; known keys: {', '.join(keys())}"
        )
    existing = store.find(name, models_dir)
    if existing is not None:
        return existing
    directory = store.models_dir(models_dir) / store.dir_name(name)
    directory.mkdir(parents=True, exist_ok=True)
    for filename in files:
        _download(repo, filename, directory, endpoint=endpoint, progress=progress, token=token)
    store.write_manifest(directory, name, model_file, mmproj_file, repo)
    found = store.find(name, models_dir)
    assert found is not None
    return found


def _download(
    repo: str, filename: str, directory: Path, *, endpoint: str | None, progress: bool, token: str | bool | None
) -> Path:
    """Fetch one file into ``directory``, resuming a partial one left by an earlier attempt.

    The bytes go to ``.partial/<filename>.incomplete`` (kept across runs, so a later call resumes
    with an HTTP range request) and are moved to the final name only once complete and of the size
    the hub announced.
    """
    import httpx
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.utils import build_hf_headers  # type: ignore[attr-defined]

    final = directory / filename
    if final.exists():
        return final
    url = hf_hub_url(repo, filename, endpoint=endpoint or _endpoint())
    try:
        meta = get_hf_file_metadata(url, token=token)
        partial_dir = directory / ".partial"
        partial_dir.mkdir(exist_ok=True)
        partial = partial_dir / (filename.replace("/", "--") + ".incomplete")
        have = partial.stat().st_size if partial.exists() else 0
        if meta.size is not None and have > meta.size:
            partial.unlink()
            have = 0
        headers = build_hf_headers(token=token)
        if have:
            headers["Range"] = f"bytes={have}-"
        bar = _progress_bar(filename, meta.size, have, progress)
        try:
            with httpx.stream(
                "GET", meta.location, headers=headers, follow_redirects=True, timeout=httpx.Timeout(30.0, connect=10.0)
            ) as response:
                if response.status_code == 416 and have:  # already complete
                    pass
                else:
                    response.raise_for_status()
                    mode = "ab" if have and response.status_code == 206 else "wb"
                    with open(partial, mode) as out:
                        for block in response.iter_bytes():
                            out.write(block)
                            bar.update(len(block))
        finally:
            bar.close()
        size = partial.stat().st_size
        if meta.size is not None and size != meta.size:
            raise ModelDownloadError(
                f"{repo}/{filename}: got {size} of {meta.size} bytes; run the same command again to resume"
            )
        partial.replace(final)
    except (ModelDownloadError, ModelNotFoundError):
        raise
    except Exception as exc:
        raise _translate(exc, repo, filename, directory) from exc
    return final


def _progress_bar(name: str, total: int | None, initial: int, show: bool) -> Any:
    if not show:
        return _SilentTqdm()
    from tqdm.auto import tqdm  # type: ignore[import-untyped]

    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024, desc=name)


def _pick_files(
    repo: str, explicit: str | None, endpoint: str | None, token: str | bool | None
) -> tuple[str, str | None]:
    from huggingface_hub import HfApi

    try:
        files = HfApi(endpoint=endpoint or _endpoint(), token=token).list_repo_files(repo)
    except Exception as exc:
        raise _translate(exc, repo, None, None) from exc
    ggufs = [f for f in files if f.lower().endswith(".gguf")]
    mmprojs = [f for f in ggufs if "mmproj" in f.lower()]
    models = [f for f in ggufs if f not in mmprojs]
    if explicit is not None:
        if explicit not in files:
            raise ModelNotFoundError(f"{repo} has no file {explicit!r}; GGUF files: {', '.join(ggufs) or 'none'}")
        models = [explicit]
    if not models:
        raise ModelNotFoundError(f"{repo} has no GGUF language-model file; files: {', '.join(files[:20])}")

    def rank(name: str) -> tuple[int, str]:
        low = name.lower()
        return (next((i for i, q in enumerate(_QUANT_PREFERENCE) if q in low), len(_QUANT_PREFERENCE)), name)

    def mm_rank(name: str) -> tuple[int, str]:
        low = name.lower()
        return (0 if "q8_0" in low else 1 if "f16" in low else 2, name)

    return sorted(models, key=rank)[0], (sorted(mmprojs, key=mm_rank)[0] if mmprojs else None)


def _adopt(model: Path, mmproj: Path | None, models_dir: str | Path | None) -> store.StoredModel:
    if not is_gguf(model) or read_model_meta(model).is_projector:
        raise ModelLoadError(f"{model} is not the GGUF of a language model")
    if mmproj is not None and not mmproj.is_file():
        raise ModelNotFoundError(f"mmproj file {mmproj} does not exist")
    name = model.stem
    directory = store.models_dir(models_dir) / store.dir_name(name)
    directory.mkdir(parents=True, exist_ok=True)
    for src in (model, mmproj):
        if src is None:
            continue
        final = directory / src.name
        if final.exists() and final.stat().st_size == src.stat().st_size:
            continue
        tmp = directory / (src.name + ".part")
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
        tmp.replace(final)
    store.write_manifest(directory, name, model.name, mmproj.name if mmproj else None, None)
    found = store.find(name, models_dir)
    assert found is not None
    return found


def _endpoint() -> str | None:
    return os.environ.get("HF_ENDPOINT") or None


def _translate(exc: BaseException, repo: str, filename: str | None, directory: Path | None) -> Exception:
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
    )

    what = f"{repo}/{filename}" if filename else repo
    local_hint = (
        "To use files you already have, pass their paths: `vlmkit get /path/model.gguf --mmproj "
        "/path/mmproj.gguf`, or load the .gguf path directly."
    )
    if isinstance(exc, (GatedRepoError,)):
        return ModelDownloadError(f"{repo} is gated on the Hugging Face hub: accept its terms and set HF_TOKEN")
    if isinstance(exc, RepositoryNotFoundError):
        return ModelNotFoundError(f"the Hugging Face hub has no repository {repo!r} (or it is private)")
    if isinstance(exc, LocalEntryNotFoundError | OfflineModeIsEnabled) or _is_connection_error(exc):
        where = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
        return HubUnreachableError(
            f"cannot reach the Hugging Face hub ({where}) to download {what}: {_root_message(exc)}. "
            f"Nothing was written at the final path; `vlmkit get` resumes when the hub is reachable. {local_hint}"
        )
    if isinstance(exc, EntryNotFoundError) or _status(exc) == 404:
        return ModelNotFoundError(f"{repo} has no file {filename!r} on the Hugging Face hub")
    return ModelDownloadError(f"downloading {what} failed: {_root_message(exc)}. {local_hint}")


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    code = getattr(response, "status_code", None)
    return code if isinstance(code, int) else None


def _is_connection_error(exc: BaseException) -> bool:
    import httpx

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, httpx.TransportError | ConnectionError | TimeoutError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _root_message(exc: BaseException) -> str:
    root = exc
    while root.__cause__ is not None:
        root = root.__cause__
    text = str(root).strip().splitlines()
    return text[0] if text else type(root).__name__


class _SilentTqdm:
    """A tqdm stand-in that shows nothing (``progress=False``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.n = 0

    def update(self, n: int = 1) -> None:
        self.n += n

    def close(self) -> None:
        pass

    def __enter__(self) -> _SilentTqdm:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def set_description(self, *args: Any, **kwargs: Any) -> None:
        pass

    def refresh(self, *args: Any, **kwargs: Any) -> None:
        pass
