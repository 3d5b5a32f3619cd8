"""Request bodies with images spliced in: the bytes are the JSON of the tree, each Blob written as its text."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from tests.providers.conftest import Samples, data_url, image_message
from vlmkit.providers.jsonbody import Blob, encode_json


def test_blobs_are_written_as_their_text_wherever_they_are() -> None:
    photo, other = "QUJD" * 1000, "data:image/png;base64,iVBORw0KGgo="
    body = {
        "model": 'a "quoted" name \\ with ünïcode',
        "messages": [{"content": [{"type": "image", "data": Blob(photo)}, {"text": "hi"}]}],
        "images": [Blob(other), Blob(photo)],
    }
    expected = {
        "model": 'a "quoted" name \\ with ünïcode',
        "messages": [{"content": [{"type": "image", "data": photo}, {"text": "hi"}]}],
        "images": [other, photo],
    }
    assert encode_json(body) == json.dumps(expected, ensure_ascii=False, separators=(",", ":")).encode()


def test_a_body_without_blobs_is_plain_compact_json() -> None:
    body = {"model": "m", "n": [1, 2.5, None, True]}
    assert encode_json(body) == json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def test_a_value_that_is_not_json_is_refused_by_name() -> None:
    with pytest.raises(TypeError, match="holds a bytes, which is not JSON"):
        encode_json({"data": b"raw"})


def blobs_and_strings(tree: Any) -> tuple[list[Blob], list[str]]:
    if isinstance(tree, Blob):
        return [tree], []
    if isinstance(tree, str):
        return [], [tree]
    blobs: list[Blob] = []
    strings: list[str] = []
    for child in tree.values() if isinstance(tree, dict) else tree if isinstance(tree, list) else ():
        more_blobs, more_strings = blobs_and_strings(child)
        blobs += more_blobs
        strings += more_strings
    return blobs, strings


@pytest.mark.parametrize(
    ("model", "options"),
    [
        ("openai/gpt-4o", {"api_key": "k"}),
        ("anthropic/claude-3-7-sonnet-latest", {"api_key": "k"}),
        ("gemini/gemini-2.0-flash", {"api_key": "k"}),
        ("ollama/llava", {}),
        (
            "bedrock/anthropic.claude-3-5-sonnet-20240620-v1:0",
            {"aws_access_key_id": "AKIDEXAMPLE", "aws_secret_access_key": "secret", "aws_region_name": "us-west-2"},
        ),
    ],
)
def test_every_provider_sends_its_images_as_blobs(model: str, options: dict[str, Any], samples: Samples) -> None:
    """An image that a module put in as a plain string would still be sent, but the encoder would scan it."""
    from vlmkit.providers.call import _start

    api_key = options.pop("api_key", None)
    messages = image_message(data_url(samples.jpeg, "image/jpeg"))
    cfg, req, mod = _start(model, messages, False, None, api_key, None, None, options)
    blobs, strings = blobs_and_strings(mod.build_request(req, cfg).json)
    assert len(blobs) == 1, blobs
    assert base64.b64decode(blobs[0].text.rpartition(",")[2]) == samples.jpeg  # untouched: it fits every policy
    assert max(map(len, strings)) < 1000, "an image went into the body as a plain string"
