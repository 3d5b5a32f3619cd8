"""Usage per key (requests, tokens, images, image bytes) in a real database, shared by gateway nodes.

``usage: {database: ...}`` in the config names it: a file path is SQLite (the standard library's
``sqlite3``, in WAL mode, so a restarted gateway finds its counts), a ``postgresql://`` URL is
PostgreSQL through ``psycopg`` (``pip install 'vlmkit[gateway]'``), for several gateway nodes that
count into one table. Both speak the same SQL: one table of running totals per key and model, each
answer added by an upsert (``INSERT ... ON CONFLICT ... DO UPDATE``), so nodes never overwrite each
other's counts. :class:`_Database` is the whole difference between the two.

Writes leave the request's path: :meth:`UsageStore.record` puts a row on a queue, and one writer
thread adds what has gathered in a single transaction. :meth:`UsageStore.report` waits for the
queue to drain first, so a report includes every answered request of this node.
"""

from __future__ import annotations

import functools
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import Any, TypeVar

from vlmkit.errors import VlmkitError

log = logging.getLogger("vlmkit.server")
T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS vlmkit_usage (
    key_name TEXT NOT NULL,
    model TEXT NOT NULL,
    requests BIGINT NOT NULL DEFAULT 0,
    prompt_tokens BIGINT NOT NULL DEFAULT 0,
    completion_tokens BIGINT NOT NULL DEFAULT 0,
    images BIGINT NOT NULL DEFAULT 0,
    image_bytes BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (key_name, model)
)
"""

UPSERT = """
INSERT INTO vlmkit_usage (key_name, model, requests, prompt_tokens, completion_tokens, images, image_bytes)
VALUES (%s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (key_name, model) DO UPDATE SET
    requests = vlmkit_usage.requests + excluded.requests,
    prompt_tokens = vlmkit_usage.prompt_tokens + excluded.prompt_tokens,
    completion_tokens = vlmkit_usage.completion_tokens + excluded.completion_tokens,
    images = vlmkit_usage.images + excluded.images,
    image_bytes = vlmkit_usage.image_bytes + excluded.image_bytes
"""

SELECT = """
SELECT key_name, model, requests, prompt_tokens, completion_tokens, images, image_bytes
FROM vlmkit_usage ORDER BY key_name, model
"""


class UsageStoreError(VlmkitError):
    """The usage database cannot be opened or written (its address, its server, a missing driver)."""

    status_code = 503


@dataclass
class Usage:
    key: str
    model: str
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    images: int = 0
    image_bytes: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "model": self.model,
            "requests": self.requests,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "images": self.images,
            "image_bytes": self.image_bytes,
        }


class _Database:
    """One connection, SQLite's or PostgreSQL's; the SQL above is written with ``%s`` for both."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.postgres = url.startswith(("postgresql://", "postgres://"))
        try:
            if self.postgres:
                import psycopg

                self.conn: Any = psycopg.connect(url, autocommit=False, connect_timeout=10)
            else:
                path = Path(url.removeprefix("sqlite:///")).expanduser()
                path.parent.mkdir(parents=True, exist_ok=True)
                self.conn = sqlite3.connect(path, timeout=30, check_same_thread=False, isolation_level=None)
                self.conn.execute("PRAGMA journal_mode=WAL")
        except ImportError:
            raise UsageStoreError(
                "usage in PostgreSQL needs psycopg, which is not installed: pip install 'vlmkit[gateway]'"
            ) from None
        except Exception as exc:
            raise UsageStoreError(f"cannot open the usage database {_safe(url)}: {exc}") from None
        self.execute_script(SCHEMA)

    def _sql(self, sql: str) -> str:
        return sql if self.postgres else sql.replace("%s", "?")

    def execute_script(self, sql: str) -> None:
        if self.postgres:
            with self.conn.transaction():
                self.conn.execute(sql)
        else:
            self.conn.execute(sql)

    def add(self, rows: Sequence[Usage]) -> None:
        values = [astuple(r) for r in rows]
        if self.postgres:
            with self.conn.transaction(), self.conn.cursor() as cur:
                cur.executemany(UPSERT, values)
        else:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                self.conn.executemany(self._sql(UPSERT), values)
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")

    def rows(self) -> list[Usage]:
        if self.postgres:
            with self.conn.transaction():
                found = self.conn.execute(SELECT).fetchall()
        else:
            found = self.conn.execute(SELECT).fetchall()
        return [Usage(str(row[0]), str(row[1]), *(int(v) for v in row[2:])) for row in found]

    def broken(self) -> bool:
        """Whether the connection itself is gone (PostgreSQL; a SQLite file has no connection to lose)."""
        return bool(self.postgres and (self.conn.broken or self.conn.closed))

    def close(self) -> None:
        self.conn.close()


def _safe(url: str) -> str:
    """The address without its password."""
    if "://" in url and "@" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"
    return url


_STOP = object()


class UsageStore:
    """Usage per key and model, written by a background thread into a :class:`_Database`."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._db = _Database(url)
        self._lock = threading.Lock()  # the writer and report() share one connection
        self._queue: queue.Queue[Any] = queue.Queue()
        self._thread = threading.Thread(target=self._write_loop, name="vlmkit-usage", daemon=True)
        self._thread.start()

    def record(self, usage: Usage) -> None:
        self._queue.put(usage)

    def _write_loop(self) -> None:
        while True:
            item = self._queue.get()
            batch = [item]
            while True:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            rows = _merged([u for u in batch if u is not _STOP])
            try:
                if rows:
                    self._using(functools.partial(_Database.add, rows=rows))
            except Exception:
                log.exception("could not write usage of %d request(s) to %s", len(rows), _safe(self.url))
            finally:
                for _ in batch:
                    self._queue.task_done()
            if any(u is _STOP for u in batch):
                return

    def _using(self, work: Callable[[_Database], T]) -> T:
        """``work`` on the database; a connection that broke (a database restarted) is opened again once."""
        with self._lock:
            try:
                return work(self._db)
            except Exception as exc:
                if not self._db.broken():
                    raise
                log.warning("the usage database %s dropped its connection (%s); connecting again", _safe(self.url), exc)
                self._db.close()
                self._db = _Database(self.url)
                return work(self._db)

    def report(self) -> list[Usage]:
        """Every key's usage, this node's recorded requests included (blocks: call from a thread)."""
        self._queue.join()
        return self._using(lambda db: db.rows())

    def close(self) -> None:
        """Write what is queued, then close the connection."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join(30)
        with self._lock:
            self._db.close()


def _merged(rows: Sequence[Usage]) -> list[Usage]:
    """Rows of the same key and model added together (one upsert each, in a stable order)."""
    out: dict[tuple[str, str], Usage] = {}
    for r in rows:
        m = out.setdefault((r.key, r.model), Usage(r.key, r.model))
        m.requests += r.requests
        m.prompt_tokens += r.prompt_tokens
        m.completion_tokens += r.completion_tokens
        m.images += r.images
        m.image_bytes += r.image_bytes
    return [out[k] for k in sorted(out)]
