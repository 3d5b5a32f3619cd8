"""Where a batch's records end up: a JSONL file (which is also its manifest) or a Parquet file.

A ``.jsonl`` output *is* the manifest: records are appended to it as rows finish, in the order
they finish, each naming its ``row``. A ``.parquet`` output cannot be appended to, so its records
go to a manifest beside it (``NAME.parquet.jsonl``, which a rerun resumes from) and the Parquet
file is written at the end of the run, in row order, to a temporary name and renamed over the old
one: a reader never sees half a file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vlmkit.errors import BadRequestError

FORMATS = (".jsonl", ".parquet")


def journal_path(output: Path) -> Path:
    """The manifest of ``output``: the file itself for JSONL, ``NAME.parquet.jsonl`` beside a Parquet file."""
    suffix = output.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return output
    if suffix == ".parquet":
        return output.with_name(output.name + ".jsonl")
    raise BadRequestError(f"the output {output} must be a .jsonl or .parquet file, not {suffix or 'suffix-less'}")


def write_output(output: Path, records: Sequence[dict[str, Any]]) -> None:
    """Write the final form of ``output`` from the manifest's records (nothing to do for JSONL)."""
    if output.suffix.lower() != ".parquet":
        return
    write_parquet(output, records)


COLUMNS = ("row", "input", "key", "image", "model", "answer", "finish", "duplicate_of", "seconds")
"""Columns with a value of a fixed type; ``parsed``, ``usage``, ``sent`` and ``error`` are JSON text
columns (their shapes differ between rows: a parsed answer is whatever the schema says)."""
JSON_COLUMNS = ("parsed", "usage", "sent", "error")


def write_parquet(output: Path, records: Sequence[dict[str, Any]]) -> None:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ModuleNotFoundError:
        raise BadRequestError("a Parquet output needs pyarrow: pip install 'vlmkit[batch]'") from None
    types = {
        "row": pa.int64(),
        "seconds": pa.float64(),
        "duplicate_of": pa.int64(),
    }
    columns: dict[str, Any] = {}
    for name in COLUMNS:
        columns[name] = pa.array([r.get(name) for r in records], type=types.get(name, pa.string()))
    for name in JSON_COLUMNS:
        values = [None if r.get(name) is None else json.dumps(r[name], ensure_ascii=False) for r in records]
        columns[name] = pa.array(values, type=pa.string())
    table = pa.table(columns)
    tmp = output.with_name(f".{output.name}.{os.getpid()}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, output)


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """The records of a batch output, JSONL or Parquet, with the JSON columns read back."""
    path = Path(path)
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        rows: list[dict[str, Any]] = pq.read_table(path).to_pylist()
        for row in rows:
            for name in JSON_COLUMNS:
                if row.get(name) is not None:
                    row[name] = json.loads(row[name])
        return rows
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
