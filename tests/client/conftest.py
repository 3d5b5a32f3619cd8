"""Fixtures of the SDK tests: the generated test VLM standing in for ``qwen2-vl-2b-instruct``.

The model has random weights: tests assert structure, stats and stop reasons, never words.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import vlmkit as vk
from tests.conftest import photo_path
from vlmkit.chat import Chat
from vlmkit.client.backend import CancelToken, FragmentCallback
from vlmkit.client.backends import LocalBackend
from vlmkit.client.default import _reset_default_client
from vlmkit.prediction import PredictionConfig, PredictionFragment, PredictionResult

KEY = "qwen2-vl-2b-instruct"
CONTEXT_LENGTH = 1024
LOAD = {"cpuThreads": 1}
"""How tests load models: one thread each, as the test machines have two cores shared with other work."""


@dataclass(frozen=True)
class Generated:
    home: Path
    """A ``VLMKIT_HOME``: ``models/qwen2-vl-2b-instruct`` holds the test VLM as if downloaded."""
    models_dir: Path
    model: Path
    mmproj: Path
    text_model: Path
    """The test model's text half alone: a model without vision."""


@pytest.fixture(scope="session")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Generated:
    from vlmkit.engine.store import write_manifest
    from vlmkit.engine.synthetic import TEST_TEXT, TEST_VISION, write_mmproj, write_test_text_model, write_text_model

    home = tmp_path_factory.mktemp("vlmkit-home")
    directory = home / "models" / KEY
    directory.mkdir(parents=True)
    # The engine's test VLM with a 1024-token context, so that a reply left to run (as in the issue's
    # examples, which set no token limit) ends at the context length in a fraction of a second.
    model, mmproj = directory / "vlmkit-test-vlm.gguf", directory / "mmproj-vlmkit-test-vlm.gguf"
    write_text_model(model, dataclasses.replace(TEST_TEXT, context_length=CONTEXT_LENGTH), seed=1)
    write_mmproj(mmproj, TEST_VISION, seed=2)
    write_manifest(directory, KEY, model.name, mmproj.name, repo=None)
    text_model = write_test_text_model(home / "text-only")
    return Generated(home, home / "models", model, mmproj, text_model)


@pytest.fixture()
def client(generated: Generated) -> Iterator[vk.Client]:
    """A client of the engine over the generated models (tests that need another one define their own)."""
    with vk.Client(models_dir=generated.models_dir) as client:
        yield client


@pytest.fixture()
def model(client: vk.Client) -> vk.LLM:
    """The test VLM, loaded as ``KEY`` with one thread."""
    return client.llm.model(KEY, config=LOAD)


@pytest.fixture()
def photo() -> Path:
    return photo_path("grace_hopper.jpg")


@pytest.fixture(autouse=True)
def _fresh_default_client(generated: Generated, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test starts without a default client, with VLMKIT_HOME pointing at the test models."""
    monkeypatch.setenv("VLMKIT_HOME", str(generated.home))
    _reset_default_client()
    yield
    _reset_default_client()


HELD_SEED = 7
"""The sampling seed of held predictions and of SHORT: their prompts' first token is not EOS with it."""


class HeldBackend(LocalBackend):
    """The local engine, but a prediction of ``held_key`` stops after its first fragment until released.

    While held, the prediction is really in progress (the engine is inside generation, the model's
    turn taken): tests use it to show, without relying on timing, what happens meanwhile. It goes on
    when ``release`` is set or the prediction is cancelled; if neither comes within ``limit`` seconds
    it fails, so a test that waits for something that never happens fails instead of hanging.
    """

    def __init__(self, held_key: str, *, models_dir: Path | None = None, limit: float = 20.0) -> None:
        super().__init__(models_dir=models_dir)
        self.held_key = held_key
        self.limit = limit
        self.holding = threading.Event()
        self.release = threading.Event()

    def respond(
        self,
        key: str,
        chat: Chat,
        config: PredictionConfig,
        *,
        on_fragment: FragmentCallback,
        on_first_token: Callable[[], None],
        cancel: CancelToken,
    ) -> PredictionResult:
        if key != self.held_key:
            return super().respond(
                key, chat, config, on_fragment=on_fragment, on_first_token=on_first_token, cancel=cancel
            )
        cancel.on_cancel(self.release.set)
        first = [True]

        def hold(fragment: PredictionFragment) -> None:
            on_fragment(fragment)
            if first[0]:
                first[0] = False
                self.holding.set()
                if not self.release.wait(self.limit):
                    raise AssertionError(f"the held prediction was not released within {self.limit} s")

        if config.seed is None:  # a random seed ends about one reply in a hundred at once with EOS, before any fragment
            config = dataclasses.replace(config, seed=HELD_SEED)
        return super().respond(key, chat, config, on_fragment=hold, on_first_token=on_first_token, cancel=cancel)
