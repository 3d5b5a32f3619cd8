"""The playground: a single page at ``/`` to drop an image, see what each model gets, and chat.

The page is static files under ``static/`` (plain ES modules and CSS, shipped in the wheel; no build
step), served without a key: they hold nothing of the server's. Everything the page shows comes
from the API with the key the user types (kept in the browser's session storage): ``/v1/files``,
``/v1/images/inspect``, ``/v1/models`` and ``/v1/chat/completions``. A strict content security
policy keeps the page to its own scripts and to this server.

:func:`open_when_ready` is ``vlmkit playground``'s: it opens the page in the default browser once
the server answers.
"""

from __future__ import annotations

import importlib.resources
import threading
import time
import urllib.request
import webbrowser
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

STATIC = Path(str(importlib.resources.files("vlmkit.server").joinpath("static")))

CSP = (
    "default-src 'self'; img-src 'self' data: blob: http: https:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
"""Images may come from anywhere (an image URL is shown as the user gave it); nothing else may."""


async def page(request: Request) -> Response:
    return FileResponse(
        STATIC / "index.html",
        media_type="text/html; charset=utf-8",
        headers={"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"},
    )


ROUTES = [
    Route("/", page, methods=["GET"]),
    Mount("/playground", app=StaticFiles(directory=STATIC), name="playground"),
]


def open_when_ready(url: str, *, timeout: float = 60.0) -> threading.Thread:
    """Open ``url`` in the default browser once ``url``'s server answers its health check (in a thread)."""

    def wait_and_open() -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url.rstrip("/") + "/health", timeout=1):
                    break
            except OSError:
                time.sleep(0.2)
        else:
            return
        webbrowser.open(url)

    thread = threading.Thread(target=wait_and_open, name="vlmkit-playground-open", daemon=True)
    thread.start()
    return thread
