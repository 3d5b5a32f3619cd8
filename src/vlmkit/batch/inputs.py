"""What a batch reads: rows, each naming one image and carrying fields for the prompt.

A source is a folder (every image file under it, recursively, in name order), a glob (``**``
recursive), a text file of paths or URLs (one a line), a CSV / JSONL / Parquet file with an image
column, or, from Python, any iterable of strings or mappings (a Hugging Face ``datasets`` dataset is
one: its rows are dicts, an ``Image`` feature a ``{"bytes", "path"}`` dict or a PIL image). Relative
paths in a list, CSV, JSONL or Parquet file are read from that file's folder.

Reading rows reads no image: a row holds what names its image (a path, a URL, bytes); the image is
read when the row runs, so an unreadable image is that row's error, never the source's.
"""

from __future__ import annotations

import csv
import glob
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlmkit.errors import BadRequestError

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".heic", ".heif", ".avif"}
)
"""What a folder or glob counts as an image (a file of another type there is not a row)."""

IMAGE_COLUMNS = ("image", "image_path", "image_url", "path", "url", "file", "filename")
"""The column a table's image is read from when none is named, the first of these it has."""

TABLE_SUFFIXES = (".csv", ".jsonl", ".ndjson", ".parquet", ".txt")


@dataclass(frozen=True)
class Row:
    """One input: its place in the source, what names its image, and its fields (for a prompt template)."""

    index: int
    ref: str
    """How records name the input: the path or URL as written, or ``SOURCE#INDEX`` for image bytes."""
    image: Any
    """A path, a URL, image bytes, a PIL image, or ``None`` when the row has no image (its error)."""
    fields: Mapping[str, Any] = field(default_factory=dict)


def read_rows(source: Any, *, image_column: str | None = None) -> Iterator[Row]:
    """The rows of ``source`` (see the module's docstring), in order."""
    if isinstance(source, (str, os.PathLike)):
        return _from_path(str(source), image_column)
    if isinstance(source, Iterable):
        return _from_items(source, image_column, base=None, name="input")
    raise BadRequestError(
        f"a batch reads a folder, a glob, a .txt/.csv/.jsonl/.parquet file or an iterable of rows, "
        f"not {type(source).__name__}"
    )


def _from_path(source: str, image_column: str | None) -> Iterator[Row]:
    path = Path(source).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        return _files(str(p) for p in files)
    if glob.has_magic(source):
        matches = sorted(glob.glob(os.path.expanduser(source), recursive=True))
        return _files(m for m in matches if Path(m).is_file() and Path(m).suffix.lower() in IMAGE_SUFFIXES)
    if not path.is_file():
        raise BadRequestError(
            f"{source!r} is neither a folder, a glob nor a file: give a folder of images, a glob "
            f"('photos/**/*.jpg'), or a {', '.join(TABLE_SUFFIXES)} file"
        )
    suffix = path.suffix.lower()
    base = path.parent
    if suffix == ".txt":
        lines = [s.strip() for s in path.read_text(encoding="utf-8").splitlines()]
        return _from_items((s for s in lines if s and not s.startswith("#")), None, base, path.name)
    if suffix == ".csv":
        return _from_items(_csv(path), image_column, base, path.name)
    if suffix in (".jsonl", ".ndjson"):
        return _from_items(_jsonl(path), image_column, base, path.name)
    if suffix == ".parquet":
        return _from_items(_parquet(path), image_column, base, path.name)
    if suffix in IMAGE_SUFFIXES:
        return _files([str(path)])
    raise BadRequestError(
        f"{source!r} is a {suffix or 'suffix-less'} file; a batch reads a folder, a glob or a "
        f"{', '.join(TABLE_SUFFIXES)} file"
    )


def _files(paths: Iterable[str]) -> Iterator[Row]:
    for i, p in enumerate(paths):
        yield Row(i, p, p, {"path": p, "name": Path(p).name})


def _csv(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(newline="", encoding="utf-8") as f:
        yield from csv.DictReader(f)


def _jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except ValueError as exc:
                raise BadRequestError(f"{path.name} line {number} is not JSON ({exc}); fix or remove it") from None
            if not isinstance(value, dict):
                raise BadRequestError(f"{path.name} line {number} is a {type(value).__name__}, not a JSON object")
            yield value


def _parquet(path: Path) -> Iterator[dict[str, Any]]:
    try:
        import pyarrow.parquet as pq
    except ModuleNotFoundError:
        raise BadRequestError(f"reading {path.name} needs pyarrow: pip install 'vlmkit[batch]'") from None
    table = pq.ParquetFile(path)
    for batch in table.iter_batches(batch_size=1024):
        yield from batch.to_pylist()


def _from_items(items: Iterable[Any], image_column: str | None, base: Path | None, name: str) -> Iterator[Row]:
    column = image_column
    for i, item in enumerate(items):
        if isinstance(item, (str, os.PathLike)):
            value: Any = str(item)
            fields: Mapping[str, Any] = {"path": value}
        elif isinstance(item, Mapping):
            if column is None:
                column = _image_column(item, name)
            if column not in item:
                raise BadRequestError(
                    f"row {i} of {name} has no column {column!r}; its columns: {', '.join(map(str, item))}"
                )
            value, fields = item[column], item
        else:
            value, fields = item, {}
        yield _row(i, value, fields, base, name)


def _image_column(item: Mapping[str, Any], name: str) -> str:
    for candidate in IMAGE_COLUMNS:
        if candidate in item:
            return candidate
    raise BadRequestError(
        f"{name} has no image column (looked for {', '.join(IMAGE_COLUMNS)}); its columns: "
        f"{', '.join(map(str, item))}. Name it with --image-column (image_column= in Python)"
    )


def _row(index: int, value: Any, fields: Mapping[str, Any], base: Path | None, name: str) -> Row:
    if isinstance(value, Mapping):  # a Hugging Face Image feature: {"bytes": ..., "path": ...}
        data, where = value.get("bytes"), value.get("path")
        if data is not None:
            return Row(index, str(where) if where else f"{name}#{index}", bytes(data), fields)
        value = where
    if isinstance(value, str):
        ref = value
        if base is not None and "://" not in value and not value.startswith("data:") and not os.path.isabs(value):
            value = str(base / value)
        return Row(index, ref, value, fields)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return Row(index, f"{name}#{index}", bytes(value), fields)
    if value is None:
        return Row(index, f"{name}#{index}", None, fields)
    return Row(index, f"{name}#{index}", value, fields)  # a PIL image, a file object: prepare_image decides
