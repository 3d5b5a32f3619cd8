"""Error mapping and retries against a real HTTP server on 127.0.0.1, and bad input: a bad image or a
malformed part is always a BadRequestError naming ``messages[i].content[j]``, never a 500 or a
connection error, whatever the provider."""

from __future__ import annotations

import socket
from typing import Any

import anyio
import pytest

from tests.conftest import ImageServer, loop_must_not_block
from tests.providers.conftest import OPENAI_REPLY, Reply, Samples, Upstream, data_url, image_message
from vlmkit.errors import (
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ContextWindowExceededError,
    ImageFetchError,
    ImageFormatMismatchError,
    InvalidMessageError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ServerError,
    UnsupportedImageError,
)
from vlmkit.images.fetch import FetchOptions
from vlmkit.providers import RetryPolicy, Transport, acompletion, completion
from vlmkit.providers.transport import retry_after_seconds

HELLO = [{"role": "user", "content": "Hello"}]


def call(upstream: Upstream, transport: Transport, model: str = "openai/gpt-4o", **kwargs: Any) -> Any:
    return completion(model, HELLO, api_base=upstream.base, api_key="k", transport=transport, **kwargs)


def test_429_is_retried_and_then_succeeds(upstream: Upstream, fast: Transport) -> None:
    limited = {"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}}
    upstream.script(Reply(429, limited, {"Retry-After": "0"}), Reply(429, limited), Reply(body=OPENAI_REPLY))
    response = call(upstream, fast)
    assert response.choices[0].message.content == "A cat."
    assert len(upstream.seen) == 3
    assert upstream.seen[0].body == upstream.seen[2].body


def test_retries_are_bounded_and_the_error_carries_the_providers_words(upstream: Upstream, fast: Transport) -> None:
    upstream.script(Reply(500, {"error": {"message": "The server had an error", "type": "server_error"}}))
    with pytest.raises(ServerError) as err:
        call(upstream, fast)
    assert err.value.message == "openai error 500: The server had an error"
    assert (err.value.status_code, err.value.provider) == (500, "openai")
    assert len(upstream.seen) == 3  # the first try and max_retries=2 more
    upstream.seen.clear()
    with pytest.raises(ServerError):
        call(upstream, fast, max_retries=0)
    assert len(upstream.seen) == 1


def test_a_long_retry_after_is_not_waited_for(upstream: Upstream, fast: Transport) -> None:
    upstream.script(Reply(429, {"error": {"message": "slow down"}}, {"Retry-After": "3600"}))
    with pytest.raises(RateLimitError) as err:
        call(upstream, fast)
    assert err.value.message == "openai error 429: slow down" and err.value.status_code == 429
    assert len(upstream.seen) == 1


@pytest.mark.parametrize(
    ("model", "status", "body", "error", "message"),
    [
        ("openai/gpt-4o", 401, {"error": {"message": "Incorrect API key provided", "code": "invalid_api_key"}},
         AuthenticationError, "openai error 401: Incorrect API key provided"),
        ("anthropic/claude-3-7-sonnet-latest", 403,
         {"type": "error", "error": {"type": "permission_error", "message": "no access"}},
         PermissionDeniedError, "anthropic error 403: no access"),
        ("openai/gpt-9", 404, {"error": {"message": "The model `gpt-9` does not exist"}},
         NotFoundError, "openai error 404: The model `gpt-9` does not exist"),
        ("openai/gpt-4o", 400, {"error": {"message": "This model's maximum context length is 128000 tokens."}},
         ContextWindowExceededError, "openai error 400: This model's maximum context length is 128000 tokens."),
        ("anthropic/claude-3-7-sonnet-latest", 400,
         {"type": "error", "error": {"type": "invalid_request_error", "message": "prompt is too long: 210000 tokens"}},
         ContextWindowExceededError, "anthropic error 400: prompt is too long: 210000 tokens"),
        ("gemini/gemini-2.0-flash", 400,
         {"error": {"code": 400, "message": "API key not valid.", "status": "INVALID_ARGUMENT"}},
         BadRequestError, "gemini error 400: API key not valid."),
        ("ollama/llava", 404, {"error": "model 'llava' not found, try pulling it first"},
         NotFoundError, "ollama error 404: model 'llava' not found, try pulling it first"),
        ("openai/gpt-4o", 502, "<html>Bad gateway</html>", ServerError, "openai error 502: <html>Bad gateway</html>"),
    ],
)  # fmt: skip
def test_provider_errors_map_to_typed_errors(
    upstream: Upstream, fast: Transport, model: str, status: int, body: Any, error: type[Exception], message: str
) -> None:
    upstream.script(Reply(status, body))
    with pytest.raises(error) as err:
        call(upstream, fast, model)
    assert err.value.message == message  # type: ignore[attr-defined]
    assert err.value.status_code == status  # type: ignore[attr-defined]


def test_bedrock_error_type_header(upstream: Upstream, fast: Transport) -> None:
    upstream.script(Reply(400, {"message": "Input is too long for requested model."},
                          {"x-amzn-ErrorType": "ValidationException:http://internal.amazon.com/coral/"}))  # fmt: skip
    with pytest.raises(ContextWindowExceededError) as err:
        completion("bedrock/m", HELLO, api_base=upstream.base, aws_access_key_id="a", aws_secret_access_key="b",
                   transport=fast)  # fmt: skip
    assert err.value.message == "bedrock error 400: Input is too long for requested model."


def test_unreachable_and_timeout(fast: Transport) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(APIConnectionError) as err:
        completion("openai/gpt-4o", HELLO, api_base=f"http://127.0.0.1:{port}/v1", api_key="k", transport=fast)
    assert err.value.message.startswith(f"cannot reach openai at http://127.0.0.1:{port}/v1/chat/completions: ")

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    try:
        with pytest.raises(APITimeoutError) as timeout:
            completion("openai/gpt-4o", HELLO, api_base=f"http://127.0.0.1:{silent.getsockname()[1]}", api_key="k",
                       timeout=0.2, transport=fast)  # fmt: skip
        assert timeout.value.message.startswith("openai did not answer in time at http://127.0.0.1:")
        assert timeout.value.status_code == 504
    finally:
        silent.close()


def test_async_retry_and_error(upstream: Upstream, fast: Transport) -> None:
    upstream.script(Reply(503, {"error": {"message": "busy"}}), Reply(body=OPENAI_REPLY))

    async def main() -> Any:
        return await acompletion("openai/gpt-4o", HELLO, api_base=upstream.base, api_key="k", transport=fast)

    assert anyio.run(main).content == "A cat."
    upstream.script(Reply(401, {"error": {"message": "bad key"}}))
    with pytest.raises(AuthenticationError, match=r"^openai error 401: bad key$"):
        anyio.run(main)


def test_retry_after_forms() -> None:
    assert retry_after_seconds({"retry-after": "2"}) == 2.0
    assert retry_after_seconds({"retry-after-ms": "250"}) == 0.25
    assert retry_after_seconds({"retry-after": "Wed, 21 Oct 2015 07:28:10 GMT"}, now=1445412480.0) == 10.0
    assert retry_after_seconds({"retry-after": "soon"}) is None
    assert RetryPolicy(max_retries=1).delay(1, None) is None


# --- bad input ------------------------------------------------------------------------------------

BAD_PARTS: list[tuple[Any, type[Exception], str]] = [
    ({"type": "image_url"}, InvalidMessageError,
     "messages[0].content[1]: an image_url part needs 'image_url': a URL string or {'url': ...}"),
    ({"type": "image_url", "image_url": {"url": ""}}, InvalidMessageError,
     "messages[0].content[1]: an image_url part needs a non-empty string 'url'"),
    ({"type": "image_url", "image_url": {"url": "data:image/png;base64,aGVsbG8="}}, UnsupportedImageError,
     "messages[0].content[1]: the file is neither an image nor a PDF: found text ('hello'). Send an image"),
    ({"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}, BadRequestError,
     "messages[0].content[1]: 'ftp://x/y.png' uses the scheme ftp://"),
    ({"type": "image_url", "image_url": {"url": "/no/such/file.png"}}, BadRequestError,
     "messages[0].content[1]: '/no/such/file.png' is neither an existing file nor a URL"),
    ({"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "ultra"}}, InvalidMessageError,
     "messages[0].content[1]: detail must be 'low', 'high' or 'auto', not 'ultra'"),
    ({"type": "audio", "data": "..."}, InvalidMessageError,
     "messages[0].content[1]: unknown content part type 'audio'; vlmkit reads 'text', 'image_url', 'video_url' "
     "and 'file' parts"),
    ({"type": "text", "text": 5}, InvalidMessageError,
     "messages[0].content[1]: a text part needs a string 'text', not a number"),
    ("just a string", InvalidMessageError, "messages[0].content[1]: a content part must be an object, not a string"),
]  # fmt: skip

PROVIDERS = [
    ("openai/gpt-4o", {"api_key": "k"}),
    ("anthropic/claude-3-7-sonnet-latest", {"api_key": "k"}),
    ("gemini/gemini-2.0-flash", {"api_key": "k"}),
    ("vertex_ai/gemini-2.0-flash", {"api_key": "k", "vertex_project": "p"}),
    ("bedrock/m", {"aws_access_key_id": "a", "aws_secret_access_key": "b"}),
    ("ollama/llava", {}),
    ("lm_studio/m", {}),
]


@pytest.mark.parametrize(("model", "kwargs"), PROVIDERS)
@pytest.mark.parametrize(("part", "error", "message"), BAD_PARTS)
def test_bad_parts_are_bad_requests_that_say_where(
    model: str, kwargs: dict[str, Any], part: Any, error: type[Exception], message: str
) -> None:
    messages = [{"role": "user", "content": [{"type": "text", "text": "hi"}, part]}]
    with pytest.raises(error) as err:  # nothing listens at port 9: sending anything would be an APIConnectionError
        completion(model, messages, api_base="http://127.0.0.1:9", **kwargs)
    assert isinstance(err.value, BadRequestError) and err.value.status_code == 400
    assert err.value.message.startswith(message), err.value.message


def test_mislabelled_image_names_both_types(upstream: Upstream, samples: Samples) -> None:
    msg = image_message(data_url(samples.jpeg, "image/jpeg"), format="image/png")
    with pytest.raises(ImageFormatMismatchError) as err:
        completion("ollama/llava", msg, api_base=upstream.base)
    assert err.value.message == (
        "messages[0].content[1]: format='image/png' was declared but the bytes are image/jpeg; "
        "drop format= to use the real type, or pass the right file"
    )


def test_malformed_calls(upstream: Upstream) -> None:
    """What is completion()'s own (keywords, model names); messages and settings are read as on every face
    (tests/wire/test_openai_chat.py, tests/server/test_one_wire.py)."""
    with pytest.raises(BadRequestError) as err:
        completion("openai/gpt-4o", [], api_base=upstream.base, api_key="k")
    assert err.value.message == "messages is empty: send at least one message"
    for kwargs, message in [
        ({"temperature": "hot"}, "temperature must be a number, not a string"),
        ({"max_tokens": 0}, "max_tokens must be at least 1, not 0"),
        ({"stop": [1]}, "stop must be a string or a list of strings; stop[0] is a number"),
        ({"frobnicate": 1}, "unknown parameter(s) frobnicate; pass provider-specific fields in extra_body={...}"),
    ]:
        with pytest.raises(BadRequestError) as err:
            completion("openai/gpt-4o", HELLO, api_base=upstream.base, api_key="k", **kwargs)
        assert err.value.message == message
    with pytest.raises(BadRequestError, match=r"^unknown provider 'nope' in model 'nope/x'; known providers: "):
        completion("nope/x", HELLO)
    with pytest.raises(BadRequestError, match=r"^model 'mystery' names no provider: write 'provider/mystery'"):
        completion("mystery", HELLO)
    assert upstream.seen == []


def test_url_is_fetched_safely_for_providers_that_cannot_fetch(upstream: Upstream, samples: Samples) -> None:
    upstream.files["/hopper.jpg"] = (samples.jpeg, "image/png")  # a lying Content-Type: the bytes decide
    url = f"{upstream.base}/hopper.jpg"
    upstream.script(Reply(body={"model": "llava", "message": {"role": "assistant", "content": "ok"}, "done": True}))
    options = FetchOptions(allow_hosts=frozenset({"127.0.0.1"}))
    response = completion("ollama/llava", image_message(url), api_base=upstream.base, fetch=options)
    assert response.content == "ok"
    import base64

    assert base64.b64decode(upstream.seen[0].json["messages"][0]["images"][0]) == samples.jpeg
    # without the allow-list, loopback is refused: a bad request naming the part, nothing sent upstream
    upstream.seen.clear()
    with pytest.raises(ImageFetchError) as err:
        completion("ollama/llava", image_message(url), api_base=upstream.base)
    assert err.value.message.startswith(f"messages[0].content[1]: refused {url}: 127.0.0.1 is a loopback address")
    assert err.value.status_code == 400 and upstream.seen == []


def test_url_is_fetched_asynchronously_for_lm_studio(upstream: Upstream, samples: Samples) -> None:
    upstream.files["/coffee.webp"] = (samples.webp, "image/webp")
    options = FetchOptions(allow_hosts=frozenset({"127.0.0.1"}))

    async def main() -> Any:
        msg = image_message(f"{upstream.base}/coffee.webp")
        return await acompletion("lm_studio/qwen2-vl", msg, api_base=upstream.base + "/v1", fetch=options)

    assert anyio.run(main).content == "A cat."
    sent = upstream.seen[0]
    assert sent.path == "/v1/chat/completions"
    url = sent.json["messages"][0]["content"][1]["image_url"]["url"]
    assert url.startswith(("data:image/jpeg;base64,", "data:image/png;base64,"))  # WebP rendered for llama.cpp


def test_acompletion_fetches_an_image_url_off_the_event_loop(upstream: Upstream, image_server: ImageServer) -> None:
    # The image server waits a second before it answers: on the event loop, that second would be one
    # step of the loop, which asyncio's debug mode records.
    image_server.delay = 1.0
    options = FetchOptions(allow_hosts=frozenset({"127.0.0.1"}))

    async def main() -> tuple[Any, list[str]]:
        async with loop_must_not_block(0.5) as slow:
            msg = image_message(image_server.url())
            response = await acompletion("lm_studio/qwen2-vl", msg, api_base=upstream.base + "/v1", fetch=options)
        return response, slow

    response, slow = anyio.run(main)
    assert slow == [] and response.content == "A cat."
    assert image_server.served == ["/grace_hopper.jpg"]
    url = upstream.seen[0].json["messages"][0]["content"][1]["image_url"]["url"]
    assert url.startswith("data:image/jpeg;base64,")  # fetched by vlmkit, sent as data: llama.cpp fetches nothing
