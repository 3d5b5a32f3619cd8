"""A batch before it is sent (``--dry-run``): how many rows, how many go out, their image tokens per
target, and what they would cost at the list prices shipped with vlmkit (``prices.json``).

Image tokens are the providers' documented formulas (:mod:`vlmkit.images.tokens`), for OpenAI,
Anthropic and Gemini, whatever the model, so targets can be compared; the cost uses the model's
own target. Text tokens are estimated at four characters a token, and the answer at its limit
(``max_tokens``, else 256 a row): the cost is an upper bound of the output side, not a forecast.
A local model costs nothing but time. Nothing is sent and nothing is written.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlmkit._types import Detail
from vlmkit.batch.inputs import read_rows
from vlmkit.batch.manifest import Manifest
from vlmkit.batch.output import journal_path
from vlmkit.errors import VlmkitError
from vlmkit.images import ImageHandle, aprepare_image, estimate_image_tokens

if TYPE_CHECKING:
    from vlmkit.batch.job import BatchJob
    from vlmkit.images.fetch import FetchOptions

TARGETS = ("openai", "anthropic", "gemini")
_TOKEN_TARGET = {
    "openai": "openai",
    "anthropic": "anthropic",
    "gemini": "gemini",
    "vertex": "gemini",
    "bedrock": "anthropic",
}
DEFAULT_ANSWER_TOKENS = 256


def image_tokens(image: ImageHandle, kind: str, detail: Any = "auto") -> int:
    """The documented token cost of ``image`` for a provider module ``kind`` (OpenAI's for the
    OpenAI-compatible family and any provider without a published formula); 0 for a reference."""
    if image.is_reference:
        return 0
    level: Detail = detail if detail in ("low", "high") else "auto"
    return estimate_image_tokens(image, _TOKEN_TARGET.get(kind, "openai"), level)


@cache
def price_table() -> dict[str, Any]:
    text = resources.files("vlmkit.batch").joinpath("prices.json").read_text(encoding="utf-8")
    table: dict[str, Any] = json.loads(text)
    return table


def price_of(model: str) -> tuple[float, float] | None:
    """(input, output) USD per million tokens for ``model``: the longest key of the table it starts with."""
    models: Mapping[str, list[float]] = price_table()["models"]
    matches = [k for k in models if model == k or model.startswith(k + "-") or model.startswith(k + "@")]
    if not matches:
        return None
    inp, out = models[max(matches, key=len)]
    return float(inp), float(out)


@dataclass
class DryRun:
    model: str
    rows: int = 0
    recorded: int = 0
    """Rows the manifest already has (a rerun skips them)."""
    to_send: int = 0
    duplicates: int = 0
    """Rows whose image and prompt another row asks already: answered once, recorded twice."""
    unreadable: int = 0
    errors: list[str] = field(default_factory=list)
    """The first few unreadable rows, with why."""
    image_tokens: dict[str, int] = field(default_factory=dict)
    """Image tokens of the rows to send, per target."""
    text_tokens: int = 0
    answer_tokens: int = 0
    price: tuple[float, float] | None = None
    cost_usd: float | None = None
    batch_cost_usd: float | None = None
    """The cost through the provider's batch API (``--mode batch``), where it has one."""

    def lines(self) -> list[str]:
        out = [
            f"{self.rows} rows: {self.to_send} to send, {self.recorded} already recorded, "
            f"{self.duplicates} duplicates (sent once), {self.unreadable} unreadable",
        ]
        out += [f"  unreadable: {e}" for e in self.errors]
        tokens = ", ".join(f"{t} {n:,}" for t, n in self.image_tokens.items())
        out.append(f"image tokens of the rows to send: {tokens}")
        out.append(f"text tokens about {self.text_tokens:,}; answers at most {self.answer_tokens:,} tokens")
        if self.cost_usd is not None and self.price is not None:
            line = (
                f"cost at most ${self.cost_usd:,.4f} for {self.model} "
                f"(${self.price[0]}/M in, ${self.price[1]}/M out, prices as of {price_table()['as_of']})"
            )
            if self.batch_cost_usd is not None:
                line += f"; ${self.batch_cost_usd:,.4f} with --mode batch"
            out.append(line)
        elif self.model.startswith("local/") or "/" not in self.model:
            out.append("cost: none (a local model)")
        else:
            out.append(f"cost: {self.model} is not in vlmkit's price table (vlmkit/batch/prices.json)")
        return out


async def adry_run(
    source: Any,
    output: str | Path,
    job: BatchJob,
    *,
    image_column: str | None = None,
    fetch: FetchOptions | None = None,
    concurrency: int = 8,
) -> DryRun:
    """Read every row's image (headers and content hashes) and count what a run would do."""
    rows = list(read_rows(source, image_column=image_column))
    recorded = Manifest.peek(journal_path(Path(output)))
    report = DryRun(job.model, rows=len(rows), image_tokens=dict.fromkeys(TARGETS, 0))
    kind = job.model.partition("/")[0] if not job.local else "local"
    if kind not in report.image_tokens and kind != "local":
        report.image_tokens[kind] = 0
    seen: set[str] = set(recorded.answers)
    answer = job.config.max_tokens or DEFAULT_ANSWER_TOKENS
    slots = asyncio.Semaphore(concurrency)

    async def read(row: Any) -> ImageHandle | VlmkitError:
        async with slots:
            try:
                return await aprepare_image(row.image, fetch=fetch)
            except VlmkitError as exc:
                return exc

    todo = [r for r in rows if (rec := recorded.rows.get(r.index)) is None or rec.get("input") != r.ref]
    report.recorded = len(rows) - len(todo)
    images = await asyncio.gather(*(read(r) for r in todo))
    for row, image in zip(todo, images, strict=True):
        if isinstance(image, VlmkitError):
            report.unreadable += 1
            if len(report.errors) < 5:
                report.errors.append(f"{row.ref}: {image}")
            continue
        prompt = job.prompt_for(row)
        key = job.key(image, prompt)
        if key in seen:
            report.duplicates += 1
            continue
        seen.add(key)
        report.to_send += 1
        for target in report.image_tokens:
            report.image_tokens[target] += image_tokens(image, target, job.config.detail)
        report.text_tokens += math.ceil((len(prompt) + len(job.system or "")) / 4)
        report.answer_tokens += answer
    report.price = None if job.local else price_of(job.model)
    if report.price is not None:
        own = report.image_tokens.get(kind, report.image_tokens["openai"])
        cost = ((own + report.text_tokens) * report.price[0] + report.answer_tokens * report.price[1]) / 1e6
        report.cost_usd = cost
        discount = price_table()["batch_discount"].get(kind)
        report.batch_cost_usd = cost * discount if discount is not None else None
    return report
