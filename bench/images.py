"""Image layer speed and memory: prepare, render for Anthropic, pass-through, cache, peak memory.

Run from the repo root on a quiet machine (check `uptime` first):

    python bench/images.py [--repeat 15]

Each scenario runs in a fresh subprocess so its peak memory is its own. Beside vlmkit, the same work
done the way most wrappers do it (full decode with Pillow, thumbnail, re-encode, base64) is timed as
"naive Pillow" for comparison.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "examples" / "images"


def make_inputs(workdir: Path) -> dict[str, Path]:
    """A 12-megapixel JPEG and an acceptable ~5 MB JPEG, made from the real retina photo."""
    from PIL import Image

    out = {}
    with Image.open(IMAGES / "retina.jpg") as im:
        rgb = im.convert("RGB")
    twelve = rgb.resize((4000, 3000), Image.Resampling.BICUBIC)
    out["12mp"] = workdir / "12mp.jpg"
    twelve.save(out["12mp"], quality=90)
    # ~5 MB that OpenAI accepts as it is: 2048 px with fine grain, the kind of detail a phone keeps
    five = Image.blend(
        rgb.resize((2048, 2048), Image.Resampling.BICUBIC),
        Image.effect_noise((2048, 2048), 96).convert("RGB"),
        0.7,
    )
    for quality in (100, 98, 96, 94, 92, 90):
        buf = io.BytesIO()
        five.save(buf, format="JPEG", quality=quality, subsampling=0)
        if buf.tell() <= 5 * 1024 * 1024:
            break
    out["5mb"] = workdir / "5mb.jpg"
    out["5mb"].write_bytes(buf.getvalue())
    return out


def timeit(fn: Callable[[], object], repeat: int) -> float:
    """Median milliseconds of ``repeat`` runs, after two warm-up runs (steady state, as in a server)."""
    fn()
    fn()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1000


def scenario(name: str, paths: dict[str, str], repeat: int) -> dict[str, float]:
    """One measurement, run inside its own process."""
    from PIL import Image

    from vlmkit.images import ANTHROPIC, OPENAI, prepare_image, render_cache

    result: dict[str, float] = {}
    if name == "prepare":
        for photo in sorted(IMAGES.glob("*.[jp][pn]g")):
            data = photo.read_bytes()
            result[photo.name] = timeit(lambda d=data: prepare_image(d), repeat)
        data = Path(paths["12mp"]).read_bytes()
        result["12mp.jpg"] = timeit(lambda: prepare_image(data), repeat)
    elif name == "passthrough":
        data = Path(paths["5mb"]).read_bytes()

        def passthrough() -> str:
            render_cache.clear()
            return prepare_image(data).render(OPENAI).data_url

        assert not prepare_image(data).render(OPENAI).changed
        result["vlmkit"] = timeit(passthrough, repeat)
        result["naive Pillow"] = timeit(lambda: "data:image/jpeg;base64," + base64.b64encode(data).decode(), repeat)
        result["bytes"] = len(data)
    elif name == "anthropic":
        data = Path(paths["12mp"]).read_bytes()

        def render() -> bytes:
            render_cache.clear()
            return prepare_image(data).render(ANTHROPIC).data

        def naive() -> bytes:
            im = Image.open(io.BytesIO(data)).convert("RGB")
            im.thumbnail((1568, 1568), Image.Resampling.LANCZOS)
            buf = io.BytesIO()
            im.save(buf, format="JPEG", quality=85)
            return buf.getvalue()

        result["vlmkit"] = timeit(render, repeat)
        result["naive Pillow"] = timeit(naive, repeat)
    elif name == "cached":
        handle = prepare_image(Path(paths["12mp"]).read_bytes())
        handle.render(ANTHROPIC).data_url  # noqa: B018 - fill the cache
        result["vlmkit"] = timeit(lambda: handle.render(ANTHROPIC).data_url, repeat * 20)
    elif name == "baseline":
        pass
    elif name == "memory":
        data = Path(paths["12mp"]).read_bytes()
        prepare_image(data).render(ANTHROPIC)
    elif name == "memory-naive":
        im = Image.open(io.BytesIO(Path(paths["12mp"]).read_bytes())).convert("RGB")
        im.thumbnail((1568, 1568), Image.Resampling.LANCZOS)
        im.save(io.BytesIO(), format="JPEG", quality=85)
    # peak resident memory of this process since exec (the "baseline" scenario only imports)
    result["peak_rss_mb"] = peak_rss_mb()
    return result


def peak_rss_mb() -> float:
    """VmHWM: unlike ru_maxrss, it is not inherited from the parent across fork and exec."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--scenario", help=argparse.SUPPRESS)
    parser.add_argument("--paths", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.scenario:
        print(json.dumps(scenario(args.scenario, json.loads(args.paths), args.repeat)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        paths = {k: str(v) for k, v in make_inputs(Path(tmp)).items()}
        results = {}
        for name in ("prepare", "passthrough", "anthropic", "cached", "baseline", "memory", "memory-naive"):
            cmd = [sys.executable, __file__, "--scenario", name, "--paths", json.dumps(paths)]
            cmd += ["--repeat", str(args.repeat)]
            results[name] = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    print(f"prepare (sniff + header), median ms over {args.repeat} runs:")
    for photo, ms in results["prepare"].items():
        if photo != "peak_rss_mb":
            print(f"  {photo:<18} {ms:8.3f}")
    mb = results["passthrough"]["bytes"] / 1024 / 1024
    print(f"pass-through of an acceptable {mb:.1f} MB JPEG to a data URL (OpenAI), median ms:")
    print(f"  vlmkit            {results['passthrough']['vlmkit']:8.2f}   (prepare + render + base64)")
    print(f"  naive Pillow      {results['passthrough']['naive Pillow']:8.2f}   (base64 only, no checks)")
    print("12 MP JPEG -> Anthropic-ready JPEG, median ms:")
    print(f"  vlmkit            {results['anthropic']['vlmkit']:8.2f}   (prepare + draft decode + resize + encode)")
    print(f"  naive Pillow      {results['anthropic']['naive Pillow']:8.2f}   (full decode + thumbnail + encode)")
    print(f"repeat render of the same image (cache hit, data URL), median ms: {results['cached']['vlmkit']:.4f}")
    base = results["baseline"]["peak_rss_mb"]
    print(f"peak RSS of a process rendering the 12 MP JPEG for Anthropic (imports alone: {base:.0f} MB):")
    print(f"  vlmkit            {results['memory']['peak_rss_mb']:8.1f} MB")
    print(f"  naive Pillow      {results['memory-naive']['peak_rss_mb']:8.1f} MB")


if __name__ == "__main__":
    main()
