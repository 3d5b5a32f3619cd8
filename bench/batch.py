"""Throughput of ``vlmkit batch`` against the loop a user writes today, in the same run.

Local: the embedded engine over images cut from the real photos in examples/images, on a model with
SmolVLM-256M-Instruct's exact dimensions (random weights, generated on first use into bench/.models/),
2 threads, 16 answer tokens; ``vlmkit.batch.run`` over the folder against a ``for`` loop over
``model.respond`` (prepare the image, build the chat, respond). Each case runs in its own process
with its own empty encoder cache, and is timed from before the model loads to the last answer.

Provider: ``vlmkit.batch.run`` with ``openai/gpt-4o`` against an OpenAI-compatible fake upstream
(a separate process on 127.0.0.1 answering a fixed completion), at concurrency 1, 8 and 32, against
a plain asyncio loop over LiteLLM's ``acompletion`` with a semaphore of the same size (each image
read and sent as a base64 data URL, as a user would).

    python bench/batch.py                  # 200 local images, 256 provider images
    python bench/batch.py --quick          # a few images on the tiny test model: checks the script works

Check the machine is quiet first (``uptime``). Results go to BENCHMARKS.md by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PHOTOS = ("grace_hopper.jpg", "rocket.jpg", "retina.jpg", "chelsea.png", "coffee.png")
THREADS = 2
MAX_TOKENS = 16
PROMPT = "Describe this image in one sentence."
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(HERE))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network fetch at import

from providers import UPSTREAM  # noqa: E402  (bench/providers.py: the same fake upstream)


def photo_images(folder: Path, count: int, size: int = 384) -> list[Path]:
    """``count`` distinct JPEGs of ``size`` px cut (and rescaled) from the real photos."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    sources = []
    for name in PHOTOS:
        with Image.open(ROOT / "examples" / "images" / name) as im:
            sources.append(im.convert("RGB"))
    out = []
    for i in range(count):
        im = sources[i % len(sources)]
        step = i // len(sources)
        side = min(im.width, im.height) - (step % 7) * 11
        box = ((step * 13) % max(1, im.width - side), (step * 7) % max(1, im.height - side))
        crop = im.crop((*box, box[0] + side, box[1] + side)).resize((size, size), Image.Resampling.BILINEAR)
        path = folder / f"img{i:04d}.jpg"
        crop.save(path, quality=88)
        out.append(path)
    return out


def model_home(quick: bool) -> Path:
    """A VLMKIT_HOME whose store holds the SmolVLM-shaped model (``--quick``: the tiny test model) as ``smol``."""
    from vlmkit.engine.store import write_manifest
    from vlmkit.engine.synthetic import write_smolvlm_256m, write_test_model

    if quick:
        model, mmproj = write_test_model(HERE / ".models" / "tiny")
    else:
        model, mmproj = write_smolvlm_256m(HERE / ".models")
    home = HERE / ".models" / ("home-quick" if quick else "home")
    directory = home / "models" / "smol"
    directory.mkdir(parents=True, exist_ok=True)
    for path in (model, mmproj):
        link = directory / path.name
        if not link.exists():
            link.symlink_to(path)
    write_manifest(directory, "smol", model.name, mmproj.name, repo=None)
    return home


# --- local: one case per process ------------------------------------------------------------------


def local_case(case: str, folder: Path) -> float:
    """Images per second of ``case`` over the folder (from before the load to the last answer)."""
    paths = sorted(folder.glob("*.jpg"))
    started = time.perf_counter()
    if case == "naive":
        import vlmkit as vk

        vk.configure_default_client(timeout=None)
        model = vk.llm("smol", config={"cpuThreads": THREADS})
        for path in paths:
            chat = vk.Chat()
            chat.add_user_message(PROMPT, images=[vk.prepare_image(path)])
            model.respond(chat, config={"maxTokens": MAX_TOKENS, "temperature": 0})
    else:
        from vlmkit import batch

        with tempfile.TemporaryDirectory() as out:
            summary = batch.run(
                folder,
                Path(out) / "out.jsonl",
                model="local/smol",
                prompt=PROMPT,
                config={"max_tokens": MAX_TOKENS, "temperature": 0},
                threads=THREADS,
            )
            assert summary.done == len(paths) and not summary.failed, summary
    return len(paths) / (time.perf_counter() - started)


def run_local(count: int, quick: bool) -> dict[str, float]:
    home = model_home(quick)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "img"
        photo_images(folder, count)
        for case in ("naive", "batch"):
            env = {**os.environ, "VLMKIT_HOME": str(home), "VLMKIT_CACHE_DIR": str(Path(tmp) / f"cache-{case}")}
            env["PYTHONPATH"] = str(ROOT / "src")
            out = subprocess.run(
                [sys.executable, __file__, "--child", case, str(folder)], env=env, capture_output=True, text=True
            )
            if out.returncode:
                raise SystemExit(out.stderr)
            results[case] = float(out.stdout.strip().splitlines()[-1])
    return results


# --- provider: the fake upstream -----------------------------------------------------------------


async def litellm_loop(paths: list[Path], base: str, concurrency: int) -> float:
    import litellm

    slots = asyncio.Semaphore(concurrency)

    async def one(path: Path) -> None:
        async with slots:
            data = base64.b64encode(path.read_bytes()).decode()
            content = [
                {"type": "text", "text": PROMPT},
                {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{data}"}},
            ]
            await litellm.acompletion(
                model="openai/gpt-4o", api_base=base, api_key="sk", messages=[{"role": "user", "content": content}]
            )

    started = time.perf_counter()
    await asyncio.gather(*(one(p) for p in paths))
    return len(paths) / (time.perf_counter() - started)


def vlmkit_batch(folder: Path, base: str, concurrency: int, count: int) -> float:
    import aiohttp  # noqa: F401  (its transport, imported before the clock starts, as litellm is for its loop)

    from vlmkit import batch

    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        summary = batch.run(
            folder,
            Path(out) / "o.jsonl",
            model="openai/gpt-4o",
            prompt=PROMPT,
            api_base=base,
            api_key="sk",
            concurrency=concurrency,
        )
        seconds = time.perf_counter() - started
    assert summary.done == count and not summary.failed, summary
    return count / seconds


def run_providers(count: int) -> dict[int, dict[str, float]]:
    server = subprocess.Popen([sys.executable, "-c", UPSTREAM], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        base = f"http://127.0.0.1:{server.stdout.readline().strip()}/v1"
        results: dict[int, dict[str, float]] = {}
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / "img"
            paths = photo_images(folder, count, size=768)
            for concurrency in (1, 8, 32):
                results[concurrency] = {
                    "vlmkit": vlmkit_batch(folder, base, concurrency, count),
                    "litellm": asyncio.run(litellm_loop(paths, base, concurrency)),
                }
        return results
    finally:
        server.terminate()
        server.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a few images: check that the script works")
    ap.add_argument("--local", type=int, default=200, help="images for the local case (default 200; 0: skip it)")
    ap.add_argument("--provider", type=int, default=256, help="images for the provider case (default 256)")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(local_case(args.child[0], Path(args.child[1])))
        return
    local_n, provider_n = (8, 24) if args.quick else (args.local, args.provider)
    local: dict[str, float] = {}
    if local_n:  # --local 0: the provider case alone
        local = run_local(local_n, args.quick)
        shape = "the tiny test model (--quick)" if args.quick else "SmolVLM-256M-shaped model"
        print(f"local, {local_n} images, {shape}, {THREADS} threads, {MAX_TOKENS} tokens:")
        print("| case | images/s |\n|---|---|")
        print(f"| for over model.respond | {local['naive']:.2f} |")
        print(f"| vlmkit batch | {local['batch']:.2f} ({local['batch'] / local['naive']:.2f}x) |")
    providers = run_providers(provider_n)
    print(f"\nprovider, {provider_n} images of 768 px against a loopback fake upstream:")
    print("| concurrency | asyncio + LiteLLM, images/s | vlmkit batch, images/s |\n|---|---|---|")
    for c, r in providers.items():
        print(f"| {c} | {r['litellm']:.1f} | {r['vlmkit']:.1f} ({r['vlmkit'] / r['litellm']:.2f}x) |")
    print(json.dumps({"local": local, "providers": providers}))


if __name__ == "__main__":
    main()
