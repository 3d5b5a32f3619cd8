"""Writing a file whole or not at all: the one way vlmkit puts bytes on disk that others read back.

The bytes go to a temporary file of a name of its own in the same directory (so two writers of the
same path never share the file being written, and the rename stays on one file system), which then
takes the final name with ``os.replace``: a reader sees the old file or the new one, never a torn
one, and a crash leaves at most a temporary file, never a half-written final one.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["write_whole"]


def write_whole(path: str | os.PathLike[str], data: bytes, *, prefix: str = ".") -> None:
    """``data`` at ``path``, all of it or nothing. ``prefix`` names the temporary file (a sweeper of
    leftovers can look for it); it is removed if the write fails."""
    final = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f"{prefix}{final.name}.", suffix=".part", dir=final.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, final)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
