"""Keeping freed memory for the next request: glibc's allocator settings for ``vlmkit serve``.

Every image request allocates a few buffers of megabytes (the body, its JSON string, the decoded
image, the body sent upstream). With glibc's defaults, buffers that size are either mapped fresh
from the kernel or carved from the top of the heap that is handed back to the kernel as soon as it
is free, so each request faults in its memory page by page again: on the machines measured in
BENCHMARKS.md that was 300 page faults and a third of the server's CPU per 1 MB image request.
Raising the mmap threshold and the trim threshold keeps those pages in the process for the next
request; the peak memory under load is unchanged (the pages were needed at the peak anyway), only
idle memory after a burst is returned later (above ``TRIM_THRESHOLD`` of free heap).
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 32 * 1024 * 1024
"""Blocks up to this size come from the reusable heap (glibc's largest allowed value)."""
TRIM_THRESHOLD = 128 * 1024 * 1024
"""Free heap above this is given back to the kernel."""


def keep_freed_memory() -> bool:
    """Apply the settings to this process (glibc only); False where the C library has no ``mallopt``."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):  # musl, macOS, Windows: their allocators have no such settings
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
