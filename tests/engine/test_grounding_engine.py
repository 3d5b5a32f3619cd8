"""A local prediction records how each image was sent, so its boxes map back to the original.

Run on the generated Qwen2.5-VL-shaped model (its real projector type, so the convention is found
from the model itself): the reply of random weights is no box, so the answer mapped here is one
written as Qwen2.5-VL writes it, at the size the engine really sent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vlmkit import grounding
from vlmkit.engine import Engine, LoadOptions
from vlmkit.engine.synthetic_families import write_family
from vlmkit.images import ImageHandle
from vlmkit.prediction import PredictionConfig


def test_a_local_prediction_maps_a_qwen25_box_through_what_the_engine_sent(
    tmp_path: Path, hopper: ImageHandle, image_chat: Any
) -> None:
    files = write_family("qwen2.5-vl", tmp_path / "qwen2.5-vl")
    with Engine(default_ttl=None, load_options=LoadOptions(cpu_threads=1)) as engine:
        engine.register("q25", *files)
        result = engine.respond("q25", image_chat(hopper), PredictionConfig(temperature=0, max_tokens=2, detail="low"))
    assert result.model_info is not None and result.model_info.projector_type == "qwen2.5vl_merger"
    (sent,) = result.sent_images
    assert sent.image is hopper
    width, height = sent.transform.size
    assert result.stats.image_sizes == [f"{width}x{height}"]
    assert max(width, height) == 512 and sent.transform.original == (512, 600)  # detail "low": a 512 px long edge
    seen_w, seen_h = grounding.smart_resize(width, height, grounding.convention_for("qwen2.5-vl"))
    result.content = f'[{{"bbox_2d": [0, 0, {seen_w // 2}, {seen_h}], "label": "left half"}}]'
    (box,) = result.boxes
    assert box == grounding.Box(0, 0, 256, 600, "left half")
