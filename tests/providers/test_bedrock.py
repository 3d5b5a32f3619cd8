"""AWS Bedrock Converse: the exact wire request, validated against botocore's own service model for
bedrock-runtime and compared with what boto3 itself sends for the same call; SigV4 by botocore."""

from __future__ import annotations

import base64
import copy
import json
import re
from typing import Any

import pytest

from tests.providers.conftest import Builder, Samples, data_url, image_message, size_of
from vlmkit.errors import AuthenticationError, BadRequestError

HELLO = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}]
MODEL = "anthropic.claude-3-5-sonnet-20240620-v1:0"
CREDS = {"aws_access_key_id": "AKIDEXAMPLE", "aws_secret_access_key": "secret", "aws_region_name": "us-west-2"}


def as_params(body: dict[str, Any], model: str = MODEL) -> dict[str, Any]:
    """The Python parameters boto3 takes for this JSON body (image bytes decoded)."""
    params = copy.deepcopy(body)
    for message in params["messages"]:
        for block in message["content"]:
            inner = block.get("toolResult", {}).get("content", [])  # a tool result's images too
            for image_block in [block, *inner]:
                source = image_block.get("image", {}).get("source", {})
                if "bytes" in source:
                    source["bytes"] = base64.b64decode(source["bytes"])
    return {"modelId": model, **params}


def validate(body: dict[str, Any]) -> None:
    import botocore.session
    from botocore.validate import ParamValidator

    operation = botocore.session.get_session().get_service_model("bedrock-runtime").operation_model("Converse")
    report = ParamValidator().validate(as_params(body), operation.input_shape)
    assert not report.has_errors(), report.generate_report()


def boto3_request(params: dict[str, Any]) -> Any:
    """What boto3 would send for ``converse(**params)`` (captured before it leaves the process)."""
    import boto3

    class Captured(Exception):
        pass

    client = boto3.client(
        "bedrock-runtime", region_name="us-west-2", aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="secret"
    )
    seen: list[Any] = []

    def capture(request: Any, **kwargs: Any) -> None:
        seen.append(request)
        raise Captured

    client.meta.events.register("before-send.bedrock-runtime.Converse", capture)
    with pytest.raises(Captured):
        client.converse(**params)
    return seen[0]


def test_text_message_wire_request_matches_boto3(wire: Builder) -> None:
    url, headers, body = wire(f"bedrock/{MODEL}", HELLO, max_tokens=100, temperature=0.3, **CREDS)
    assert url == f"https://bedrock-runtime.us-west-2.amazonaws.com/model/{MODEL.replace(':', '%3A')}/converse"
    assert body == {
        "messages": [{"role": "user", "content": [{"text": "Hello"}]}],
        "system": [{"text": "Be brief."}],
        "inferenceConfig": {"maxTokens": 100, "temperature": 0.3},
    }
    validate(body)
    theirs = boto3_request(as_params(body))
    assert theirs.url == url
    assert json.loads(theirs.body) == body
    auth = headers["Authorization"]
    assert re.fullmatch(
        r"AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/\d{8}/us-west-2/bedrock/aws4_request, "
        r"SignedHeaders=[a-z0-9;-]*host[a-z0-9;-]*x-amz-date[a-z0-9;-]*, Signature=[0-9a-f]{64}",
        auth,
    ), auth
    assert re.fullmatch(r"\d{8}T\d{6}Z", headers["X-Amz-Date"])


def test_session_token_and_bearer_api_key(wire: Builder, monkeypatch: pytest.MonkeyPatch) -> None:
    _, headers, _ = wire(f"bedrock/{MODEL}", HELLO, aws_session_token="tok", **CREDS)
    assert headers["X-Amz-Security-Token"] == "tok"
    monkeypatch.setenv("AWS_BEARER_TOKEN_BEDROCK", "bedrock-api-key")
    _, headers, _ = wire(f"bedrock/{MODEL}", HELLO, aws_region_name="eu-west-1")
    assert headers["Authorization"] == "Bearer bedrock-api-key"


def test_env_credentials_and_missing_credentials(wire: Builder, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(AuthenticationError) as err:
        wire(f"bedrock/{MODEL}", HELLO)
    assert err.value.message.startswith("no AWS credentials for Bedrock: set AWS_ACCESS_KEY_ID")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDENV")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    monkeypatch.setenv("AWS_REGION", "ap-south-1")
    url, headers, _ = wire(f"bedrock/{MODEL}", HELLO)
    assert url.startswith("https://bedrock-runtime.ap-south-1.amazonaws.com/")
    assert "Credential=AKIDENV/" in headers["Authorization"]


@pytest.mark.parametrize(
    ("kind", "mime", "fmt", "size"),
    [
        ("jpeg", "image/jpeg", "jpeg", None),
        ("png_alpha", "image/png", "png", None),
        ("webp", "image/webp", "webp", None),
        ("heic", "image/heic", "jpeg", (320, 240)),
        ("photo_12mp", "image/jpeg", "jpeg", (4000, 3000)),
    ],
)
def test_images_go_as_bytes_within_bedrock_limits(
    wire: Builder, samples: Samples, kind: str, mime: str, fmt: str, size: tuple[int, int] | None
) -> None:
    data = getattr(samples, kind)
    _, _, body = wire(f"bedrock/{MODEL}", image_message(data_url(data, mime)), **CREDS)
    text, image = body["messages"][0]["content"]
    assert text == {"text": "What is in this image?"}
    assert set(image) == {"image"} and image["image"]["format"] == fmt
    sent = base64.b64decode(image["image"]["source"]["bytes"])
    assert len(sent) <= 3_750_000
    if size is None:
        assert sent == data
    else:
        assert size_of(sent) == size  # the 12 MP photo fits 8000 px; only its bytes may have been squeezed
    validate(body)


def test_s3_uri_goes_as_s3_location(wire: Builder) -> None:
    msg = image_message("s3://bucket/cat.png", format="image/png")
    _, _, body = wire(f"bedrock/{MODEL}", msg, aws_bucket_owner="123456789012", **CREDS)
    assert body["messages"][0]["content"][1] == {
        "image": {
            "format": "png",
            "source": {"s3Location": {"uri": "s3://bucket/cat.png", "bucketOwner": "123456789012"}},
        }
    }
    validate(body)
    with pytest.raises(BadRequestError) as err:
        wire(f"bedrock/{MODEL}", image_message("gs://bucket/cat.png", format="image/png"), **CREDS)
    assert err.value.message == (
        "messages[0].content[1]: bedrock cannot read 'gs://bucket/cat.png': "
        "Bedrock reads s3:// URIs; send bytes or a data URL instead"
    )


def test_consecutive_turns_are_merged_and_stream_endpoint(wire: Builder) -> None:
    messages = [
        {"role": "user", "content": "a"},
        {"role": "user", "content": "b"},
        {"role": "assistant", "content": "c"},
    ]
    url, headers, body = wire(f"bedrock/us.{MODEL}", messages, stream=True, **CREDS)
    assert url.endswith(f"/model/us.{MODEL.replace(':', '%3A')}/converse-stream")
    assert headers["Accept"] == "application/vnd.amazon.eventstream"
    assert body["messages"] == [
        {"role": "user", "content": [{"text": "a"}, {"text": "b"}]},
        {"role": "assistant", "content": [{"text": "c"}]},
    ]


def test_parse_response() -> None:
    from vlmkit.providers import bedrock
    from vlmkit.providers.call import _start

    cfg, req, _ = _start(f"bedrock/{MODEL}", HELLO, False, None, None, None, None, CREDS)
    data = {
        "output": {"message": {"role": "assistant", "content": [{"text": "A cat."}]}},
        "stopReason": "end_turn",
        "usage": {"inputTokens": 30, "outputTokens": 4, "totalTokens": 34},
        "metrics": {"latencyMs": 300},
    }
    response = bedrock.parse_response(data, req, cfg)
    assert response.content == "A cat." and response.choices[0].finish_reason == "stop"
    assert response.usage.to_dict() == {"prompt_tokens": 30, "completion_tokens": 4, "total_tokens": 34}
