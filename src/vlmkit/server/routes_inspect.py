"""``POST /v1/images/inspect``: what each target, and the chosen model, would be sent for an image.

The image comes as a multipart upload (``file``), or in a JSON body's ``image``: a data URL, an
http(s) URL (fetched with the server's safe fetcher and its ``fetch:`` settings) or the id of an
upload to ``/v1/files``; it is read by the same rules as a chat's images, so a bad one is the same
400 naming the problem. Other fields (form fields or JSON): ``model`` (a served model: a local one
has its image tokens measured by its own projector, which also prepares the image for the chat that
follows; a gateway one is priced by its provider's rule), ``detail`` (``low``/``high``/``auto``),
``image_max_tokens`` / ``image_min_tokens`` (a local model's budget), ``targets`` (some of the
shipped policies; all by default), ``measure`` (false: do not load a local model to count), and
``preview``: ``url`` (default for an upload's id: ``GET /v1/images/preview`` renders it again,
cached), ``data_url`` (default otherwise) or ``none``.

The report is the providers layer's (:func:`vlmkit.providers.inspect.inspect_image`), the same the
``vlmkit image inspect`` command prints; this module only reads the request and adds the chosen model.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import anyio.to_thread
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from vlmkit._types import Detail
from vlmkit.engine.images import DETAIL_LONG_EDGE, policy_for
from vlmkit.errors import InvalidSettingError, VlmkitError
from vlmkit.images import POLICIES, ImageHandle, image_from_bytes
from vlmkit.prediction import PredictionConfig
from vlmkit.providers.inspect import Target, inspect_image, model_target, prices_source, target_named
from vlmkit.server.errors import APIError
from vlmkit.server.files import looks_like_file_id
from vlmkit.server.inputs import ImageSource, parse_json, resolve_one
from vlmkit.server.jsonutil import dumps
from vlmkit.server.state import ServerState, endpoint, image_slot

_PREVIEWS = ("url", "data_url", "none")


@dataclass(frozen=True)
class InspectRequest:
    model: str | None
    detail: Detail
    config: PredictionConfig
    targets: tuple[str, ...]
    measure: bool
    preview: str | None


def _json(obj: object, status: int = 200) -> Response:
    return Response(dumps(obj), status_code=status, media_type="application/json")


@endpoint
async def inspect(request: Request, state: ServerState) -> Response:
    image_bytes, fields = await _received(request)  # holding no slot while the body arrives
    req = _read_fields(fields)
    chosen = _chosen(state, req) if req.model is not None else None
    size = len(image_bytes) if image_bytes is not None else len(str(fields.get("image", "")))
    async with image_slot(state, size):
        handle, file_id = await _image(state, image_bytes, fields)
        targets = [target_named(n) for n in req.targets]
        if chosen is not None and chosen.target is not None:
            targets.append(chosen.target)
        report = await anyio.to_thread.run_sync(lambda: inspect_image(handle, targets, req.detail))
        rows: list[dict[str, Any]] = report["targets"]
        if chosen is not None and chosen.target is None:
            rows.append({**chosen.about, "target": "model", "error": f"{chosen.name!r} does not take images"})
        elif chosen is not None:
            rows[-1].update(chosen.about, target="model")
            if chosen.about["kind"] == "local" and req.measure:
                await _measure(state, req, handle, rows[-1])
        how = req.preview or ("url" if file_id else "data_url")
        pairs = list(zip(rows, targets, strict=False))
        previews = await anyio.to_thread.run_sync(lambda: [_preview(how, file_id, *p, req, handle) for p in pairs])
        for row, url in itertools.zip_longest(rows, previews):  # a model that sees nothing has no preview
            row["preview"] = url
    return _json({"object": "image.inspection", "file_id": file_id, **report, "prices": prices_source()})


@endpoint
async def preview(request: Request, state: ServerState) -> Response:
    """The bytes one target of an inspection is sent: ``?file_id=&target=`` (``model`` with ``&model=``)."""
    q = request.query_params
    file_id = q.get("file_id")
    if not file_id:
        raise APIError("a preview needs '?file_id=': the id of an image uploaded to /v1/files", 422, param="file_id")
    stored = state.files.get(file_id)
    fields: dict[str, Any] = {k: q[k] for k in ("detail", "model") if k in q}
    req = _read_fields(fields)
    name = q.get("target", "")
    if name == "model":
        chosen = _chosen(state, req) if req.model is not None else None
        if chosen is None or chosen.target is None:
            raise APIError("target=model needs '&model=' naming a served vision model", 400, param="model")
        target = chosen.target
    else:
        target = _target(name, "target")
    rendered = await anyio.to_thread.run_sync(lambda: stored.image.render(target.policy))
    return Response(rendered.data, media_type=rendered.mime_type, headers={"Cache-Control": "private, max-age=3600"})


ROUTES = [
    Route("/v1/images/inspect", inspect, methods=["POST"]),
    Route("/v1/images/preview", preview, methods=["GET"]),
]


# --- the request ---------------------------------------------------------------------------------


async def _received(request: Request) -> tuple[bytes | None, dict[str, Any]]:
    """The uploaded image's bytes (None for a JSON body) and the other fields."""
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        return None, parse_json(await request.body())
    form = await request.form(max_files=1, max_fields=16)
    try:
        part = form.get("file")
        if part is not None and not isinstance(part, UploadFile):
            raise APIError("'file' must be the uploaded image, not a text field", 422, param="file")
        data = await part.read() if part is not None else None
        fields = {k: v for k, v in form.items() if k != "file" and isinstance(v, str)}
    finally:
        await form.close()
    if data is None and "image" not in fields:
        raise APIError("the upload needs a 'file' field holding the image", 422, param="file")
    return data, fields


def _read_fields(fields: dict[str, Any]) -> InspectRequest:
    model = fields.get("model")
    if model is not None and (not isinstance(model, str) or not model):
        raise APIError("'model' must be the name of a served model", 422, param="model")
    detail = fields.get("detail", "auto")
    if detail not in ("low", "high", "auto"):
        raise APIError(f"'detail' must be 'low', 'high' or 'auto', not {detail!r}", 422, param="detail")
    cap, floor = _int(fields, "image_max_tokens"), _int(fields, "image_min_tokens")
    try:
        config = PredictionConfig(detail=detail, image_max_tokens=cap, image_min_tokens=floor)
    except InvalidSettingError as exc:
        raise APIError(exc.message, 422, param=exc.location) from None
    targets = fields.get("targets", list(POLICIES))
    if isinstance(targets, str):
        targets = [t.strip() for t in targets.split(",") if t.strip()]
    if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
        raise APIError("'targets' must be a list of target names", 422, param="targets")
    for t in targets:
        _target(t, "targets")
    measure = fields.get("measure", True)
    if isinstance(measure, str):
        measure = measure.lower() not in ("false", "0", "no")
    if not isinstance(measure, bool):
        raise APIError("'measure' must be true or false", 422, param="measure")
    preview = fields.get("preview")
    if preview is not None and preview not in _PREVIEWS:
        raise APIError(f"'preview' must be one of {', '.join(_PREVIEWS)}, not {preview!r}", 422, param="preview")
    return InspectRequest(model, detail, config, tuple(targets), measure, preview)


def _int(fields: dict[str, Any], name: str) -> int | None:
    value = fields.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise APIError(f"{name!r} must be a whole number of tokens, not {value!r}", 422, param=name)


def _target(name: str, param: str) -> Target:
    try:
        return target_named(name)
    except VlmkitError as exc:
        raise APIError(exc.message, 400, param=param) from None


async def _image(state: ServerState, data: bytes | None, fields: dict[str, Any]) -> tuple[ImageHandle, str | None]:
    """The image to inspect, and its upload id when it was given as one."""
    s = state.settings
    if data is not None:
        if not data:
            raise APIError("the uploaded file is empty", 400, param="file")
        try:
            return await anyio.to_thread.run_sync(lambda: image_from_bytes(data, max_pixels=s.max_pixels)), None
        except VlmkitError as exc:
            exc.add_location("file")
            raise
    url = fields.get("image")
    if not isinstance(url, str) or not url:
        raise APIError(
            "the request needs 'image': a data: URL, an http(s):// URL or the id of a file uploaded to "
            "/v1/files (or send the image as a multipart 'file')",
            422,
            param="image",
        )
    is_id = looks_like_file_id(url)
    source = ImageSource(url, "image", file_id=is_id)
    handle = await resolve_one(source, state.files, fetch=s.fetch, max_pixels=s.max_pixels)
    return handle, url if is_id else None


# --- the chosen model ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Chosen:
    """The model the request names: what it is, and its target (None when it takes no images)."""

    name: str
    about: dict[str, Any]
    target: Target | None


def _chosen(state: ServerState, req: InspectRequest) -> Chosen:
    assert req.model is not None
    name = req.model
    if state.gateway.has(name):
        for field in ("image_max_tokens", "image_min_tokens"):
            if getattr(req.config, field) is not None:  # as the chat route says of them
                raise APIError(f"{field!r} applies to local models; for a gateway model leave it out", 400, param=field)
        vision = state.gateway.vision(name)
        upstream = state.settings.gateway[name].deployments[0].model  # the first deployment's provider
        about = {"model": name, "kind": "gateway", "vision": vision}
        return Chosen(name, about, model_target(upstream, name=name) if vision else None)
    entry = state.local.find(name)
    if entry is None:
        raise state.unknown_model(name)
    policy = policy_for(DETAIL_LONG_EDGE[req.detail])
    about = {"model": name, "kind": "local", "vision": entry.vision}
    return Chosen(name, about, Target(name, policy, None, None) if entry.vision else None)


async def _measure(state: ServerState, req: InspectRequest, handle: ImageHandle, row: dict[str, Any]) -> None:
    """The local model's own count of the image's tokens, from its projector (the image is then prepared)."""
    assert req.model is not None
    model = req.model
    info = await anyio.to_thread.run_sync(lambda: state.local.lease.prepare(model, handle, req.config))
    width, _, height = info.image_size.partition("x")
    row.update(tokens=info.image_tokens, token_rule="measured", image_size={"width": int(width), "height": int(height)})


def _preview(
    how: str, file_id: str | None, row: dict[str, Any], target: Target, req: InspectRequest, handle: ImageHandle
) -> str | None:
    if how == "none" or "error" in row:
        return None
    if how == "url" and file_id is not None:
        query: dict[str, str] = {"file_id": file_id, "target": row["target"], "detail": req.detail}
        if row["target"] == "model" and req.model is not None:
            query["model"] = req.model
        return "/v1/images/preview?" + urlencode(query)
    return handle.render(target.policy).data_url
