"""Grounding: boxes and points in a model's answer come back in the original photo's pixels.

The round trip: a green rectangle drawn at known coordinates on a real photo, the photo stored
rotated with an EXIF orientation tag (every one of the eight), rendered (turned upright and scaled
down) through a policy; the rendered pixels are checked to hold the rectangle where the recorded
transform says, then the box is written as each model family writes it, and ``parse`` must give back
the coordinates it was drawn at, within one pixel.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

import vlmkit.grounding as grounding
from tests.conftest import photo_path
from vlmkit.errors import BadRequestError, GroundingError
from vlmkit.images import LLAMA_CPP, image_from_bytes, prepare_image
from vlmkit.images.handle import reference_handle
from vlmkit.images.render import ImageTransform
from vlmkit.prediction import ModelInfo, PredictionResult, PredictionStats

DRAWN = (101, 150, 301, 420)  # x1, y1, x2, y2 on the upright 512 x 600 photo
GREEN = (0, 255, 0)
POLICY = LLAMA_CPP.replace(max_long_edge=400)  # 512 x 600 -> 341 x 400
SENT = (341, 400)
QWEN25_INPUT = (336, 392)  # Qwen2.5-VL's smart resize of 341 x 400: the nearest multiples of 28

# The inverse of what EXIF orientation N asks a viewer to do (ImageOps.exif_transpose's operation).
STORE = {
    1: None,
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


def upright_with_rectangle() -> Image.Image:
    with Image.open(photo_path("grace_hopper.jpg")) as im:
        upright = im.convert("RGB")
    ImageDraw.Draw(upright).rectangle((DRAWN[0], DRAWN[1], DRAWN[2] - 1, DRAWN[3] - 1), fill=GREEN)
    return upright


def stored_as(upright: Image.Image, orientation: int) -> bytes:
    """``upright`` saved as a JPEG whose pixels are stored turned, with the EXIF tag that turns them back."""
    op = STORE[orientation]
    stored = upright.transpose(op) if op is not None else upright
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    stored.save(buf, format="JPEG", quality=95, exif=exif.tobytes())
    return buf.getvalue()


def green_extent(image: Image.Image) -> tuple[int, int, int, int]:
    """The box of the green pixels (edges, as x1, y1, x2, y2)."""
    px = np.asarray(image.convert("RGB")).astype(int)
    mask = (px[..., 1] > 180) & (px[..., 0] < 90) & (px[..., 2] < 90)
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def written_as(family: str, sent_box: tuple[float, float, float, float]) -> str:
    """The box as ``family`` writes it in an answer, from the box in the sent image's pixels (integers,
    as models write them)."""
    x1, y1, x2, y2 = sent_box
    w, h = SENT

    def grid(v: float, side: int) -> int:
        return round(v / side * 1000)

    g = (grid(x1, w), grid(y1, h), grid(x2, w), grid(y2, h))
    if family == "qwen2.5-vl":
        qw, qh = QWEN25_INPUT
        q = [round(x1 * qw / w), round(y1 * qh / h), round(x2 * qw / w), round(y2 * qh / h)]
        return f'```json\n[\n  {{"bbox_2d": {q}, "label": "rectangle"}}\n]\n```'
    if family == "qwen2-vl":
        return f"<|object_ref_start|>rectangle<|object_ref_end|><|box_start|>({g[0]},{g[1]}),({g[2]},{g[3]})<|box_end|>"
    if family == "qwen3-vl":
        return f'[{{"bbox_2d": [{g[0]}, {g[1]}, {g[2]}, {g[3]}], "label": "rectangle"}}]'
    if family == "gemini":
        return f'```json\n[{{"box_2d": [{g[1]}, {g[0]}, {g[3]}, {g[2]}], "label": "rectangle"}}]\n```'
    if family == "internvl":
        return f"The <ref>rectangle</ref><box>[[{g[0]}, {g[1]}, {g[2]}, {g[3]}]]</box> is green."
    assert family == "pixels"
    return f"It is at [{round(x1)}, {round(y1)}, {round(x2)}, {round(y2)}] in the image."


FAMILIES = {
    "qwen2.5-vl": "Qwen/Qwen2.5-VL-7B-Instruct",
    "qwen2-vl": "qwen2-vl-2b-instruct",
    "qwen3-vl": "local/qwen3-vl-4b",
    "gemini": "gemini/gemini-2.5-flash",
    "internvl": "OpenGVLab/InternVL3-8B",
    "pixels": "pixels",
}


@pytest.mark.parametrize("orientation", list(STORE))
def test_a_box_comes_back_in_the_original_pixels_for_every_family(orientation: int) -> None:
    handle = image_from_bytes(stored_as(upright_with_rectangle(), orientation))
    assert (handle.width, handle.height, handle.orientation) == (512, 600, orientation)
    rendered = handle.render(POLICY)
    transform = rendered.transform
    assert transform == ImageTransform((512, 600), SENT, orientation)

    # the rendered pixels hold the rectangle where the transform puts it (so the record is true)
    with Image.open(io.BytesIO(rendered.data)) as sent_image:
        seen = green_extent(sent_image)
    expected = [*transform.from_original(*DRAWN[:2]), *transform.from_original(*DRAWN[2:])]
    assert all(abs(a - b) <= 1.0 for a, b in zip(seen, expected, strict=True)), (seen, expected)

    sent_box = (DRAWN[0] * SENT[0] / 512, DRAWN[1] * SENT[1] / 600, DRAWN[2] * SENT[0] / 512, DRAWN[3] * SENT[1] / 600)
    for family, model in FAMILIES.items():
        found = grounding.parse(written_as(family, sent_box), grounding.SentImage(handle, transform), model)
        assert len(found) == 1, (family, found)
        box = found[0]
        assert isinstance(box, grounding.Box)
        assert all(abs(a - b) <= 1.0 for a, b in zip(box.xyxy, DRAWN, strict=True)), (family, box)
        assert box.label == "rectangle" or family == "pixels"
        # the same, with the handle and the policy it was sent with
        again = grounding.parse(written_as(family, sent_box), handle, model, sent=POLICY)
        assert again == found


@pytest.mark.parametrize("orientation", list(STORE))
def test_to_stored_finds_the_rectangle_in_the_file_s_own_pixels(orientation: int) -> None:
    upright = upright_with_rectangle()
    data = stored_as(upright, orientation)
    handle = image_from_bytes(data)
    transform = handle.render(None).transform
    assert transform is not None
    with Image.open(io.BytesIO(data)) as stored:  # Pillow does not apply the tag by itself
        assert stored.size == transform.stored_size
        seen = green_extent(stored)
    corners = [transform.to_stored(x, y) for x in (DRAWN[0], DRAWN[2]) for y in (DRAWN[1], DRAWN[3])]
    xs, ys = [c[0] for c in corners], [c[1] for c in corners]
    assert all(abs(a - b) <= 1.0 for a, b in zip(seen, (min(xs), min(ys), max(xs), max(ys)), strict=True))


def test_points_in_each_notation() -> None:
    handle = prepare_image(photo_path("grace_hopper.jpg"))  # 512 x 600
    text = (
        'Molmo: <point x="25.0" y="50.0" alt="badge">badge</point>; '
        '<points x1="10" y1="10" x2="90" y2="90" alt="stars">stars</points>; '
        'Qwen: {"point_2d": [256, 300], "label": "tie"}; a tag: <point>(500, 500)</point>'
    )
    found = grounding.parse(text, handle, "qwen3-vl")
    assert found == [
        grounding.Point(128.0, 300.0, "badge"),
        grounding.Point(51.2, 60.0, "stars"),
        grounding.Point(460.8, 540.0, "stars"),
        grounding.Point(131.072, 180.0, "tie"),
        grounding.Point(256.0, 300.0, None),
    ]
    # Gemini writes points [y, x] on its 0-1000 grid
    assert grounding.parse('[{"point": [500, 250], "label": "eye"}]', handle, "gemini-2.0-flash") == [
        grounding.Point(128.0, 300.0, "eye")
    ]


def test_several_boxes_in_prose_keep_their_order_and_are_clamped_to_the_image() -> None:
    handle = prepare_image(photo_path("grace_hopper.jpg"))
    text = 'First [0, 0, 100, 100], then {"bbox": [600, 700, 400, 500], "name": "flipped"} and no more.'
    found = grounding.parse(text, handle, "pixels")
    assert found == [
        grounding.Box(0, 0, 100, 100),
        grounding.Box(400, 500, 512, 600, "flipped"),  # corners put in order, then clamped to 512 x 600
    ]
    assert grounding.parse("no coordinates here", handle, "pixels") == []


def test_a_qwen25_served_with_a_smaller_max_pixels() -> None:
    handle = prepare_image(photo_path("grace_hopper.jpg"))  # sent as it is: 512 x 600
    small = grounding.convention_for("qwen2.5-vl").replace(max_pixels=256 * 28 * 28)
    seen = grounding.smart_resize(512, 600, small)
    assert seen[0] % 28 == 0 and seen[1] % 28 == 0 and seen[0] * seen[1] <= 256 * 28 * 28
    found = grounding.parse(f"[0, 0, {seen[0]}, {seen[1]}]", handle, small)
    assert found == [grounding.Box(0, 0, 512, 600)]


def test_draw_puts_the_boxes_on_the_upright_original() -> None:
    handle = image_from_bytes(stored_as(upright_with_rectangle(), 6))
    box = grounding.Box(50, 60, 200, 300, "thing")
    drawn = handle.draw([box, grounding.Point(400, 500, "dot")], width=3)
    assert drawn.size == (512, 600) and drawn.mode == "RGB"
    first_colour = (0xE6, 0x19, 0x4B)
    assert drawn.getpixel((200 - 2, 200)) == first_colour  # on the right edge, inside the outline
    assert drawn.getpixel((120, 200)) != first_colour  # the inside is the photo
    assert drawn.getpixel((400 - 5, 500)) == (0x3C, 0xB4, 0x4B)  # the point's ring, in the second colour


def test_model_names_and_infos_find_their_convention() -> None:
    assert grounding.convention_for("openrouter/qwen/qwen2.5-vl-72b-instruct").name == "qwen2.5-vl"
    assert grounding.convention_for("Qwen3-VL-8B-Instruct").name == "qwen3-vl"
    assert grounding.convention_for("vertex_ai/gemini-2.5-pro").name == "gemini"
    info = ModelInfo("local/x", "/m.gguf", "/mm.gguf", "qwen2vl", 4096, True, 1, projector_type="qwen2.5vl_merger")
    assert grounding.convention_for(info).name == "qwen2.5-vl"  # the projector says 2.5 where the arch says 2


def test_an_unknown_model_is_an_error_naming_the_conventions() -> None:
    handle = prepare_image(photo_path("grace_hopper.jpg"))
    with pytest.raises(GroundingError) as caught:
        grounding.parse("[1, 2, 3, 4]", handle, "smolvlm-256m")
    assert isinstance(caught.value, BadRequestError)
    message = str(caught.value)
    assert "'smolvlm-256m'" in message and "'qwen2.5-vl'" in message and "'pixels'" in message


def test_a_reference_has_no_pixels_to_map_to() -> None:
    ref = reference_handle("gs://bucket/photo.jpg")
    with pytest.raises(GroundingError, match="reference without pixels"):
        grounding.parse("[1, 2, 3, 4]", ref, "pixels")


def test_prediction_boxes_needs_exactly_one_image() -> None:
    info = ModelInfo("gemini/gemini-2.5-flash", "", None, "gemini", 0, True, 0)
    handle = prepare_image(photo_path("grace_hopper.jpg"))
    sent = grounding.SentImage(handle, handle.render(POLICY).transform or ImageTransform.identity(1, 1))
    result = PredictionResult('[{"box_2d": [0, 0, 500, 500]}]', PredictionStats(), info, sent_images=[sent])
    assert result.boxes == [grounding.Box(0, 0, 256, 300)]
    for images in ([], [sent, sent]):
        result.sent_images = images
        with pytest.raises(GroundingError) as caught:
            _ = result.boxes
        assert f"it had {'none' if not images else 2}" in str(caught.value)
        assert "grounding.parse(result.content, result.sent_images[i]" in str(caught.value)
