"""What rendering did to an image, in words (``vlmkit.images.inspect``), and the report the CLI and
the server share (``vlmkit.providers.inspect``), on real photos and Pillow-made edge cases."""

from __future__ import annotations

import io

from PIL import Image

from tests.conftest import encode, photo_path
from vlmkit.images import ANTHROPIC, GEMINI, LLAMA_CPP, OPENAI, image_from_bytes, prepare_image
from vlmkit.images.inspect import image_facts, inspect_target
from vlmkit.providers.inspect import TARGET_RULES, inspect_image, model_target, price_of, target_named


def test_untouched_bytes_are_the_original_and_priced_by_the_rule_named() -> None:
    handle = prepare_image(photo_path("grace_hopper.jpg"))
    report = inspect_target(handle, OPENAI, token_rule="openai", detail="low")
    assert report.untouched and report.changes == () and report.reasons == ()
    assert report.rendered.data == handle.data and report.tokens == 85
    assert inspect_target(handle, LLAMA_CPP).tokens is None  # the model's projector decides


def test_each_kind_of_change_is_named(chelsea: Image.Image) -> None:
    cmyk = io.BytesIO()
    chelsea.convert("CMYK").save(cmyk, "JPEG")
    recompressed = inspect_target(image_from_bytes(cmyk.getvalue()), LLAMA_CPP)
    assert recompressed.changes == ("recompressed",)  # same type and size, pixels stb_image decodes
    assert recompressed.reasons == ("llama.cpp does not decode CMYK pixels",)
    heic = image_from_bytes(encode(chelsea, "HEIF"))
    assert inspect_target(heic, OPENAI).changes == ("converted",)
    assert inspect_target(heic, GEMINI).untouched
    big = image_from_bytes(encode(chelsea.resize((2400, 1600)), "JPEG"))
    assert inspect_target(big, ANTHROPIC).changes == ("downscaled",)
    exif = Image.Exif()
    exif[0x0112] = 8
    turned = inspect_target(image_from_bytes(encode(chelsea, "JPEG", exif=exif)), OPENAI)
    assert turned.changes == ("rotated",) and (turned.rendered.width, turned.rendered.height) == (300, 451)


def test_the_report_has_the_facts_and_a_row_per_target_with_its_cost() -> None:
    handle = prepare_image(photo_path("retina.jpg"))
    report = inspect_image(handle, [target_named(n) for n in TARGET_RULES])
    assert {k: report[k] for k in image_facts(handle)} == image_facts(handle)
    assert [t["target"] for t in report["targets"]] == list(TARGET_RULES)
    for row in report["targets"]:
        if row["tokens"] is not None and row["price_model"] is not None:
            assert row["cost_usd"] == row["tokens"] * price_of(row["price_model"]) / 1_000_000


def test_every_target_with_a_token_rule_has_a_price_and_models_find_theirs() -> None:
    for name, rule in TARGET_RULES.items():
        target = target_named(name)
        assert (target.price_model is not None and price_of(target.price_model) is not None) == (rule is not None)
    assert model_target("gemini/gemini-2.5-flash").token_rule == "gemini"
    assert model_target("vertex_ai/gemini-2.5-pro").price_model == "vertex_ai/gemini-2.5-pro"
    assert model_target("ollama/llava").token_rule is None
    assert model_target("bedrock/amazon.nova-lite-v1:0").token_rule is None  # not Claude: no documented rule
