"""The few llama.cpp / mtmd calls the engine makes, behind small Python names.

Everything that touches ``ctypes`` lives here (and in :mod:`vlmkit.engine.model`), so the rest of
the engine reads as plain Python. llama.cpp's own log lines are kept out of the user's terminal
(``VLMKIT_LLAMA_LOG=1`` shows them); the last errors are kept so that a failed load can say why.
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
_recent_errors: collections.deque[str] = collections.deque(maxlen=20)
_callbacks: list[Any] = []  # keep the ctypes callbacks alive


def llama() -> Any:
    """The ``llama_cpp`` module, imported on first use (it loads a shared library)."""
    import llama_cpp

    _init(llama_cpp)
    return llama_cpp


def mtmd() -> Any:
    """The ``llama_cpp.mtmd_cpp`` module (llama.cpp's multimodal library)."""
    llama()
    import llama_cpp.mtmd_cpp as mtmd_cpp

    return mtmd_cpp


def recent_errors() -> str:
    """The last error lines llama.cpp logged, joined (for error messages)."""
    return " ".join(line.strip() for line in _recent_errors if line.strip())


def clear_recent_errors() -> None:
    _recent_errors.clear()


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
            if level == 3:  # GGML_LOG_LEVEL_ERROR
                _recent_errors.append(message)
            if verbose:
                sys.stderr.write(message)

        _callbacks.append(_log)
        llama_cpp.llama_backend_init()
        llama_cpp.llama_log_set(_log, ctypes.c_void_p(0))
        mtmd_cpp.mtmd_log_set(_log, ctypes.c_void_p(0))
        mtmd_cpp.mtmd_helper_log_set(_log, ctypes.c_void_p(0))
        _initialised = True
