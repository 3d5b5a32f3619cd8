"""The few llama.cpp / mtmd calls the engine makes, behind small Python names.

Everything that touches ``ctypes`` lives here (and in :mod:`vlmkit.engine.model`), so the rest of
the engine reads as plain Python. llama.cpp's own log lines are kept out of the user's terminal
(``VLMKIT_LLAMA_LOG=1`` shows them); its error lines are kept so that a failure can say why.

llama.cpp reports a failure as a return code and says why only in its log, so the log callback keeps
the error lines (level ERROR, and the CONT lines that continue one; never warnings) per thread: a
call and the failure it explains run on the same thread, and two models answering on two threads
never read each other's errors. Each prediction and each load starts with
:func:`clear_recent_errors`, so a message never carries an earlier failure's lines.
"""

from __future__ import annotations

import collections
import ctypes
import os
import sys
import threading
from typing import Any

_lock = threading.Lock()
_initialised = False
_callbacks: list[Any] = []  # keep the ctypes callbacks alive


def llama() -> Any:
    """The ``llama_cpp`` module, imported on first use (it loads a shared library)."""
    import llama_cpp

    _init(llama_cpp)
    return llama_cpp


def version() -> str:
    """llama-cpp-python's version (the package that vendors llama.cpp)."""
    return str(llama().__version__)


def mtmd() -> Any:
    """The ``llama_cpp.mtmd_cpp`` module (llama.cpp's multimodal library)."""
    llama()
    import llama_cpp.mtmd_cpp as mtmd_cpp

    return mtmd_cpp


# ggml_log_level (ggml.h): 1 DEBUG, 2 INFO, 3 WARN, 4 ERROR, 5 CONT
LOG_ERROR = 4
LOG_CONT = 5  # continues the previous line, at its level


class _ErrorLines(threading.local):
    """This thread's last error lines, and the level of the last line logged (for CONT lines)."""

    def __init__(self) -> None:
        self.lines: collections.deque[str] = collections.deque(maxlen=20)
        self.last_level = 0

    def add(self, level: int, message: str) -> None:
        if level == LOG_CONT:
            if self.last_level == LOG_ERROR and self.lines:
                self.lines[-1] += message
            return
        self.last_level = level
        if level == LOG_ERROR:
            self.lines.append(message)


_errors = _ErrorLines()


def recent_errors() -> str:
    """The error lines llama.cpp logged on this thread since the last clear, joined (for messages)."""
    return " ".join(line.strip() for line in _errors.lines if line.strip())


def clear_recent_errors() -> None:
    """Forget this thread's error lines: call before the work whose failure they should explain."""
    _errors.lines.clear()
    _errors.last_level = 0


def _is_initialised() -> bool:
    return _initialised


def _init(llama_cpp: Any) -> None:
    global _initialised
    if _initialised:
        return
    with _lock:
        if _is_initialised():  # another thread got here first
            return
        import llama_cpp.mtmd_cpp as mtmd_cpp

        verbose = os.environ.get("VLMKIT_LLAMA_LOG", "") not in ("", "0")

        @llama_cpp.llama_log_callback  # type: ignore[untyped-decorator]
        def _log(level: int, text: bytes, _user: ctypes.c_void_p) -> None:
            message = text.decode("utf-8", errors="replace")
            _errors.add(level, message)
            if verbose:
                sys.stderr.write(message)

        _callbacks.append(_log)
        llama_cpp.llama_backend_init()
        llama_cpp.llama_log_set(_log, ctypes.c_void_p(0))
        mtmd_cpp.mtmd_log_set(_log, ctypes.c_void_p(0))
        mtmd_cpp.mtmd_helper_log_set(_log, ctypes.c_void_p(0))
        _initialised = True
