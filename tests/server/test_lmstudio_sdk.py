"""LM Studio's own SDK (the real ``lmstudio`` package) unchanged against a real ``vlmkit serve``
subprocess on 127.0.0.1, serving the generated test VLM under the catalog key LM Studio's snippets use.

The three image-input snippets of LM Studio's documentation (convenience, scoped, async) are copied
as they are but for the image path and the host; the rest drives the SDK's other calls: streaming,
model info, downloaded models, structured output, cancellation and a model that is not there.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lmstudio as lms
import pytest
from lmstudio.json_api import ChatResponseEndpoint
from lmstudio.sync_api import _reset_default_client
from pydantic import BaseModel, Field

import vlmkit
from tests.conftest import photo_path
from tests.server.served import wait_healthy
from vlmkit.engine.synthetic import TEST_TEXT, TEST_VISION, write_mmproj, write_text_model

ROOT = Path(__file__).resolve().parents[2]
KEY = "qwen2-vl-2b-instruct"
PHOTO = str(photo_path("grace_hopper.jpg"))
SHORT = {"maxTokens": 8, "temperature": 0}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_short_vlm(directory: Path, context_length: int = 256) -> tuple[Path, Path]:
    """The generated test VLM with a 256-token context: LM Studio's snippets set no token limit, and its
    random words run until the context is full."""
    directory.mkdir(parents=True, exist_ok=True)
    model, mmproj = directory / "short-vlm.gguf", directory / "mmproj-short-vlm.gguf"
    write_text_model(model, dataclasses.replace(TEST_TEXT, context_length=context_length), seed=1)
    write_mmproj(mmproj, TEST_VISION, seed=2)
    return model, mmproj


def start_serve(
    home: Path, *args: str, port: int | None = None, context_length: int = 256
) -> tuple[subprocess.Popen[bytes], int]:
    """``vlmkit serve`` of the tree under test, serving the test VLM as ``qwen2-vl-2b-instruct``."""
    model, mmproj = write_short_vlm(home / "tiny", context_length)
    config = home / "vlmkit.yaml"
    config.write_text(json.dumps({"models": {KEY: {"path": str(model), "mmproj": str(mmproj)}}}))
    port = port or free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "src"),
        "VLMKIT_HOME": str(home / "home"),
        "VLMKIT_CACHE_DIR": str(home / "cache"),
    }
    env.pop("VLMKIT_API_KEY", None)
    cmd = [sys.executable, "-m", "vlmkit.cli", "serve", "--port", str(port), "--config", str(config), *args]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    wait_healthy(proc, f"http://127.0.0.1:{port}")
    return proc, port


def stop_serve(proc: subprocess.Popen[bytes]) -> str:
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    return out.decode()


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    proc, port = start_serve(tmp_path_factory.mktemp("lmstudio-serve"))
    yield f"127.0.0.1:{port}"
    out = stop_serve(proc)
    assert "Traceback" not in out, out


@pytest.fixture()
def host(serve: str) -> Iterator[str]:
    _reset_default_client()
    yield serve
    _reset_default_client()


def check(prediction: Any) -> None:
    assert isinstance(prediction.content, str) and prediction.content
    stats = prediction.stats
    assert stats.stop_reason in ("eosFound", "maxPredictedTokensReached", "contextLengthReached")
    assert stats.prompt_tokens_count is not None and stats.prompt_tokens_count > 10  # the image's tokens are in it
    assert stats.predicted_tokens_count is not None and stats.predicted_tokens_count > 0
    assert stats.tokens_per_second is not None and stats.tokens_per_second > 0
    assert prediction.model_info.model_key == KEY and prediction.model_info.vision


# --- LM Studio's three image-input snippets ------------------------------------------------------


def test_convenience_snippet(host: str) -> None:
    lms.configure_default_client(host)

    image_path = PHOTO  # Replace with the path to your image
    image_handle = lms.prepare_image(image_path)
    model = lms.llm("qwen2-vl-2b-instruct")
    chat = lms.Chat()
    chat.add_user_message("Describe this image please", images=[image_handle])
    prediction = model.respond(chat)

    check(prediction)
    assert image_handle.identifier.startswith("file-") and image_handle.file_type == "image"


def test_scoped_snippet(host: str) -> None:
    with lms.Client(host) as client:
        image_path = PHOTO  # Replace with the path to your image
        image_handle = client.files.prepare_image(image_path)
        model = client.llm.model("qwen2-vl-2b-instruct")
        chat = lms.Chat()
        chat.add_user_message("Describe this image please", images=[image_handle])
        prediction = model.respond(chat)

        check(prediction)
        again = client.files.prepare_image(image_path)  # the same picture is the same upload
        assert again.identifier == image_handle.identifier


def test_async_snippet(host: str) -> None:
    async def main() -> Any:
        async with lms.AsyncClient(host) as client:
            image_path = PHOTO  # Replace with the path to your image
            image_handle = await client.files.prepare_image(image_path)
            model = await client.llm.model("qwen2-vl-2b-instruct")
            chat = lms.Chat()
            chat.add_user_message("Describe this image please", images=[image_handle])
            prediction = await model.respond(chat)
            return prediction

    check(asyncio.run(main()))


# --- the rest of what the SDK does ---------------------------------------------------------------


def test_streaming_progress_and_info(host: str) -> None:
    with lms.Client(host) as client:
        model = client.llm.model(KEY)
        chat = lms.Chat("You are terse.")
        chat.add_user_message("Describe this image please", images=[client.files.prepare_image(PHOTO)])
        progress: list[float] = []
        stream = model.respond_stream(chat, config=SHORT, on_prompt_processing_progress=progress.append)
        fragments = [f.content for f in stream]
        result = stream.result()
        assert len(fragments) > 1 and "".join(fragments) == result.content
        assert progress[0] == 0.0 and progress[-1] == 1.0
        assert result.stats.stop_reason == "maxPredictedTokensReached" and result.stats.predicted_tokens_count == 8
        assert result.prediction_config.max_tokens == 8

        info = model.get_info()
        assert info.model_key == KEY and info.vision is True and info.format == "gguf"
        assert info.context_length > 0
        assert [m.identifier for m in client.llm.list_loaded()] == [KEY]
        assert model.get_context_length() == info.context_length

        downloaded = client.list_downloaded_models()
        assert [(m.model_key, m.type, m.info.vision) for m in downloaded] == [(KEY, "llm", True)]


def test_loading_tokens_and_templates(host: str) -> None:
    with lms.Client(host) as client:
        model = client.llm.load_new_instance(KEY)
        assert model.identifier == KEY
        assert model.get_load_config().context_length == model.get_context_length() == 256

        tokens = model.tokenize("Hello there")
        assert isinstance(tokens, list) and len(tokens) > 1 and all(isinstance(t, int) for t in tokens)
        assert model.count_tokens("Hello there") == len(tokens)
        assert model.tokenize(["a", "Hello there"])[1] == tokens

        chat = lms.Chat("You are terse.")
        chat.add_user_message("Describe this image please", images=[client.files.prepare_image(PHOTO)])
        formatted = model.apply_prompt_template(chat)
        assert formatted.startswith("<|im_start|>system\nYou are terse.<|im_end|>")
        assert "Describe this image please" in formatted and formatted.endswith("<|im_start|>assistant\n")

        version = client.system.remote_call("version")
        assert version["version"] == vlmkit.__version__

        client.llm.unload(KEY)
        assert client.llm.list_loaded() == []
        with pytest.raises(lms.LMStudioServerError, match="the model 'qwen2-vl-2b-instruct' is not loaded"):
            client.llm.unload(KEY)
        with pytest.raises(lms.LMStudioServerError, match="vlmkit serves one instance of each model"):
            client.llm.load_new_instance(KEY, "second-copy")


def test_structured_output(host: str) -> None:
    schema = {
        "type": "object",
        "properties": {"caption": {"type": "string", "maxLength": 12}},
        "required": ["caption"],
    }
    with lms.Client(host) as client:
        model = client.llm.model(KEY)
        chat = lms.Chat()
        chat.add_user_message("Caption this image as JSON", images=[client.files.prepare_image(PHOTO)])
        result = model.respond(chat, response_format=schema, config={"maxTokens": 64, "temperature": 0})
        assert result.stats.stop_reason == "eosFound"
        assert isinstance(result.parsed, dict) and isinstance(result.parsed["caption"], str)
        assert json.loads(result.content) == result.parsed

        class Caption(BaseModel):
            caption: str = Field(max_length=12)

        result = model.respond(chat, response_format=Caption, config={"maxTokens": 64, "temperature": 0})
        assert Caption.model_validate(result.parsed).caption == result.parsed["caption"]


def test_cancellation(host: str) -> None:
    with lms.Client(host) as client:
        model = client.llm.model(KEY)
        stream = model.respond_stream("Tell me a long story", config={"maxTokens": 4000})
        got = []
        for fragment in stream:
            got.append(fragment.content)
            if len(got) == 3:
                stream.cancel()
        result = stream.result()
        assert result.stats.stop_reason == "userStopped"
        # the connection serves the next prediction at once
        assert model.respond("Hello", config=SHORT).stats.predicted_tokens_count == 8


def test_a_model_not_downloaded_says_how_to_get_it(host: str) -> None:
    with lms.Client(host) as client:
        with pytest.raises(lms.LMStudioModelNotFoundError) as caught:
            client.llm.model("smolvlm-256m")
        message = str(caught.value)
        assert "'smolvlm-256m' is not downloaded on this server" in message
        assert "vlmkit get smolvlm-256m" in message
        with pytest.raises(lms.LMStudioModelNotFoundError) as caught:
            client.llm.model("no-such-model")
        assert "does not exist on this server; served: qwen2-vl-2b-instruct" in str(caught.value)


# --- tools: .act() -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def act_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server whose model has room for tools: their description and the calls and results in the chat."""
    proc, port = start_serve(tmp_path_factory.mktemp("lmstudio-act"), context_length=2048)
    yield f"127.0.0.1:{port}"
    out = stop_serve(proc)
    assert "Traceback" not in out, out


def forcing_a_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``.act()`` send ``force: true`` with its tools (its rounds that offer tools must call one).

    ``.act()`` has no tool-choice argument, and the generated test model's random weights never choose
    a call on their own; ``force`` is the protocol's own field for a required call (a client such as
    lmstudio-js, or a raw ``rawTools`` config, sets it), so the SDK is made to send it."""
    parse_tools = ChatResponseEndpoint.parse_tools

    def forced(tools: Any, allow_async: bool = False) -> Any:
        array, client_tools = parse_tools(tools, allow_async)
        array.force = True
        return array, client_tools

    monkeypatch.setattr(ChatResponseEndpoint, "parse_tools", staticmethod(forced))


def test_act_calls_a_python_function_and_answers_with_its_result(
    act_host: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    forcing_a_call(monkeypatch)
    called: list[tuple[int, int]] = []

    def multiply(a: int, b: int) -> int:
        """Multiply two whole numbers."""
        called.append((a, b))
        return a * b

    with lms.Client(act_host) as client:
        model = client.llm.model(KEY)
        chat = lms.Chat("You use tools.")
        chat.add_user_message("What is 6 times 7?")
        messages: list[Any] = []
        rounds: list[Any] = []
        result = model.act(
            chat,
            [multiply],
            max_prediction_rounds=2,
            config={"maxTokens": 200, "temperature": 0},
            on_message=messages.append,
            on_prediction_completed=rounds.append,
        )
        asked_alone = model.respond(chat, config={"maxTokens": 1}).stats.prompt_tokens_count
        request_message, result_message, answer = messages
        chat.append(request_message)
        chat.append(result_message)
        shown = model.apply_prompt_template(chat)  # how the server put the call and its result to the model
    assert result.rounds == 2  # a round that called the tool, then the answer (the last round offers no tools)
    ((a, b),) = called  # called once, with the arguments its schema asks for
    assert isinstance(a, int) and isinstance(b, int)
    (request,) = [p.tool_call_request for p in request_message.content if p.type == "toolCallRequest"]
    assert request.name == "multiply" and dict(request.arguments or {}) == {"a": a, "b": b}
    (tool_result,) = result_message.content
    assert tool_result.tool_call_id == request.id and json.loads(tool_result.content) == a * b
    assert rounds[0].stats.stop_reason == "toolCalls" and rounds[0].content == ""
    # the call and its result went back into the chat: the answering round's prompt holds them
    assert rounds[1].stats.prompt_tokens_count > asked_alone
    assert f'"arguments": {{"a": {a}, "b": {b}}}' in shown and str(a * b) in shown.split("multiply")[-1]
    assert rounds[1].stats.stop_reason in ("eosFound", "maxPredictedTokensReached")
    assert answer.role == "assistant" and answer.content[0].text == rounds[1].content


def test_act_without_a_forced_call_lets_the_model_answer(act_host: str) -> None:
    called: list[object] = []

    def multiply(a: int, b: int) -> int:
        """Multiply two whole numbers."""
        called.append((a, b))
        return a * b

    with lms.Client(act_host) as client:
        model = client.llm.model(KEY)
        result = model.act("What is 6 times 7?", [multiply], config=SHORT)
    assert result.rounds == 1 and called == []  # the random model chose to answer in words


# --- discovery: no host at all -------------------------------------------------------------------


def test_no_host_at_all_through_the_discovery_port(tmp_path: Path) -> None:
    proc, _ = start_serve(tmp_path, "--lmstudio-discovery")
    _reset_default_client()
    try:
        image_path = PHOTO  # Replace with the path to your image
        image_handle = lms.prepare_image(image_path)
        model = lms.llm("qwen2-vl-2b-instruct")
        chat = lms.Chat()
        chat.add_user_message("Describe this image please", images=[image_handle])
        prediction = model.respond(chat, config=SHORT)

        check(prediction)
        assert lms.get_default_client().api_host == "127.0.0.1:41343"
    finally:
        _reset_default_client()
        out = stop_serve(proc)
    assert "also listening on 127.0.0.1:41343" in out


def test_the_discovery_port_taken_is_said_clearly(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 41343))
        taken.listen()
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "VLMKIT_HOME": str(tmp_path / "home")}
        cmd = [sys.executable, "-m", "vlmkit.cli", "serve", "--port", str(free_port()), "--lmstudio-discovery"]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "port 41343 on 127.0.0.1, LM Studio's first discovery port, is in use" in done.stderr
    assert "leave out --lmstudio-discovery" in done.stderr
    assert "Traceback" not in done.stderr


# --- the repository: vlmkit's catalog and `vlmkit get` -------------------------------------------


def test_search_and_download_through_the_repository(tmp_path: Path) -> None:
    proc, port = start_serve(tmp_path)
    try:
        with lms.Client(f"127.0.0.1:{port}") as client:
            found = client.repository.search_models("qwen2-vl")
            assert found[0].search_result.name == "qwen2-vl-2b-instruct" and found[0].search_result.exact is False
            options = found[0].get_download_options()
            assert [o.info.download_identifier for o in options] == ["qwen2-vl-2b-instruct"]
            assert options[0].info.indexed_model_identifier.startswith("ggml-org/Qwen2-VL-2B-Instruct-GGUF/")

            # the demo model: `vlmkit get` writes it with no network, through the same download path
            (demo,) = client.repository.search_models("tiny-random-vlm")
            assert demo.search_result.exact is True
            progress: list[Any] = []
            finalized: list[bool] = []
            (option,) = demo.get_download_options()
            key = option.download(on_progress=progress.append, on_finalize=lambda: finalized.append(True))
            assert key == "tiny-random-vlm" and finalized == [True]
            assert progress and progress[-1].downloaded_bytes == progress[-1].total_bytes > 100_000

            assert "tiny-random-vlm" in [m.model_key for m in client.list_downloaded_models()]
            model = client.llm.model("tiny-random-vlm")
            assert model.respond("Hello", config=SHORT).stats.predicted_tokens_count == 8

            with pytest.raises(lms.LMStudioServerError, match="'no-such' is not in vlmkit's catalog"):
                _options_of(client, "no-such")
    finally:
        stop_serve(proc)


def _options_of(client: lms.Client, key: str) -> Any:
    from lmstudio._sdk_models import RepositoryRpcGetModelDownloadOptionsParameter

    param = RepositoryRpcGetModelDownloadOptionsParameter._from_api_dict(
        {"modelSearchResultIdentifier": {"type": "catalog", "identifier": key}}
    )
    return client.repository.remote_call("getModelDownloadOptions", param)
