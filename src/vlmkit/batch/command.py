"""``vlmkit batch``: its arguments, and the run they ask for (the CLI module only wires it in)."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from vlmkit.errors import BadRequestError

if TYPE_CHECKING:
    from vlmkit.batch.runner import BatchSummary
    from vlmkit.images.fetch import FetchOptions


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "source", help="a folder, a glob ('photos/**/*.jpg'), or a .txt/.csv/.jsonl/.parquet file of images"
    )
    parser.add_argument("--model", required=True, help="local/KEY (the embedded engine) or provider/name")
    parser.add_argument(
        "--output", "-o", required=True, help="a .jsonl file (also the manifest a rerun resumes from) or .parquet"
    )
    parser.add_argument("--prompt", default=None, help="what to ask; {field} takes a row's field (default: describe)")
    parser.add_argument("--system", help="a system prompt")
    parser.add_argument("--image-column", help="the table's image column (default: image, path, url, ...)")
    parser.add_argument("--schema", help="a JSON schema file: answers are JSON objects that fit it")
    parser.add_argument("--max-tokens", type=int, help="the most tokens an answer may take")
    parser.add_argument("--temperature", type=float)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--detail", choices=["low", "high", "auto"], help="the image detail level")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight to a provider (default 8)")
    parser.add_argument("--rpm", type=int, help="at most this many requests a minute")
    parser.add_argument("--tpm", type=int, help="at most this many (estimated) tokens a minute")
    parser.add_argument("--max-retries", type=int, help="retries of a 429 or 5xx answer, with backoff (default 2)")
    parser.add_argument("--threads", type=int, help="CPU threads for a local model")
    parser.add_argument("--api-base", help="the provider's address (a vLLM or vlmkit serve URL with openai/NAME)")
    parser.add_argument("--retry-failed", action="store_true", help="send again the rows recorded as errors")
    parser.add_argument(
        "--mode",
        choices=["direct", "batch", "requests"],
        default="direct",
        help="direct: send each request now (default); batch: through OpenAI's, Anthropic's or Gemini's batch API "
        "(half price, within 24 h); requests: write the OpenAI batch request file (for vllm run-batch), send nothing",
    )
    parser.add_argument("--poll", type=float, default=30.0, help="seconds between looks at a batch job (default 30)")
    parser.add_argument("--dry-run", action="store_true", help="count, estimate tokens and cost; send nothing")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar or lines on stderr")


def run_command(args: argparse.Namespace, fetch: FetchOptions, out: TextIO, err: TextIO) -> int:
    from vlmkit.batch.estimate import adry_run
    from vlmkit.batch.job import DEFAULT_PROMPT, make_job
    from vlmkit.batch.runner import run

    config: dict[str, Any] = {
        k: v
        for k, v in {
            "max_tokens": args.max_tokens,
            "temperature": args.temperature,
            "seed": args.seed,
            "detail": args.detail,
        }.items()
        if v is not None
    }
    schema = _schema(args.schema) if args.schema else None
    prompt = args.prompt or DEFAULT_PROMPT
    if args.dry_run:
        job = make_job(args.model, prompt, args.system, config, schema)
        report = asyncio.run(adry_run(args.source, args.output, job, image_column=args.image_column, fetch=fetch))
        if args.json:
            print(json.dumps(report.__dict__, default=str, indent=2), file=out)
        else:
            print("\n".join(report.lines()), file=out)
        return 0
    common: dict[str, Any] = {
        "model": args.model,
        "prompt": prompt,
        "system": args.system,
        "config": config,
        "response_format": schema,
        "image_column": args.image_column,
        "fetch": fetch,
    }
    if args.mode == "requests":
        from vlmkit.batch.cloud import awrite_requests

        written, unreadable = asyncio.run(
            awrite_requests(
                args.source,
                args.output,
                **common,
            )
        )
        print(f"{args.output}: {written} requests ({unreadable} rows unreadable, left out)", file=out)
        return 0
    if args.mode == "batch":
        from vlmkit.batch.cloud import run_cloud

        summary = run_cloud(
            args.source,
            args.output,
            **common,
            api_base=args.api_base,
            poll=args.poll,
            retry_failed=args.retry_failed,
            progress=None if args.no_progress else err,
        )
        return _report(summary, args.json, out)
    summary = run(
        args.source,
        args.output,
        **common,
        concurrency=args.concurrency,
        rpm=args.rpm,
        tpm=args.tpm,
        max_retries=args.max_retries,
        api_base=args.api_base,
        threads=args.threads,
        retry_failed=args.retry_failed,
        progress=None if args.no_progress else err,
    )
    return _report(summary, args.json, out)


def _report(summary: BatchSummary, as_json: bool, out: TextIO) -> int:
    if as_json:
        print(json.dumps({**summary.__dict__, "output": str(summary.output)}), file=out)
    else:
        print(
            f"{summary.output}: {summary.done} done, {summary.failed} failed, {summary.skipped} skipped "
            f"(recorded before), {summary.duplicates} duplicates, of {summary.rows} rows",
            file=out,
        )
    return 1 if summary.failed else 0


def _schema(path: str) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadRequestError(f"--schema {path}: no such file") from None
    except ValueError as exc:
        raise BadRequestError(f"--schema {path} is not JSON: {exc}") from None
