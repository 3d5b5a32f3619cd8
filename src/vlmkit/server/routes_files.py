"""``/v1/files``: upload an image, a PDF or a video once, refer to it by id in later chats; list, read, delete.

An upload is multipart (``file`` and ``purpose``, as OpenAI's clients send it) or the raw bytes as the
body (``?filename=``). The bytes are sniffed and validated before an id is given out
(:func:`~vlmkit.server.files.read_upload`), so a file that is none of those, is damaged, or is over
the pixel limit, is a 400 at upload time, not in a later chat.

An upload that names a local vision model (a ``model`` form field, or ``?model=``) is encoded for
it in the background, while no prediction runs, so the first chat about it encodes nothing; the
file object says where that stands (``prepared_for``: ``{model: "queued" | "done" | "failed: ..."}``).
"""

from __future__ import annotations

import anyio.to_thread
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response

from vlmkit.errors import VlmkitError
from vlmkit.server.errors import APIError
from vlmkit.server.files import StoredFile, read_upload
from vlmkit.server.jsonutil import dumps
from vlmkit.server.state import ServerState, endpoint, image_slot


def _json(obj: object, status: int = 200) -> Response:
    return Response(dumps(obj), status_code=status, media_type="application/json")


@endpoint
async def upload(request: Request, state: ServerState) -> Response:
    data, filename, purpose, model = await _received(request)  # holding no slot while the body arrives
    if not data:
        raise APIError("the uploaded file is empty", 400, param="file")
    if model is not None:
        _check_preparable(state, model)
    async with image_slot(state, len(data)):
        return await _store(state, data, filename, purpose, model)


def _check_preparable(state: ServerState, model: str) -> None:
    if state.gateway.has(model):
        raise APIError(
            f"{model!r} is a gateway model, which encodes images on its provider's side; name a local "
            "model in 'model' to have the upload prepared for it, or leave 'model' out",
            400,
            param="model",
        )
    entry = state.local.find(model)
    if entry is None:
        exc = state.unknown_model(model)
        exc.location = "model"
        raise exc
    if not entry.vision:
        raise APIError(
            f"the local model {model!r} does not take images (no vision projector); name a vision model "
            "in 'model', or leave 'model' out",
            400,
            param="model",
        )


def _file_object(state: ServerState, stored: StoredFile) -> dict[str, object]:
    obj = stored.to_dict()
    prepared = state.local.preparation(stored.id)
    if prepared:
        obj["prepared_for"] = prepared
    return obj


async def _received(request: Request) -> tuple[bytes, str, str, str | None]:
    """The uploaded bytes, their file name, purpose and the model to prepare them for, from a
    multipart form or a raw body."""
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
            model = form.get("model")
            model = model if isinstance(model, str) and model else None
        finally:
            await form.close()
    else:
        data = await request.body()
        filename = request.query_params.get("filename") or "upload"
        purpose = request.query_params.get("purpose") or "vision"
        model = request.query_params.get("model") or None
    return data, filename, purpose, model


async def _store(state: ServerState, data: bytes, filename: str, purpose: str, model: str | None) -> Response:
    settings = state.settings
    try:
        upload = await anyio.to_thread.run_sync(lambda: read_upload(data, filename, settings.max_pixels))
    except VlmkitError as exc:
        exc.add_location("file")
        raise
    files = state.files
    if files.directory is None:
        stored = files.add(upload, filename, purpose)
    else:  # written to disk: off the event loop
        stored = await anyio.to_thread.run_sync(lambda: files.add(upload, filename, purpose))
    if model is not None and stored.image is not None:  # a PDF's pages, a video's frames: chosen per chat
        state.local.prepare_later(stored.id, model, stored.image)
    return _json(_file_object(state, stored))


@endpoint
async def list_files(request: Request, state: ServerState) -> Response:
    return _json({"object": "list", "data": [_file_object(state, f) for f in state.files.list()], "has_more": False})


@endpoint
async def retrieve(request: Request, state: ServerState) -> Response:
    return _json(_file_object(state, state.files.get(request.path_params["file_id"])))


@endpoint
async def content(request: Request, state: ServerState) -> Response:
    stored = state.files.get(request.path_params["file_id"])
    return Response(stored.data, media_type=stored.mime_type or "application/octet-stream")


@endpoint
async def delete(request: Request, state: ServerState) -> Response:
    stored = state.files.delete(request.path_params["file_id"])
    state.local.forget_preparations(stored.id)
    return _json({"id": stored.id, "object": "file", "deleted": True})
