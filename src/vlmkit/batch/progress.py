"""How far a batch is: one bar redrawn in place on a terminal, plain log lines anywhere else.

It counts rows done, failed and skipped (recorded by an earlier run), and shows rows per second and,
when the total is known, the time left. Off a terminal (a log file, CI) it writes one line every
``every`` seconds and one at the end, so logs stay readable.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import TextIO


@dataclass
class Counts:
    done: int = 0
    failed: int = 0
    skipped: int = 0
    duplicates: int = 0

    @property
    def finished(self) -> int:
        return self.done + self.failed + self.skipped


@dataclass
class Progress:
    total: int | None = None
    stream: TextIO | None = None
    tty: bool | None = None
    """Draw a bar (True) or write lines (False); ``None``: a bar when ``stream`` is a terminal."""
    every: float = 10.0
    counts: Counts = field(default_factory=Counts)
    _started: float = field(default_factory=time.monotonic)
    _shown: float = 0.0

    def __post_init__(self) -> None:
        if self.tty is None:
            isatty = getattr(self.stream, "isatty", None)
            self.tty = bool(isatty and isatty())

    def add(self, *, done: int = 0, failed: int = 0, skipped: int = 0, duplicates: int = 0) -> None:
        c = self.counts
        c.done, c.failed, c.skipped, c.duplicates = (
            c.done + done,
            c.failed + failed,
            c.skipped + skipped,
            c.duplicates + duplicates,
        )
        now = time.monotonic()
        if not self._shown:
            self._shown = now  # the first line comes after a while, not for the rows skipped at the start
            return
        if self.stream is None or now - self._shown < (0.1 if self.tty else self.every):
            return
        self._shown = now
        self._show(final=False)

    def close(self) -> None:
        if self.stream is not None:
            self._show(final=True)

    def line(self) -> str:
        c = self.counts
        elapsed = max(time.monotonic() - self._started, 1e-9)
        rate = (c.done + c.failed) / elapsed
        of = f"/{self.total}" if self.total is not None else ""
        text = f"{c.finished}{of} rows: {c.done} done, {c.failed} failed, {c.skipped} skipped"
        if c.duplicates:
            text += f" ({c.duplicates} duplicates)"
        text += f", {rate:.2f} rows/s"
        if self.total is not None and rate > 0 and c.finished < self.total:
            text += f", ETA {_duration((self.total - c.finished) / rate)}"
        return text

    def _show(self, *, final: bool) -> None:
        assert self.stream is not None
        text = self.line()
        if self.tty:
            bar = ""
            if self.total:
                filled = int(24 * min(1.0, self.counts.finished / self.total))
                bar = "[" + "#" * filled + "." * (24 - filled) + "] "
            self.stream.write("\r\x1b[2K" + bar + text + ("\n" if final else ""))
        else:
            self.stream.write(("done: " if final else "") + text + "\n")
        self.stream.flush()


def _duration(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def default_stream() -> TextIO:
    return sys.stderr
