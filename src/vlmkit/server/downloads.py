"""Model downloads started over HTTP: a job per model, run on a thread, its progress read by polling.

The engine's ``get`` does the work (resumable, nothing half-written). Progress is the bytes that have
landed under the model's directory so far (finished files and the partial ones kept aside), since
``get`` reports progress only to a terminal. Only catalog keys and hub ``repo/name``s are accepted:
a client never makes the server copy a file from its own disk.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlmkit.errors import VlmkitError
from vlmkit.server.errors import APIError


@dataclass
class DownloadJob:
    id: str
    model: str
    directory: Path
    status: str = "downloading"  # downloading | completed | failed
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    error: dict[str, Any] | None = None
    key: str | None = None
    path: str | None = None

    def bytes_done(self) -> int:
        try:
            return sum(p.stat().st_size for p in self.directory.rglob("*") if p.is_file())
        except OSError:
            return 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "job_id": self.id,
            "model": self.model,
            "status": self.status,
            "downloaded_bytes": self.bytes_done(),
            "started_at": int(self.started_at),
            "finished_at": int(self.finished_at) if self.finished_at else None,
            "key": self.key,
            "path": self.path,
            "error": self.error,
        }


class Downloads:
    def __init__(self, models_dir: str | None, on_done: Callable[[], object] | None = None) -> None:
        self.models_dir = models_dir
        self.on_done = on_done
        self._jobs: dict[str, DownloadJob] = {}
        self._lock = threading.Lock()

    def start(self, model: str) -> DownloadJob:
        from vlmkit.engine import store

        if not model or model.startswith(("/", ".", "~")) or "\\" in model or Path(model).expanduser().exists():
            raise APIError(
                "download takes a catalog key (qwen2-vl-2b-instruct) or a hub repo/name, not a path",
                422,
                param="model",
            )
        with self._lock:
            for job in self._jobs.values():
                if job.model == model and job.status == "downloading":
                    return job  # one download per model at a time: the second request follows the first
            job = DownloadJob(
                f"dl-{secrets.token_hex(8)}", model, store.models_dir(self.models_dir) / store.dir_name(model)
            )
            self._jobs[job.id] = job
        threading.Thread(target=self._run, args=(job,), name="vlmkit-download", daemon=True).start()
        return job

    def get(self, job_id: str) -> DownloadJob:
        job = self._jobs.get(job_id)
        if job is None:
            raise APIError(f"no download job {job_id!r}", 404, code="job_not_found")
        return job

    def list(self) -> list[DownloadJob]:
        return list(self._jobs.values())

    def _run(self, job: DownloadJob) -> None:
        from vlmkit.engine.download import get

        try:
            stored = get(job.model, models_dir=self.models_dir, progress=False)
        except VlmkitError as exc:
            job.error = {"message": str(exc), "type": type(exc).__name__, "status": exc.status_code}
            job.status = "failed"
        except Exception as exc:  # an unexpected failure must still end the job, with its reason
            job.error = {"message": f"{type(exc).__name__}: {exc}", "type": type(exc).__name__, "status": 500}
            job.status = "failed"
        else:
            job.key, job.path, job.directory = stored.key, str(stored.directory), stored.directory
            job.status = "completed"
            if self.on_done is not None:
                self.on_done()
        finally:
            job.finished_at = time.time()
