"""The encoder cache on disk: image embeddings that outlive the process, shared by every process.

Encoding an image is most of the cost of a first turn. A new process (a restarted server, the next
``vlmkit describe``) asking about a picture seen before reads its embeddings back instead. An entry
is named by a hash of all that makes an embedding what it is: the projector (its file's path, size
and modification time, and how it runs), the exact pixels (the image's content identifier and the
size it was rendered at), the chunk of the image, and the preprocessing (mtmd's token bounds,
vlmkit's and llama-cpp-python's versions). See :func:`namespace`.

Safe without locks, across processes and crashes: a write goes to a temporary file in the same
directory, which then takes the entry's name with ``os.replace`` (atomic), so a reader opens a
whole old entry or a whole new one; every read checks a header (the entry's key, the data's length
and its CRC-32), so a file torn by a crash or damaged on disk is never used: it is deleted, and
the next encoding writes it again. Reading an entry touches its modification time, and when the
directory holds more than its bound the least recently used entries go first. Writes run on one
background thread, off the path of the turn that encoded the image; a pending write is read from
memory, and :meth:`EncoderCache.flush` (called when a model unloads, and at exit) waits for them.

Where: ``VLMKIT_CACHE_DIR``; else ``$VLMKIT_HOME/cache`` when ``VLMKIT_HOME`` is set; else
``$XDG_CACHE_HOME/vlmkit``; else ``~/.cache/vlmkit`` (entries under ``embeddings/``). How much:
``LoadOptions.encoder_cache_mb``, else ``VLMKIT_ENCODER_CACHE_MB``, else 1024 MB; 0 turns it off.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import os
import queue
import struct
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vlmkit._files import write_whole
from vlmkit.errors import InvalidSettingError

DEFAULT_MB = 1024
MB = 1024 * 1024
SUFFIX = ".emb"
TEMP_PREFIX = ".tmp-"
STALE_TEMP_SECONDS = 3600.0  # a temporary file this old belongs to a writer that died

MAGIC = b"VKEMB\x00\x01\x00"
_HEADER = struct.Struct("<8sIIQ")  # magic, key length, CRC-32 of the data, data length


def cache_dir() -> Path:
    """vlmkit's cache directory (see the module's docstring for the order it is looked for in)."""
    if os.environ.get("VLMKIT_CACHE_DIR"):
        return Path(os.environ["VLMKIT_CACHE_DIR"]).expanduser()
    if os.environ.get("VLMKIT_HOME"):
        return Path(os.environ["VLMKIT_HOME"]).expanduser() / "cache"
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "vlmkit"
    return Path.home() / ".cache" / "vlmkit"


def embeddings_dir() -> Path:
    return cache_dir() / "embeddings"


def limit_bytes(option_mb: int | None) -> int:
    """The cache's bound: ``option_mb`` (``LoadOptions.encoder_cache_mb``), else the environment's."""
    if option_mb is not None:
        return option_mb * MB
    raw = os.environ.get("VLMKIT_ENCODER_CACHE_MB", "").strip()
    if not raw:
        return DEFAULT_MB * MB
    if not raw.isdigit():
        raise InvalidSettingError(
            f"VLMKIT_ENCODER_CACHE_MB={raw!r} must be a whole number of megabytes, 0 or more "
            "(0 turns the on-disk cache of image embeddings off)"
        )
    return int(raw) * MB


def open_cache(option_mb: int | None) -> EncoderCache | None:
    """The encoder cache a model loaded with ``encoder_cache_mb=option_mb`` uses (None: off)."""
    limit = limit_bytes(option_mb)
    return EncoderCache(embeddings_dir(), limit) if limit > 0 else None


def namespace(projector: str | Path, *, preprocessing: str, device: str) -> str:
    """What, beside the image and the chunk, names an embedding: the projector file and how it runs.

    ``preprocessing`` says how pixels become the projector's input (vlmkit's rendering, mtmd's
    bounds); ``device`` where the projector runs (a GPU computes slightly different floats).
    """
    from vlmkit._version import __version__
    from vlmkit.engine import native

    path = Path(projector).resolve()
    st = path.stat()
    return (
        f"projector={path}|{st.st_size}|{st.st_mtime_ns}|{preprocessing}|device={device}"
        f"|vlmkit={__version__}|llama-cpp-python={native.version()}"
    )


@dataclass(frozen=True)
class CacheSummary:
    """What ``vlmkit cache ls`` shows."""

    directory: Path
    entries: int
    size_bytes: int
    limit_bytes: int


def summary(option_mb: int | None = None) -> CacheSummary:
    directory = embeddings_dir()
    files = _entries(directory)
    return CacheSummary(directory, len(files), sum(size for _, size, _ in files), limit_bytes(option_mb))


def clear() -> tuple[int, int]:
    """Delete every entry (and stale temporary file); returns (entries, bytes) removed."""
    directory = embeddings_dir()
    removed = freed = 0
    for path, size, _ in _entries(directory):
        if _unlink(path):
            removed, freed = removed + 1, freed + size
    _remove_stale_temps(directory, older_than=0.0)
    return removed, freed


class EncoderCache:
    """Embeddings on disk under ``directory``, bounded by ``max_bytes`` (see the module docstring)."""

    def __init__(self, directory: str | Path, max_bytes: int) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self._pending: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)

    def path(self, key: str) -> Path:
        return self.directory / (hashlib.sha256(key.encode("utf-8")).hexdigest() + SUFFIX)

    def get(self, key: str, n_values: int | None = None) -> np.ndarray | None:
        """The embedding stored under ``key`` (``n_values`` float32 values, when given), or None.

        A file that is not a whole, intact entry for ``key`` is deleted and reads as None.
        """
        with self._lock:
            pending = self._pending.get(key)
        if pending is not None:
            return pending
        path = self.path(key)
        try:
            blob = path.read_bytes()
        except OSError:
            return None
        values = _decode(blob, key)
        if values is None or (n_values is not None and values.size != n_values):
            _unlink(path)
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # the access time the eviction goes by (atime is often not kept)
        return values

    def put(self, key: str, values: np.ndarray) -> None:
        """Store ``values`` under ``key`` on the background writer (readable at once through :meth:`get`)."""
        data = np.ascontiguousarray(values, dtype="<f4")
        if data.nbytes > self.max_bytes:
            return
        with self._lock:
            self._pending[key] = data
        _writer().submit(self, key, data)

    def write(self, key: str, values: np.ndarray) -> None:
        """Store ``values`` under ``key`` now, then evict down to the bound."""
        data = np.ascontiguousarray(values, dtype="<f4").tobytes()
        raw_key = key.encode("utf-8")
        blob = _HEADER.pack(MAGIC, len(raw_key), zlib.crc32(data), len(data)) + raw_key + data
        self.directory.mkdir(parents=True, exist_ok=True)
        write_whole(self.path(key), blob, prefix=TEMP_PREFIX)
        self.evict()

    def evict(self) -> None:
        """Delete the least recently used entries until the directory is within the bound."""
        files = _entries(self.directory)
        total = sum(size for _, size, _ in files)
        for path, size, _ in sorted(files, key=lambda f: f[2]):
            if total <= self.max_bytes:
                break
            if _unlink(path):
                total -= size
        _remove_stale_temps(self.directory, older_than=STALE_TEMP_SECONDS)

    def flush(self) -> None:
        """Wait until every write this cache was given is on disk (or has failed)."""
        with self._idle:
            self._idle.wait_for(lambda: not self._pending)

    def _written(self, key: str, data: np.ndarray) -> None:
        with self._idle:
            if self._pending.get(key) is data:
                del self._pending[key]
            self._idle.notify_all()


def _decode(blob: bytes, key: str) -> np.ndarray | None:
    """The values of an entry, or None unless it is whole, intact and stored under ``key``."""
    if len(blob) < _HEADER.size:
        return None
    magic, key_len, crc, data_len = _HEADER.unpack_from(blob)
    start = _HEADER.size + key_len
    if magic != MAGIC or len(blob) != start + data_len or data_len % 4:
        return None
    if blob[_HEADER.size : start] != key.encode("utf-8"):
        return None
    data = memoryview(blob)[start:]
    if zlib.crc32(data) != crc:
        return None
    return np.frombuffer(data, dtype="<f4").astype(np.float32, copy=False)


def _entries(directory: Path) -> list[tuple[Path, int, float]]:
    """Each entry file: (path, size, modification time)."""
    out: list[tuple[Path, int, float]] = []
    try:
        scan = os.scandir(directory)
    except OSError:
        return out
    with scan:
        for item in scan:
            if not item.name.endswith(SUFFIX) or item.name.startswith(TEMP_PREFIX):
                continue
            try:
                st = item.stat()
            except OSError:  # deleted by another process meanwhile
                continue
            out.append((Path(item.path), st.st_size, st.st_mtime))
    return out


def _remove_stale_temps(directory: Path, *, older_than: float) -> None:
    now = time.time()
    try:
        names = [p for p in directory.iterdir() if p.name.startswith(TEMP_PREFIX)]
    except OSError:
        return
    for path in names:
        with contextlib.suppress(OSError):
            if now - path.stat().st_mtime >= older_than:
                path.unlink()


def _unlink(path: Path) -> bool:
    try:
        path.unlink()
    except OSError:
        return False
    return True


class _Writer:
    """One thread per process that writes entries in the order they were given."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[EncoderCache, str, np.ndarray]] = queue.SimpleQueue()
        self._outstanding = 0
        self._done = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="vlmkit-encoder-cache", daemon=True)
        self._thread.start()

    def submit(self, cache: EncoderCache, key: str, data: np.ndarray) -> None:
        with self._done:
            self._outstanding += 1
        self._jobs.put((cache, key, data))

    def drain(self) -> None:
        """Wait for every write submitted so far (at exit: the thread is a daemon)."""
        with self._done:
            self._done.wait_for(lambda: self._outstanding == 0)

    def _run(self) -> None:
        while True:
            cache, key, data = self._jobs.get()
            try:
                cache.write(key, data)
            except Exception:
                pass  # a cache that cannot be written (a full disk, a read-only home) only makes turns slower
            finally:
                cache._written(key, data)
                with self._done:
                    self._outstanding -= 1
                    self._done.notify_all()


_writer_lock = threading.Lock()
_the_writer: _Writer | None = None


def _writer() -> _Writer:
    global _the_writer
    with _writer_lock:
        if _the_writer is None:
            _the_writer = _Writer()
            atexit.register(_the_writer.drain)
        return _the_writer
