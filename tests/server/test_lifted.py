"""Lifting large data URLs out of a JSON body never changes what the body means."""

from __future__ import annotations

import base64
import json
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vlmkit.server.errors import APIError
from vlmkit.server.inputs import parse_json, parse_lifted
from vlmkit.server.lifted import MIN_LIFT, Lifted, lift

PAYLOAD = random.Random(3).randbytes(MIN_LIFT)  # base64 of it is longer than MIN_LIFT
URL = "data:image/jpeg;base64," + base64.b64encode(PAYLOAD).decode()


def image_body(url: str = URL, text: str = "What is this?") -> dict[str, Any]:
    content = [{"type": "text", "text": text}, {"type": "image_url", "image_url": {"url": url, "detail": "low"}}]
    return {"model": "m", "messages": [{"role": "user", "content": content}]}


def as_sent(lifted: Lifted, obj: Any) -> Any:
    """``obj`` with the placeholders left at image URLs turned back into their text."""
    if isinstance(obj, dict):
        return {k: as_sent(lifted, v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [as_sent(lifted, v) for v in obj]
    if isinstance(obj, str) and lifted.image(obj) is not None:
        return lifted.text(obj)
    return obj


def test_an_image_url_is_decoded_and_the_parser_sees_a_short_body() -> None:
    raw = json.dumps(image_body()).encode()
    lifted = lift(raw)
    assert len(lifted.body) < 400
    obj = parse_lifted(lifted)
    placeholder = obj["messages"][0]["content"][1]["image_url"]["url"]
    assert lifted.image(placeholder) == PAYLOAD
    assert obj["messages"][0]["content"][1]["image_url"]["detail"] == "low"
    assert as_sent(lifted, obj) == json.loads(raw)


def test_a_data_url_anywhere_else_comes_back_as_its_text() -> None:
    body = image_body(text=URL)
    body["metadata"] = {URL: [URL], "note": URL}
    raw = json.dumps(body).encode()
    lifted = lift(raw)
    assert len(lifted.spans) == 5
    obj = parse_lifted(lifted)
    assert obj["messages"][0]["content"][0]["text"] == URL
    assert obj["metadata"] == {URL: [URL], "note": URL}
    assert lifted.image(obj["messages"][0]["content"][1]["image_url"]["url"]) == PAYLOAD


@pytest.mark.parametrize(
    "text",
    [
        json.dumps(image_body()).replace("/", "\\/"),  # PHP escapes slashes: left to the JSON parser
        json.dumps(image_body(url=URL[:-8] + "\\n" + URL[-8:])),  # a wrapped line
        json.dumps(image_body(url=URL.replace(";base64", ""))),  # not base64
        json.dumps(image_body(url=URL + "*")),  # not strict base64
        json.dumps(image_body(text='say "' + URL + '"')),  # inside a string, after an escaped quote
    ],
)
def test_what_cannot_be_lifted_exactly_is_left_to_the_parser(text: str) -> None:
    raw = text.encode()
    lifted = lift(raw)
    obj = parse_lifted(lifted)
    assert as_sent(lifted, obj) == json.loads(raw)


def test_invalid_json_stays_invalid_with_positions_in_the_body_as_sent() -> None:
    raw = json.dumps(image_body()).encode()[:-1]
    lifted = lift(raw)
    assert lifted.spans
    with pytest.raises(APIError, match="not valid JSON") as caught:
        parse_lifted(lifted)
    with pytest.raises(APIError) as direct:
        parse_json(raw)
    assert caught.value.message == direct.value.message
    raw_ctrl = json.dumps(image_body()).replace("base64,", "base64,\x01").encode()  # a raw control character
    assert not lift(raw_ctrl).spans
    with pytest.raises(APIError, match="not valid JSON"):
        parse_lifted(lift(raw_ctrl))


BARE = base64.b64encode(PAYLOAD).decode()
strings = st.sampled_from(["", "data:", "x", URL, "a\\b", 'q"', "data:x;base64,", BARE, BARE + "*"])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | strings,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(["url", "image_url", URL, "k", "data"]), inner)
    ),
    max_leaves=12,
)


@settings(max_examples=60, deadline=None)
@given(value=json_values, slashes=st.booleans())
def test_any_body_means_the_same_after_lifting(value: Any, slashes: bool) -> None:
    body = image_body()
    body["extra"] = value
    text = json.dumps(body)
    if slashes:
        text = text.replace("/", "\\/")
    raw = text.encode()
    lifted = lift(raw)
    assert as_sent(lifted, parse_lifted(lifted)) == json.loads(raw)


def test_an_anthropic_base64_source_is_lifted_and_read_through_a_data_url() -> None:
    source = {"type": "base64", "media_type": "image/jpeg", "data": BARE}
    body = {"model": "m", "messages": [{"role": "user", "content": [{"type": "image", "source": source}]}]}
    body["metadata"] = {"data": BARE}  # a "data" value anywhere else comes back as its text
    raw = json.dumps(body, indent=1).encode()  # with spaces and newlines around the colons
    lifted = lift(raw)
    assert len(lifted.spans) == 2 and len(lifted.body) < 600
    obj = parse_lifted(lifted)
    placeholder = obj["messages"][0]["content"][0]["source"]["data"]
    assert lifted.image(placeholder) == PAYLOAD
    assert lifted.image(f"data:image/jpeg;base64,{placeholder}") == PAYLOAD  # as Anthropic's reader writes it
    assert obj["metadata"] == {"data": BARE}
    assert as_sent(lifted, obj) == json.loads(raw)
