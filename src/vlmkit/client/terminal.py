"""What ``vlmkit describe`` and ``vlmkit chat`` do, over the SDK (the command line only parses arguments).

Both stream the answer as it comes. ``chat`` keeps one :class:`~vlmkit.chat.Chat` and one loaded
model for the whole conversation, so each follow-up turn reuses what the engine has already
evaluated (the images above all) and starts answering at once.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TextIO

from vlmkit.chat import Chat
from vlmkit.client.model import LLM
from vlmkit.client.stream import PredictionStream
from vlmkit.client.sync import Client
from vlmkit.prediction import PredictionConfig, PredictionResult, PredictionStats, StopReason

DEFAULT_PROMPT = "Describe this image."
QUIT = ("/quit", "/exit", "/bye")


@dataclass(frozen=True)
class Settings:
    model: str | None = None
    """A model key or .gguf path; ``None``: the first loaded or downloaded vision model."""
    max_tokens: int | None = None
    threads: int | None = None
    stats: bool = False
    """Print each answer's stats (tokens, speed, reuse) to ``err``."""


def describe(
    client: Client, image: str | os.PathLike[str], prompt: str, settings: Settings, out: TextIO, err: TextIO
) -> PredictionResult:
    """Stream a description of ``image`` to ``out``."""
    model = _model(client, settings)
    chat = Chat()
    chat.add_user_message(prompt, images=[client.files.prepare_image(image)])
    return _answer(model, chat, settings, out, err)


def chat(
    client: Client,
    images: Sequence[str | os.PathLike[str]],
    settings: Settings,
    lines: TextIO,
    out: TextIO,
    err: TextIO,
    *,
    system: str | None = None,
) -> list[PredictionResult]:
    """A conversation about ``images``: each line read from ``lines`` is a user turn, answered on ``out``.

    The images go with the first turn. An empty line is skipped; ``/quit`` or end of input ends.
    Ctrl-C stops the answer being written and goes on with the conversation.
    """
    model = _model(client, settings)
    handles = [client.files.prepare_image(image) for image in images]
    conversation = Chat(system)
    results: list[PredictionResult] = []
    interactive = lines.isatty()
    names = ", ".join(h.name for h in handles)
    if interactive:
        err.write(f"Chatting with {model.identifier} about {names}. /quit to end.\n")
    while True:
        if interactive:
            err.write("> ")
            err.flush()
        line = lines.readline()
        if not line or line.strip() in QUIT:
            return results
        text = line.strip()
        if not text:
            continue
        conversation.add_user_message(text, images=handles if not results else ())
        result = _answer(model, conversation, settings, out, err)
        conversation.add_assistant_response(result)
        results.append(result)


def _model(client: Client, settings: Settings) -> LLM:
    config = {"cpu_threads": settings.threads} if settings.threads else None
    return client.llm.model(settings.model, config=config)


def _answer(model: LLM, chat: Chat, settings: Settings, out: TextIO, err: TextIO) -> PredictionResult:
    stream = model.respond_stream(chat, config=PredictionConfig(max_tokens=settings.max_tokens))
    try:
        _write(stream, out)
    except KeyboardInterrupt:
        stream.cancel()
    result = stream.result()
    out.write("\n")
    out.flush()
    if result.stats.stop_reason is StopReason.USER_STOPPED:
        err.write("[stopped]\n")
    if settings.stats:
        err.write(format_stats(result.stats) + "\n")
    return result


def _write(stream: PredictionStream, out: TextIO) -> None:
    for fragment in stream:
        out.write(fragment.content)
        out.flush()


def format_stats(stats: PredictionStats) -> str:
    """One line: tokens, speed, time to first token, and how much of the prompt was reused."""
    parts = [f"{stats.predicted_tokens} tokens"]
    if stats.tokens_per_second:
        parts.append(f"{stats.tokens_per_second:.1f} tok/s")
    if stats.time_to_first_token_sec is not None:
        parts.append(f"first token {stats.time_to_first_token_sec:.2f} s")
    parts.append(f"prompt {stats.prompt_tokens} tokens ({stats.cached_prompt_tokens} reused)")
    if stats.images_encoded or stats.images_reused:
        parts.append(f"images {stats.images_encoded} encoded, {stats.images_reused} reused")
    parts.append(f"stop: {stats.stop_reason.value}")
    return "[" + ", ".join(parts) + "]"
