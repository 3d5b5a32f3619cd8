"""``vlmkit serve`` keeps freed memory for the next request instead of faulting it in again."""

from __future__ import annotations

import subprocess
import sys

import pytest

CHURN = """
import resource, sys
from vlmkit.server.memory import keep_freed_memory
if sys.argv[1] == "kept" and not keep_freed_memory():
    sys.exit(print(-1))  # not glibc: nothing to keep

def request():  # the large buffers of one image request, written to (b"x" * n touches every page)
    buffers = [b"x" * (3 << 20) for _ in range(4)]
    del buffers

request()
start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    request()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start)
"""


def faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", CHURN, mode], capture_output=True, text=True, check=True)
    return int(out.stdout)


def test_freed_buffers_are_reused_without_page_faults() -> None:
    default, kept = faults("default"), faults("kept")
    if kept < 0:
        pytest.skip("the C library is not glibc: its allocator has no such settings")
    # with glibc's defaults every round hands the heap back and faults all 12 MB in again (about 3,000 pages)
    assert default > 20 * 1000
    assert kept < default / 20
