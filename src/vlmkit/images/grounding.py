"""Boxes and points in a model's answer, mapped back to the pixels of the image the user gave.

A model that says where something is answers in the coordinates of the picture it saw, in its
family's own convention, and that picture is rarely the user's: vlmkit rotated it upright by its
EXIF tag and scaled it to the target's limits (recorded as an
:class:`~vlmkit.images.render.ImageTransform`), and the model's own preprocessing may have resized
it again. :func:`parse` finds the boxes and points in an answer, in the common notations:

- JSON: Qwen's ``{"bbox_2d": [x1, y1, x2, y2], "label": ...}`` and ``"point_2d": [x, y]``; Gemini's
  ``{"box_2d": [ymin, xmin, ymax, xmax], "label": ...}`` (always on a 0-1000 grid); ``bbox``, ``box``,
  ``point`` keys; plain lists ``[x1, y1, x2, y2]`` (also inside prose or a fenced code block);
- tags: Qwen2-VL's ``<|object_ref_start|>label<|object_ref_end|><|box_start|>(x1,y1),(x2,y2)<|box_end|>``
  (0-1000), ``<ref>label</ref><box>[[x1, y1, x2, y2]]</box>``, ``<point>(x, y)</point>``, and Molmo's
  ``<point x="12.5" y="40.1" alt="label">`` (percent of the image);

and maps each to the ORIGINAL image's upright pixels through the model family's
:class:`Convention` (absolute pixels of Qwen2.5-VL's smart-resized input, in multiples of 28; a
0-1000 grid for Qwen2-VL, Qwen3-VL, InternVL and Gemini, Gemini's as ``[y, x]``) and the transform
vlmkit applied. :func:`draw` puts them back on the original.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from PIL import Image, ImageDraw

from vlmkit.errors import GroundingError
from vlmkit.images.policy import ImagePolicy
from vlmkit.images.render import ImageTransform, Renderable, RenderedImage, decode_upright, render

__all__ = [
    "CONVENTIONS",
    "Box",
    "Convention",
    "GroundingError",
    "Point",
    "SentImage",
    "convention_for",
    "draw",
    "parse",
    "smart_resize",
]


@dataclass(frozen=True)
class Box:
    """A box in the original image's upright pixels: ``x1 <= x2``, ``y1 <= y2``, edges (not pixel centres)."""

    x1: float
    y1: float
    x2: float
    y2: float
    label: str | None = None

    @property
    def xyxy(self) -> tuple[float, float, float, float]:
        return self.x1, self.y1, self.x2, self.y2


@dataclass(frozen=True)
class Point:
    """A point in the original image's upright pixels."""

    x: float
    y: float
    label: str | None = None


Found = Box | Point


@dataclass(frozen=True)
class Convention:
    """How a model family writes coordinates.

    ``space``: ``"relative"`` (0..``scale`` across the image, whatever its size), ``"model-input"``
    (pixels of the image after the model's own smart resize: multiples of ``factor``, between
    ``min_pixels`` and ``max_pixels``), or ``"pixels"`` (pixels of the image as vlmkit sent it).
    ``order`` is how a bare pair is written: ``"xy"``, or ``"yx"`` (Gemini).
    """

    name: str
    space: Literal["relative", "model-input", "pixels"]
    scale: float = 1000.0
    order: Literal["xy", "yx"] = "xy"
    factor: int = 28
    min_pixels: int = 56 * 56
    max_pixels: int = 28 * 28 * 16384

    def replace(self, **changes: Any) -> Convention:
        """A copy with some fields changed, e.g. a Qwen2.5-VL served with ``max_pixels=1280*28*28``."""
        return dataclasses.replace(self, **changes)


CONVENTIONS: dict[str, Convention] = {
    c.name: c
    for c in (
        Convention("qwen2.5-vl", "model-input"),
        Convention("qwen2-vl", "relative"),
        Convention("qwen3-vl", "relative"),
        Convention("internvl", "relative"),
        Convention("gemini", "relative", order="yx"),
        Convention("normalized", "relative", scale=1.0),
        Convention("pixels", "pixels"),
    )
}
"""The known conventions by name (the names :func:`convention_for` also finds inside model names)."""

# Model names and llama.cpp projector types (qwen2.5vl_merger, ...) to families; the first match wins,
# so the longer, more specific names come first.
_FAMILY_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), name)
    for pattern, name in (
        (r"qwen2[._]?5[-_ ]?(vl|omni)", "qwen2.5-vl"),
        (r"qwen3[-_ ]?(vl|omni)", "qwen3-vl"),
        (r"qwen2[-_ ]?vl", "qwen2-vl"),
        (r"gemini", "gemini"),
        (r"internvl", "internvl"),
    )
)


class ModelLike(Protocol):
    """What identifies a model's family: a :class:`~vlmkit.prediction.ModelInfo` has these."""

    @property
    def key(self) -> str: ...
    @property
    def architecture(self) -> str: ...
    @property
    def projector_type(self) -> str | None: ...


def convention_for(model: str | Convention | ModelLike) -> Convention:
    """The coordinate convention of ``model``: a convention, its name, a model name or key
    (``qwen2.5-vl-7b-instruct``, ``gemini/gemini-2.5-flash``, ``local/qwen3-vl-2b``), or a loaded
    model's info (its projector type says the family exactly)."""
    if isinstance(model, Convention):
        return model
    if isinstance(model, str):
        names = [model]
    else:
        names = [n for n in (model.projector_type, model.key, model.architecture) if n]
    for name in names:
        lowered = name.lower()
        if lowered in CONVENTIONS:
            return CONVENTIONS[lowered]
        for pattern, family in _FAMILY_PATTERNS:
            if pattern.search(lowered):
                return CONVENTIONS[family]
    shown = model if isinstance(model, str) else model.key
    raise GroundingError(
        f"vlmkit does not know how {shown!r} writes coordinates; pass model= one of "
        f"{', '.join(repr(n) for n in CONVENTIONS)} (a family, or 'pixels' when it answers in pixels of "
        "the image it was sent, 'normalized' for 0-1), or a grounding.Convention"
    )


def smart_resize(width: int, height: int, convention: Convention) -> tuple[int, int]:
    """The size a Qwen2-VL-style processor resizes ``width`` x ``height`` to: each side a multiple of
    ``factor`` (nearest), the area brought within ``min_pixels``..``max_pixels`` keeping the aspect."""
    f = convention.factor
    w, h = max(f, round(width / f) * f), max(f, round(height / f) * f)
    if w * h > convention.max_pixels:
        shrink = math.sqrt(width * height / convention.max_pixels)
        w, h = max(f, math.floor(width / shrink / f) * f), max(f, math.floor(height / shrink / f) * f)
    elif w * h < convention.min_pixels:
        grow = math.sqrt(convention.min_pixels / (width * height))
        w, h = math.ceil(width * grow / f) * f, math.ceil(height * grow / f) * f
    return w, h


@dataclass(frozen=True)
class SentImage:
    """An image as a model saw it: the user's image and what vlmkit did to it on the way."""

    image: Renderable
    transform: ImageTransform


ImageLike = Renderable | SentImage | RenderedImage | ImageTransform
"""What :func:`parse` maps to: a handle (seen as it is, unless ``sent=`` says otherwise), a
:class:`SentImage` (a prediction's ``sent_images``), a rendering, or a transform."""


def parse(
    text: str,
    image: ImageLike,
    model: str | Convention | ModelLike,
    *,
    sent: RenderedImage | ImageTransform | ImagePolicy | tuple[int, int] | None = None,
) -> list[Found]:
    """The boxes and points in ``text``, in ``image``'s original upright pixels (clamped to it).

    ``model`` says the coordinate convention (see :func:`convention_for`). ``sent`` says what the model
    was sent when ``image`` is a plain handle: its rendering, the policy it was rendered with, or
    the size it was scaled to; without it the handle is taken as sent untouched.
    """
    convention = convention_for(model)
    transform = _transform(image, sent)
    return [_mapped(item, convention, transform) for item in _find(text)]


def _transform(
    image: ImageLike, sent: RenderedImage | ImageTransform | ImagePolicy | tuple[int, int] | None
) -> ImageTransform:
    if isinstance(image, ImageTransform):
        return image
    if isinstance(image, SentImage):
        return image.transform
    if isinstance(image, RenderedImage):
        if image.transform is None:
            raise GroundingError("this RenderedImage records no transform; render it with handle.render(policy)")
        return image.transform
    if image.width is None or image.height is None:
        raise GroundingError(f"{image.name!r} is a reference without pixels: there is no image to map boxes to")
    if sent is None:
        return ImageTransform.identity(image.width, image.height, image.orientation)
    if isinstance(sent, ImagePolicy):
        sent = render(image, sent)
    if isinstance(sent, RenderedImage):
        if sent.transform is None:
            raise GroundingError("sent= is a RenderedImage that records no transform; pass the policy instead")
        return sent.transform
    if isinstance(sent, ImageTransform):
        return sent
    return ImageTransform((image.width, image.height), (int(sent[0]), int(sent[1])), image.orientation)


# --- finding coordinates in text ---------------------------------------------------------------------

Space = Literal["model", "relative1000-yx", "relative1000-xy", "percent"]
"""``model``: the model's convention; the others are fixed by the notation itself."""


@dataclass(frozen=True)
class _Raw:
    kind: Literal["box", "point"]
    values: tuple[float, ...]
    label: str | None
    space: Space


_NUMBER = r"-?\d+(?:\.\d+)?"
_NUMBER_RE = re.compile(_NUMBER)
_QWEN2_TAG = re.compile(
    r"(?:<\|object_ref_start\|>(?P<label>.*?)<\|object_ref_end\|>\s*)?<\|box_start\|>(?P<body>.*?)<\|box_end\|>",
    re.S,
)
_BOX_TAG = re.compile(r"(?:<ref>(?P<label>.*?)</ref>\s*)?<box>(?P<body>.*?)</box>", re.S)
_POINT_ATTRS = re.compile(r"<points?\b(?P<attrs>[^>]*?)(?:/>|>(?P<label>.*?)</points?>)", re.S)
_POINT_TAG = re.compile(r"(?:<ref>(?P<label>.*?)</ref>\s*)?<point>(?P<body>[^<]*?)</point>", re.S)
_ATTR = re.compile(r"""([A-Za-z_][\w-]*)\s*=\s*["']([^"']*)["']""")
_BOX_KEYS = ("bbox_2d", "box_2d", "bbox", "box", "bounding_box", "boundingbox")
_POINT_KEYS = ("point_2d", "point", "coordinates")
_LABEL_KEYS = ("label", "name", "object", "text", "category", "description")


def _find(text: str) -> list[_Raw]:
    """Every box and point in ``text``, in the order they appear (each tag blanked once read)."""
    found: list[tuple[int, _Raw]] = []
    rest = text
    tags: tuple[tuple[re.Pattern[str], Literal["box", "point"], Space], ...] = (
        (_QWEN2_TAG, "box", "relative1000-xy"),
        (_BOX_TAG, "box", "model"),
        (_POINT_TAG, "point", "model"),
    )
    for pattern, kind, space in tags:
        for m in pattern.finditer(rest):
            found += [(m.start(), r) for r in _numbers_as(kind, m.group("body"), _clean(m.group("label")), space)]
        rest = pattern.sub(_blank, rest)
    for m in _POINT_ATTRS.finditer(rest):
        found += [(m.start(), r) for r in _molmo_points(m.group("attrs"), m.group("label"))]
    rest = _POINT_ATTRS.sub(_blank, rest)
    for at, value in _json_values(rest):
        found += [(at, r) for r in _from_json(value, None)]
    return [raw for _, raw in sorted(found, key=lambda item: item[0])]


def _blank(m: re.Match[str]) -> str:
    """A match as spaces: later finds keep their offsets in the text."""
    return " " * len(m.group())


def _clean(label: str | None) -> str | None:
    label = (label or "").strip()
    return label or None


def _numbers_as(kind: Literal["box", "point"], body: str, label: str | None, space: Space) -> list[_Raw]:
    numbers = [float(n) for n in _NUMBER_RE.findall(body)]
    size = 4 if kind == "box" else 2
    return [_Raw(kind, tuple(numbers[i : i + size]), label, space) for i in range(0, len(numbers) - size + 1, size)]


def _molmo_points(attrs: str, label: str | None) -> list[_Raw]:
    values = dict(_ATTR.findall(attrs))
    alt = _clean(values.get("alt")) or _clean(label)
    out = []
    for suffix in ("", *(str(i) for i in range(1, 100))):
        x, y = values.get(f"x{suffix}"), values.get(f"y{suffix}")
        if x is None or y is None:
            if suffix:
                break
            continue
        try:
            out.append(_Raw("point", (float(x), float(y)), alt, "percent"))
        except ValueError:
            continue
    return out


def _json_values(text: str) -> Iterator[tuple[int, Any]]:
    """Every JSON array or object in ``text`` (fenced or in prose) and where it starts, outermost only."""
    decoder = json.JSONDecoder()
    i = 0
    while True:
        starts = [p for p in (text.find("[", i), text.find("{", i)) if p >= 0]
        if not starts:
            return
        start = min(starts)
        try:
            value, end = decoder.raw_decode(text, start)
        except ValueError:
            i = start + 1
            continue
        yield start, value
        i = end


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _numbers(v: Any, n: int) -> tuple[float, ...] | None:
    if isinstance(v, (list, tuple)) and len(v) == n and all(_is_number(x) for x in v):
        return tuple(float(x) for x in v)
    if isinstance(v, dict) and n == 2 and _is_number(v.get("x")) and _is_number(v.get("y")):
        return float(v["x"]), float(v["y"])
    return None


def _from_json(value: Any, label: str | None) -> list[_Raw]:
    if isinstance(value, list):
        box = _numbers(value, 4)
        if box is not None:
            return [_Raw("box", box, label, "model")]
        return [raw for item in value for raw in _from_json(item, label)]
    if not isinstance(value, dict):
        return []
    lowered = {str(k).lower(): v for k, v in value.items()}
    own = next((str(lowered[k]) for k in _LABEL_KEYS if isinstance(lowered.get(k), str)), label)
    for key in _BOX_KEYS:
        box = _numbers(lowered.get(key), 4)
        if box is not None:
            return [_Raw("box", box, own, "relative1000-yx" if key == "box_2d" else "model")]
    for key in _POINT_KEYS:
        point = _numbers(lowered.get(key), 2)
        if point is not None:
            return [_Raw("point", point, own, "model")]
    return [raw for v in value.values() if isinstance(v, (list, dict)) for raw in _from_json(v, own)]


# --- mapping -----------------------------------------------------------------------------------------


def _mapped(raw: _Raw, convention: Convention, transform: ImageTransform) -> Found:
    pairs = [raw.values[i : i + 2] for i in range(0, len(raw.values), 2)]
    points = [_to_original(a, b, raw.space, convention, transform) for a, b in pairs]
    if raw.kind == "point":
        ((x, y),) = points
        return Point(x, y, raw.label)
    (xa, ya), (xb, yb) = points
    return Box(min(xa, xb), min(ya, yb), max(xa, xb), max(ya, yb), raw.label)


def _to_original(a: float, b: float, space: Space, convention: Convention, t: ImageTransform) -> tuple[float, float]:
    width, height = t.original
    if space == "percent":
        x, y = a / 100 * width, b / 100 * height
    elif space in ("relative1000-xy", "relative1000-yx"):
        x, y = (b, a) if space == "relative1000-yx" else (a, b)
        x, y = x / 1000 * width, y / 1000 * height
    else:
        x, y = (b, a) if convention.order == "yx" else (a, b)
        if convention.space == "relative":
            x, y = x / convention.scale * width, y / convention.scale * height
        else:
            if convention.space == "model-input":
                seen_w, seen_h = smart_resize(*t.size, convention)
                x, y = x * t.size[0] / seen_w, y * t.size[1] / seen_h
            x, y = t.to_original(x, y)
    return min(max(x, 0.0), float(width)), min(max(y, 0.0), float(height))


# --- drawing -----------------------------------------------------------------------------------------

_COLOURS = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#9a6324")


def draw(image: Renderable, found: Iterable[Found], *, width: int | None = None) -> Image.Image:
    """``image`` upright at its full size, as RGB, with ``found`` drawn on it (one colour per label)."""
    canvas = decode_upright(image).convert("RGB")
    pen = ImageDraw.Draw(canvas)
    line = width or max(2, round(max(canvas.size) / 250))
    colours: dict[str | None, str] = {}
    for item in found:
        colour = colours.setdefault(item.label, _COLOURS[len(colours) % len(_COLOURS)])
        if isinstance(item, Box):
            pen.rectangle(item.xyxy, outline=colour, width=line)
            anchor = (item.x1 + line, item.y1 + line)
        else:
            r = line * 2
            pen.ellipse((item.x - r, item.y - r, item.x + r, item.y + r), outline=colour, width=line)
            anchor = (item.x + r + 2, item.y - r)
        if item.label:
            _label(pen, anchor, item.label, colour)
    return canvas


def _label(pen: ImageDraw.ImageDraw, at: tuple[float, float], text: str, colour: str) -> None:
    left, top, right, bottom = pen.textbbox(at, text)
    pen.rectangle((left - 2, top - 2, right + 2, bottom + 2), fill=colour)
    pen.text(at, text, fill="white")
