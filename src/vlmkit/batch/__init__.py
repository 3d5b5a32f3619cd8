"""Many images: a folder, a list or a table of them, each asked the same question, with resume.

>>> from vlmkit import batch
>>> batch.run("photos/", "captions.jsonl", model="local/smolvlm-256m", prompt="Caption this photo.")

One record per row (JSONL or Parquet), a manifest that a rerun resumes from, each distinct
(image, prompt, model, settings) sent once, bounded concurrency and rate limits for providers, and
a dry run that counts and prices a batch before anything is sent. The modules, one concept each:
:mod:`~vlmkit.batch.inputs` (rows), :mod:`~vlmkit.batch.manifest` (keys, resume, atomic records),
:mod:`~vlmkit.batch.job` (what each row is asked), :mod:`~vlmkit.batch.runner` (the run),
:mod:`~vlmkit.batch.limits` (rpm/tpm),
:mod:`~vlmkit.batch.output` (JSONL, Parquet), :mod:`~vlmkit.batch.progress`,
:mod:`~vlmkit.batch.estimate` (the dry run and price table).
"""

from vlmkit.batch.estimate import DryRun, adry_run
from vlmkit.batch.inputs import Row, read_rows
from vlmkit.batch.job import BatchJob, make_job
from vlmkit.batch.manifest import Manifest, row_key
from vlmkit.batch.output import read_records
from vlmkit.batch.runner import BatchSummary, arun, run

__all__ = [
    "BatchJob",
    "BatchSummary",
    "DryRun",
    "Manifest",
    "Row",
    "adry_run",
    "arun",
    "make_job",
    "read_records",
    "read_rows",
    "row_key",
    "run",
]
