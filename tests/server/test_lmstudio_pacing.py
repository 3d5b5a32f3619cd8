"""How LM Studio's protocol paces a prediction's fragments (:func:`vlmkit.server.lmstudio_ws.paced`):
the first at once and alone, then what came within the window as one batch, the batch held given
before the result or the error, and nothing held past the window while the model is quiet. Fed by
real prediction streams over the bridge, whose work stands for a model; no timing is asserted, only order.
Then a local prediction over the protocol on a real server: its fragments' token counts add up, and
an uploaded image is prepared once, then reused by every prediction that names its handle."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from websockets.sync.client import ClientConnection, connect

from tests.conftest import photo_path
from tests.server.conftest import API_KEY, Running, start_server
from vlmkit.errors import PredictionError
from vlmkit.prediction import PredictionFragment, PredictionResult, PredictionStats
from vlmkit.server import ServerSettings
from vlmkit.server.lmstudio_ws import paced
from vlmkit.stream import AsyncPredictionStream, CancelToken, FragmentCallback, Work

RESULT = PredictionResult("abcd", PredictionStats())


def texts(batches: list[list[PredictionFragment] | PredictionResult]) -> list[str | PredictionResult]:
    return [b if isinstance(b, PredictionResult) else "".join(f.content for f in b) for b in batches]


def burst(*contents: str) -> Work:
    """A prediction whose fragments all come at once (as a fast model's do), then its result."""

    def work(on_fragment: FragmentCallback, first: Callable[[], None], cancel: CancelToken) -> PredictionResult:
        for content in contents:
            on_fragment(PredictionFragment(content))
        return RESULT

    return work


async def read(work: Work, window: float) -> list[str | PredictionResult]:
    return texts([b async for b in paced(AsyncPredictionStream(work, model="m"), window)])


async def test_the_first_fragment_goes_alone_and_the_rest_of_a_burst_together() -> None:
    batches = [b async for b in paced(AsyncPredictionStream(burst("a", "b", "c", "d"), model="m"), 60.0)]
    assert texts(batches) == ["a", "bcd", RESULT]
    assert [len(b) for b in batches if isinstance(b, list)] == [1, 3]  # each token's count kept, to be summed


async def test_no_window_sends_every_fragment_as_it_comes() -> None:
    assert await read(burst("a", "b", "c"), 0.0) == ["a", "b", "c", RESULT]


async def test_a_quiet_model_does_not_hold_what_came_before_it() -> None:
    """After ``b`` the model goes quiet: ``b`` is given when the window ends, before ``c`` is even made."""
    go, made_c = threading.Event(), threading.Event()

    def stalling(on_fragment: FragmentCallback, first: Callable[[], None], cancel: CancelToken) -> PredictionResult:
        on_fragment(PredictionFragment("a"))
        on_fragment(PredictionFragment("b"))
        go.wait(30)  # quiet until the reader has given "b"
        made_c.set()
        on_fragment(PredictionFragment("c"))
        return RESULT

    got: list[str | PredictionResult] = []
    async for batch in paced(AsyncPredictionStream(stalling, model="m"), 0.05):
        got.extend(texts([batch]))
        if got[-1] == "b":
            assert not made_c.is_set()
            go.set()
    assert got == ["a", "b", "c", RESULT]


async def test_what_is_held_comes_before_the_error() -> None:
    def failing(on_fragment: FragmentCallback, first: Callable[[], None], cancel: CancelToken) -> PredictionResult:
        on_fragment(PredictionFragment("a"))
        on_fragment(PredictionFragment("b"))
        raise PredictionError("the model failed mid-answer")

    got: list[str | PredictionResult] = []
    with pytest.raises(PredictionError, match="the model failed mid-answer"):
        async for batch in paced(AsyncPredictionStream(failing, model="m"), 60.0):
            got.extend(texts([batch]))
    assert got == ["a", "b"]


async def test_cancelling_the_reader_cancels_the_prediction() -> None:
    """A connection that closes while a batch is held stops the prediction under it."""
    token = CancelToken()
    waiting = threading.Event()

    def endless(on_fragment: FragmentCallback, first: Callable[[], None], cancel: CancelToken) -> PredictionResult:
        on_fragment(PredictionFragment("a"))
        on_fragment(PredictionFragment("b"))  # held: the window is long
        waiting.set()
        while not cancel.cancelled:
            time.sleep(0.01)
        return RESULT

    async def reader() -> None:
        async for _ in paced(AsyncPredictionStream(endless, model="m", cancel=token), 60.0):
            pass

    task = asyncio.ensure_future(reader())
    while not waiting.is_set():
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert token.cancelled


async def test_a_stream_read_with_a_timeout_goes_on_after_it() -> None:
    """``next_within`` gives ``None`` when nothing came in time, and the same stream goes on."""
    go = threading.Event()

    def slow(on_fragment: FragmentCallback, first: Callable[[], None], cancel: CancelToken) -> PredictionResult:
        go.wait(30)
        on_fragment(PredictionFragment("a"))
        return RESULT

    stream = AsyncPredictionStream(slow, model="m")
    assert await stream.next_within(0.01) is None
    assert await stream.next_within(0.0) is None
    go.set()
    fragment = await stream.next_within(30)
    assert isinstance(fragment, PredictionFragment) and fragment.content == "a"
    assert await stream.next_within(30) is RESULT
    assert await stream.next_within(30) is RESULT  # finished: the result again, never a wait
    assert [f async for f in stream] == []


# --- over the protocol ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def running(settings: ServerSettings) -> Iterator[Running]:
    server = start_server(settings, record=False)
    yield server
    server.stop()


@contextlib.contextmanager
def authed(running: Running, namespace: str) -> Iterator[ClientConnection]:
    with connect(running.url.replace("http", "ws") + f"/{namespace}", max_size=None) as conn:
        conn.send(json.dumps({"authVersion": 1, "clientIdentifier": "test-client", "clientPasskey": API_KEY}))
        assert json.loads(conn.recv(timeout=30)) == {"success": True}
        yield conn


def predict(conn: ClientConnection, channel_id: int, param: dict[str, Any]) -> list[dict[str, Any]]:
    """The messages of one prediction channel, up to its close."""
    frame = {"type": "channelCreate", "endpoint": "predict", "channelId": channel_id, "creationParameter": param}
    conn.send(json.dumps(frame))
    messages = []
    while (answer := json.loads(conn.recv(timeout=60)))["type"] != "channelClose":
        assert answer["type"] == "channelSend" and answer["channelId"] == channel_id, answer
        messages.append(answer["message"])
    return messages


def test_a_local_prediction_reuses_its_uploaded_image_and_counts_every_token(running: Running) -> None:
    with authed(running, "files") as files:
        data = base64.b64encode(photo_path("grace_hopper.jpg").read_bytes()).decode()
        files.send(json.dumps({"type": "rpcCall", "endpoint": "uploadFileBase64", "callId": 1,
                               "parameter": {"name": "photo.jpg", "contentBase64": data}}))  # fmt: skip
        handle = json.loads(files.recv(timeout=30))["result"]["identifier"]
    history = {"messages": [{"role": "user", "content": [
        {"type": "text", "text": "Describe this image please"},
        {"type": "file", "identifier": handle, "fileType": "image"},
    ]}]}  # fmt: skip
    stack = {"layers": [{"layerName": "apiOverride", "config": {"fields": [
        {"key": "llm.prediction.maxPredictedTokens", "value": {"checked": True, "value": 8}},
        {"key": "llm.prediction.temperature", "value": 0},
    ]}}]}  # fmt: skip
    param = {"modelSpecifier": "tiny", "history": history, "predictionConfigStack": stack}
    with authed(running, "llm") as conn:
        first, second = predict(conn, 1, param), predict(conn, 2, param)
    for messages in (first, second):
        assert messages[0] == {"type": "promptProcessingProgress", "progress": 0.0}
        fragments = [m["fragment"] for m in messages if m["type"] == "fragment"]
        stats = messages[-1]["stats"]
        assert messages[-1]["type"] == "success" and stats["predictedTokensCount"] == 8
        assert sum(f["tokensCount"] for f in fragments) == 8  # fragments sent together keep their count
    text = ["".join(m["fragment"]["content"] for m in ms if m["type"] == "fragment") for ms in (first, second)]
    assert text[0] == text[1] and text[0]
    stats = second[-1]["stats"]  # the handle is the image already prepared and encoded: nothing done again
    assert (stats["imagesEncoded"], stats["imagesReused"], stats["imagesPreprocessed"]) == (0, 1, 0)
