"""The record of a batch run that a resume trusts: one JSON line per finished row, appended whole.

A row's answer is identified by its *key*, the hash of (image content hash, prompt, model,
settings): the same picture asked the same question of the same model is the same work, whichever
row or run it came from. The manifest keeps every record written, so a run started again with the
same command skips the rows already recorded (by row index and input), answers a row whose key was
answered before from that answer (``duplicate_of`` names the row), and sends only the rest.

Writes are made to be trusted after a ``kill -9`` or a power cut: each record is one line written
with a single ``write`` on a file opened for appending, and a line only counts once its newline is
there. Opening the manifest cuts off a torn last line (a record the crash interrupted), so what a
resume reads is only whole records, and the row it held runs again. An exclusive lock keeps a
second run from writing the same manifest at the same time.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

from vlmkit.errors import BadRequestError

FSYNC_EVERY = 1.0
"""Seconds between fsyncs: a crash of the machine loses at most this much (a killed process, nothing)."""


def row_key(image: str, prompt: str, model: str, settings: Mapping[str, Any]) -> str:
    """The key of one piece of work: sha256 over the image's content hash, the prompt, model and settings."""
    text = json.dumps([image, prompt, model, settings], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def custom_id(key: str) -> str:
    """The id a provider's batch API carries for a request, derived from its key (64 characters at most)."""
    return f"vk-{key[:40]}"


_J = TypeVar("_J", bound="JsonLines")


class JsonLines:
    """A file of JSON lines that a crash never leaves half-written (see the module's docstring):
    locked while open, a torn last line cut off on :meth:`open`, each record appended in one write."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.repaired_bytes = 0
        """How many bytes of a torn last line :meth:`open` cut off."""
        self._fd: int | None = None
        self._synced = 0.0

    def open(self: _J) -> _J:
        """Lock the file (creating it), cut off a torn last line, and read the records."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            _lock(fd, self.path)
            data = _read_all(fd)
            whole = data.rfind(b"\n") + 1
            if whole < len(data):
                os.ftruncate(fd, whole)
                os.fsync(fd)
                self.repaired_bytes = len(data) - whole
            for number, record in _records(data[:whole], self.path):
                self.remember(record, number)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return self

    @classmethod
    def peek(cls: type[_J], path: str | os.PathLike[str]) -> _J:
        """The records of ``path`` read without locking or changing it (a torn last line is ignored);
        none when there is no file."""
        journal = cls(path)
        try:
            data = journal.path.read_bytes()
        except FileNotFoundError:
            return journal
        for number, record in _records(data[: data.rfind(b"\n") + 1], journal.path):
            journal.remember(record, number)
        return journal

    def append(self, record: Mapping[str, Any]) -> None:
        """Write one record as one line, in one ``write``; fsync at most every :data:`FSYNC_EVERY` s."""
        if self._fd is None:
            raise RuntimeError(f"{self.path} is not open")
        line = json.dumps(record, ensure_ascii=False, separators=(",", ":"), default=str).encode("utf-8") + b"\n"
        view = memoryview(line)
        while view:  # a regular file takes the whole line at once; a short write is finished, never left
            written = os.write(self._fd, view)
            view = view[written:]
        self.remember(dict(record), None)
        now = time.monotonic()
        if now - self._synced >= FSYNC_EVERY:
            os.fsync(self._fd)
            self._synced = now

    def remember(self, record: dict[str, Any], number: int | None) -> None:
        """Take in one record read back or appended (a subclass indexes them)."""

    def close(self) -> None:
        if self._fd is not None:
            os.fsync(self._fd)
            os.close(self._fd)  # closing lets go of the lock
            self._fd = None

    def __enter__(self: _J) -> _J:
        return self.open() if self._fd is None else self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Manifest(JsonLines):
    """The records of one batch output, read on :meth:`open` and appended as rows finish."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__(path)
        self.rows: dict[int, dict[str, Any]] = {}
        """Each finished row's record, by row index (the last one written wins)."""
        self.answers: dict[str, dict[str, Any]] = {}
        """Each key's first answered record (errors included), for rows that ask the same."""

    def records(self) -> list[dict[str, Any]]:
        """Every row's record, in row order."""
        return [self.rows[i] for i in sorted(self.rows)]

    def remember(self, record: dict[str, Any], number: int | None) -> None:
        row = record.get("row")
        if not isinstance(row, int):
            where = f" line {number}" if number is not None else ""
            raise BadRequestError(f"{self.path}{where} is not a vlmkit batch record (no row); write to a new output")
        self.rows[row] = record
        key = record.get("key")
        if key and key not in self.answers:
            self.answers[key] = record


def _lock(fd: int, path: Path) -> None:
    try:
        import fcntl
    except ModuleNotFoundError:  # Windows: no advisory lock; one run at a time is then the user's to keep
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise BadRequestError(
            f"another vlmkit batch is writing {path}; wait for it to finish or write to another output"
        ) from None


def _read_all(fd: int) -> bytes:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def _records(data: bytes, path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    for number, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            raise BadRequestError(
                f"{path} line {number} is not a JSON record: the file was changed by hand or is not a "
                "vlmkit batch output; fix that line or write to a new output"
            ) from None
        if not isinstance(record, dict):
            raise BadRequestError(f"{path} line {number} is not a vlmkit batch record; write to a new output")
        yield number, record
