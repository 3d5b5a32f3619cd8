"""``/v1/files``: upload an image once, refer to it by id in later chats; list, read, delete.

An upload is multipart (``file`` and ``purpose``, as OpenAI's clients send it) or the raw image bytes
as the body (``?filename=``). The bytes are sniffed and validated before an id is given out, so a
file that is not an image, or is over the pixel limit, is a 400 at upload time, not in a later chat.
"""

from __future__ import annotations

import anyio.to_thread
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response

from vlmkit.errors import VlmkitError
from vlmkit.images import image_from_bytes
from vlmkit.server.errors import APIError
from vlmkit.server.jsonutil import dumps
from vlmkit.server.state import ServerState, endpoint, image_slot


def _json(obj: object, status: int = 200) -> Response:
    return Response(dumps(obj), status_code=status, media_type="application/json")


@endpoint
async def upload(request: Request, state: ServerState) -> Response:
    data, filename, purpose = await _received(request)  # holding no slot while the body arrives
    if not data:
        raise APIError("the uploaded file is empty", 400, param="file")
    async with image_slot(state, len(data)):
        return await _store(state, data, filename, purpose)


async def _received(request: Request) -> tuple[bytes, str, str]:
    """The uploaded bytes, their file name and purpose, from a multipart form or a raw body."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        form = await request.form(max_files=1, max_fields=8)
        try:
            part = form.get("file")
            if not isinstance(part, UploadFile):
                raise APIError("the upload needs a 'file' field holding the image", 422, param="file")
            data = await part.read()
            filename = part.filename or "upload"
            purpose = form.get("purpose")
            purpose = purpose if isinstance(purpose, str) and purpose else "vision"
        finally:
            await form.close()
    else:
        data = await request.body()
        filename = request.query_params.get("filename") or "upload"
        purpose = request.query_params.get("purpose") or "vision"
    return data, filename, purpose


async def _store(state: ServerState, data: bytes, filename: str, purpose: str) -> Response:
    settings = state.settings
    try:
        image = await anyio.to_thread.run_sync(lambda: image_from_bytes(data, filename, max_pixels=settings.max_pixels))
    except VlmkitError as exc:
        exc.add_location("file")
        raise
    files = state.files
    if files.directory is None:
        stored = files.add(image, filename, purpose)
    else:  # written to disk: off the event loop
        stored = await anyio.to_thread.run_sync(lambda: files.add(image, filename, purpose))
    return _json(stored.to_dict())


@endpoint
async def list_files(request: Request, state: ServerState) -> Response:
    return _json({"object": "list", "data": [f.to_dict() for f in state.files.list()], "has_more": False})


@endpoint
async def retrieve(request: Request, state: ServerState) -> Response:
    return _json(state.files.get(request.path_params["file_id"]).to_dict())


@endpoint
async def content(request: Request, state: ServerState) -> Response:
    stored = state.files.get(request.path_params["file_id"])
    return Response(stored.image.data, media_type=stored.image.mime_type or "application/octet-stream")


@endpoint
async def delete(request: Request, state: ServerState) -> Response:
    stored = state.files.delete(request.path_params["file_id"])
    return _json({"id": stored.id, "object": "file", "deleted": True})
