"""PDF pages for a vision model: a 50-page PDF to an Anthropic-ready page set, vlmkit against the
common route (pdf2image + Pillow), pages per second and peak memory.

- vlmkit: ``prepare_document(pdf, target=ANTHROPIC)`` (pdfium renders each page straight to
  Anthropic's size limits, PNG), then each page's base64 for the request body;
- pdf2image + Pillow: ``convert_from_bytes(pdf)`` (poppler's pdftoppm at its default 200 dpi, every
  page held as a PIL image), ``thumbnail`` to the same limits, PNG, base64: the route most guides
  and wrappers take.

Both give pages of the same size. Each route runs in its own process (so peak memory, VmHWM, is its
own), on the same generated PDF (text and shapes on US-letter pages).

    python bench/media.py            # 50 pages, the median of 3 runs
    python bench/media.py --quick    # 8 pages, one run: checks that it works, measures nothing

Check the machine is quiet first (``uptime``); pdftoppm comes with poppler-utils.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def make_document(pages: int) -> bytes:
    sys.path.insert(0, str(ROOT))
    from tests.media import PageSpec, make_pdf

    specs = [
        PageSpec(
            text=f"Quarterly report, page {n}", rects=[(72, 150, 540, 160), (72, 200, 300, 420), (320, 200, 540, 420)]
        )
        for n in range(1, pages + 1)
    ]
    return make_pdf(specs)


def run_vlmkit(pdf: bytes) -> int:
    from vlmkit.images import ANTHROPIC, prepare_document

    doc = prepare_document(pdf, target=ANTHROPIC)
    return sum(len(page.image.render(ANTHROPIC).base64) for page in doc.pages)


def run_pdf2image(pdf: bytes) -> int:
    from pdf2image import convert_from_bytes
    from PIL import Image

    from vlmkit.images import ANTHROPIC

    total = 0
    for page in convert_from_bytes(pdf):
        page.thumbnail(ANTHROPIC.target_size(*page.size), Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        page.save(buf, format="PNG")
        total += len(base64.b64encode(buf.getvalue()))
    return total


def peak_rss_mb() -> float:
    """VmHWM: unlike ru_maxrss, it is not inherited from the parent across fork and exec."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def child(route: str, path: str) -> dict[str, float]:
    pdf = Path(path).read_bytes()
    run = run_vlmkit if route == "vlmkit" else run_pdf2image
    import pdf2image  # noqa: F401  (imports are not what is timed)
    import pypdfium2  # noqa: F401

    import vlmkit.images  # noqa: F401

    t0 = time.perf_counter()
    size = run(pdf)
    return {"seconds": time.perf_counter() - t0, "peak_rss_mb": peak_rss_mb(), "base64_bytes": size}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="8 pages, one run (a check that it works)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(*args.child)))
        return
    pages, runs = (8, 1) if args.quick else (50, args.runs)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "report.pdf"
        path.write_bytes(make_document(pages))
        results: dict[str, list[dict[str, float]]] = {"vlmkit": [], "pdf2image": []}
        for _ in range(runs):
            for route in results:
                cmd = [sys.executable, __file__, "--child", route, str(path)]
                out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT).stdout
                results[route].append(json.loads(out))
    print(f"{pages}-page PDF -> Anthropic-ready pages (PNG, base64), median of {runs} run(s):")
    for route, label in (("vlmkit", "vlmkit (pdfium)"), ("pdf2image", "pdf2image + Pillow")):
        seconds = statistics.median(r["seconds"] for r in results[route])
        rss = statistics.median(r["peak_rss_mb"] for r in results[route])
        mb = results[route][0]["base64_bytes"] / 1024 / 1024
        print(f"  {label:<20} {pages / seconds:7.1f} pages/s  peak RSS {rss:6.0f} MB  ({mb:.1f} MB of base64)")


if __name__ == "__main__":
    main()
