"""vlmkit's batch as a Ray Data stage (``pip install 'vlmkit[ray]'``): the same job over a dataset of
millions, on a cluster.

>>> import ray
>>> from vlmkit.batch.ray import VlmkitPredictor
>>> ds = ray.data.read_parquet("s3://bucket/photos.parquet")          # a column of paths, URLs or bytes
>>> out = ds.map_batches(VlmkitPredictor, fn_constructor_kwargs={"model": "openai/gpt-4o-mini",
...     "prompt": "Caption this photo."}, concurrency=16, batch_size=64)
>>> out.write_parquet("s3://bucket/captions/")

:class:`VlmkitPredictor` is a callable class: Ray makes one per actor, so each actor holds one loaded
local model (``local/KEY``: the process's one engine) or one provider client, made once and used for
every batch it is given. A batch goes through the run's own pipeline (:class:`~vlmkit.batch.runner.Runner`):
each image read and keyed by (content hash, prompt, model, settings), sent once per block, a bad
image an error in its row, provider requests many at a time within the limits. With
``manifest_dir`` (a directory every actor can write, one file per block, named by the block's
inputs), a block that ran before is answered from its manifest when the job runs again, so a
restarted job pays only for the blocks it had not finished.

To point the same job at a fleet of vLLM or ``vlmkit serve`` servers, give the OpenAI-compatible
route and the address: ``{"model": "hosted_vllm/Qwen2-VL-7B-Instruct", "api_base":
"http://vllm.internal:8000/v1"}`` (or ``openai/NAME`` with a ``vlmkit serve`` URL and its key).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlmkit.batch.inputs import IMAGE_COLUMNS, Row
from vlmkit.batch.job import DEFAULT_PROMPT, make_job
from vlmkit.batch.limits import RateLimiter
from vlmkit.batch.manifest import Manifest
from vlmkit.batch.progress import Progress
from vlmkit.batch.runner import LocalTarget, ProviderTarget, Runner, Target
from vlmkit.errors import BadRequestError
from vlmkit.prediction import PredictionConfig

if TYPE_CHECKING:
    from vlmkit.images.fetch import FetchOptions

OUTPUT_COLUMNS = ("answer", "parsed", "error", "key", "image_id", "duplicate_of")
"""What a batch gains: the answer, the parsed structured answer and the error (both JSON text),
the row's key, the image's content hash, and the row of the same block it duplicates."""


class VlmkitPredictor:
    """A ``map_batches`` callable class: one model or provider client per actor (see the module)."""

    def __init__(
        self,
        model: str,
        prompt: str = DEFAULT_PROMPT,
        *,
        system: str | None = None,
        config: PredictionConfig | Mapping[str, Any] | None = None,
        response_format: Any = None,
        image_column: str | None = None,
        threads: int | None = None,
        models_dir: str | None = None,
        api_base: str | None = None,
        api_key: str | None = None,
        concurrency: int = 8,
        rpm: int | None = None,
        tpm: int | None = None,
        fetch: FetchOptions | None = None,
        manifest_dir: str | None = None,
    ) -> None:
        self.job = make_job(model, prompt, system, config, response_format)
        self.image_column = image_column
        self.concurrency = concurrency
        self.fetch = fetch
        self.limiter = RateLimiter(rpm, tpm)
        self.manifest_dir = Path(manifest_dir) if manifest_dir else None
        self.loop = asyncio.new_event_loop()
        self.target: Target = (
            LocalTarget(self.job, threads=threads, models_dir=models_dir)
            if self.job.local
            else ProviderTarget(self.job, api_base=api_base, api_key=api_key, concurrency=concurrency)
        )
        self.loop.run_until_complete(self.target.start())

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, list[Any]]:
        columns = {name: list(values) for name, values in batch.items()}
        count = len(next(iter(columns.values()), []))
        column = self.image_column or next((c for c in IMAGE_COLUMNS if c in columns), None)
        if column is None or column not in columns:
            raise BadRequestError(
                f"the dataset has no image column {column or '(looked for ' + ', '.join(IMAGE_COLUMNS) + ')'}; "
                f"its columns: {', '.join(columns)}. Pass image_column= in fn_constructor_kwargs"
            )
        rows = [_row(i, columns[column][i], {k: v[i] for k, v in columns.items()}) for i in range(count)]
        records = self.loop.run_until_complete(self._run(rows))
        out = dict(columns)
        for name in OUTPUT_COLUMNS:
            out[name] = [_column(records.get(i, {}), name) for i in range(count)]
        return out

    async def _run(self, rows: list[Row]) -> dict[int, dict[str, Any]]:
        with tempfile.TemporaryDirectory() as scratch:
            directory = self.manifest_dir or Path(scratch)
            with Manifest(directory / f"{_block_id(rows)}.jsonl") as manifest:
                runner = Runner(self.job, self.target, manifest, self.limiter, Progress(), self.fetch, False)
                todo = [row for row in rows if not runner.recorded(row)]
                if todo:
                    await runner.run_all(todo, self.concurrency)
                return dict(manifest.rows)

    def __del__(self) -> None:
        target, loop = getattr(self, "target", None), getattr(self, "loop", None)
        if target is not None and loop is not None and not loop.is_closed():
            loop.run_until_complete(target.aclose())
            loop.close()


def _row(index: int, value: Any, fields: Mapping[str, Any]) -> Row:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return Row(index, f"bytes:{hashlib.sha256(bytes(value)).hexdigest()[:16]}", bytes(value), fields)
    if isinstance(value, Mapping) and value.get("bytes") is not None:  # a Hugging Face Image feature
        return Row(index, str(value.get("path") or f"row {index}"), bytes(value["bytes"]), fields)
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # a numpy scalar
        value = value.item()
    return Row(index, str(value), None if value is None else str(value), fields)


def _block_id(rows: list[Row]) -> str:
    """A block's name: the hash of its inputs, so that the same block finds its manifest again."""
    digest = hashlib.sha256()
    for row in rows:
        digest.update(row.ref.encode("utf-8", "replace") + b"\0")
    return digest.hexdigest()[:32]


def _column(record: Mapping[str, Any], name: str) -> Any:
    if name == "image_id":
        return record.get("image")
    value = record.get(name)
    if name in ("parsed", "error"):
        return None if value is None else json.dumps(value, ensure_ascii=False)
    return value
