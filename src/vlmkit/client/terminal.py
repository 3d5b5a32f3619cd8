"""What ``vlmkit describe`` and ``vlmkit chat`` do, over the SDK (the command line only parses arguments).

Both stream the answer as it comes. ``chat`` keeps one :class:`~vlmkit.chat.Chat` and one loaded
model for the whole conversation, so each follow-up turn reuses what the engine has already
evaluated (the images above all) and starts answering at once.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TextIO

from vlmkit import grounding
from vlmkit.chat import Chat
from vlmkit.client.sync import LLM, Client
from vlmkit.errors import GroundingError, VlmkitError
from vlmkit.images import FetchOptions, ImageHandle
from vlmkit.images.probe import image_summary
from vlmkit.prediction import PredictionConfig, PredictionResult, PredictionStats, StopReason
from vlmkit.stream import PredictionStream

DEFAULT_PROMPT = "Describe this image."
GROUNDING_PROMPT = (
    "Find the main objects in this image. Answer with JSON only: a list of "
    '{"bbox_2d": [x1, y1, x2, y2], "label": "..."}.'
)
QUIT = ("/quit", "/exit", "/bye")


@dataclass(frozen=True)
class Settings:
    model: str | None = None
    """A model key or .gguf path; ``None``: the first loaded or downloaded vision model."""
    max_tokens: int | None = None
    threads: int | None = None
    gpu: str | int | None = None
    """Where the model runs (``LoadOptions.gpu``); ``None``: the default, ``"auto"``."""
    stats: bool = False
    """Print each answer's stats (tokens, speed, reuse) to ``err``."""
    fetch: FetchOptions | None = None
    """How image URLs are fetched (``None``: the defaults)."""


def describe(
    client: Client, image: str | os.PathLike[str], prompt: str, settings: Settings, out: TextIO, err: TextIO
) -> PredictionResult:
    """Stream a description of ``image`` to ``out``."""
    model = _model(client, settings)
    chat = Chat()
    chat.add_user_message(prompt, images=[client.files.prepare_image(image, fetch=settings.fetch)])
    return _answer(model, chat, settings, out, err)


def draw_boxes(result: PredictionResult, path: str | os.PathLike[str], coords: str | None, err: TextIO) -> int:
    """Draw the boxes and points of ``result``'s answer on its image, saved to ``path``; how many."""
    try:
        convention = grounding.convention_for(coords or result.model_info or "")
    except GroundingError as exc:
        raise GroundingError(f"{exc} (on the command line: --coords NAME)") from None
    (sent,) = result.sent_images
    found = grounding.parse(result.content, sent, convention)
    grounding.draw(sent.image, found).save(path)
    err.write(f"{len(found)} boxes and points ({convention.name} coordinates) drawn on {os.fspath(path)}\n")
    return len(found)


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

    The images go with the first turn. An empty line is skipped; ``/quit`` or end of input (Ctrl-D)
    ends. A line that starts with ``/`` is a command (:data:`COMMANDS`), never sent to the model; what
    commands say goes to ``err``, so ``out`` holds the answers alone. Ctrl-C stops the answer being
    written and goes on with the conversation.
    """
    model = _model(client, settings)
    given = [client.files.prepare_image(image, fetch=settings.fetch) for image in images]
    conversation = Chat(system)
    attached = list(given)  # what goes with the next message
    results: list[PredictionResult] = []
    interactive = lines.isatty()
    if interactive:
        about = f" about {', '.join(h.name for h in given)}" if given else ""
        err.write(f"Chatting with {model.identifier}{about}. /help lists the commands.\n")
    while True:
        if interactive:
            err.write("> ")
            err.flush()
        line = lines.readline()
        if not line:
            if interactive:
                err.write("\n")  # after Ctrl-D, leave the shell's prompt a line of its own
            return results
        text = line.strip()
        if not text:
            continue
        if text.startswith("/") and not text.startswith("//"):
            command, _, argument = text.partition(" ")
            if command in QUIT:
                return results
            if command == "/help":
                err.write(help_text())
            elif command == "/image":
                handle = _attach(client, argument.strip(), err, settings.fetch)
                if handle is not None:
                    attached.append(handle)
            elif command == "/clear":
                conversation, attached = Chat(system), list(given)
                err.write("New chat: the conversation so far is forgotten; the model stays loaded.\n")
            else:
                err.write(f"unknown command {command!r}; the commands are:\n" + help_text())
            continue
        conversation.add_user_message(text[1:] if text.startswith("//") else text, images=attached)
        attached = []
        result = _answer(model, conversation, settings, out, err)
        conversation.add_assistant_response(result)
        results.append(result)


COMMANDS: dict[str, str] = {
    "/help": "list these commands",
    "/image PATH": "attach an image (a file path or a URL) to your next message",
    "/clear": "start a new chat (about the images it began with); the model stays loaded",
    "/quit": f"end the chat (so do {', '.join(QUIT[1:])} and Ctrl-D)",
}
"""The chat's commands and what each does."""


def help_text() -> str:
    """The commands, one a line, and how to send a message that starts with ``/``."""
    width = max(map(len, COMMANDS))
    rows = "".join(f"  {usage:<{width}}  {what}\n" for usage, what in COMMANDS.items())
    return rows + "  (a message that starts with / is typed with two: //etc/hosts sends /etc/hosts)\n"


def _attach(client: Client, argument: str, err: TextIO, fetch: FetchOptions | None) -> ImageHandle | None:
    """The image ``/image`` names, read and validated now; on a bad one, say why and attach nothing."""
    if not argument:
        err.write("nothing attached: name the image, /image PATH (a file path or a URL)\n")
        return None
    try:
        handle = client.files.prepare_image(_unquoted(argument), fetch=fetch)
    except VlmkitError as exc:
        err.write(f"nothing attached: {exc}\n")
        return None
    shown = image_summary(handle.mime_type, handle.width, handle.height, handle.size_bytes)
    err.write(f"attached {handle.name} ({shown}) to your next message\n")
    return handle


def _unquoted(argument: str) -> str:
    """A path as typed, or unquoted the way terminals paste one (``'my photo.jpg'``, ``my\\ photo.jpg``)."""
    if os.path.exists(argument):
        return argument
    try:
        words = shlex.split(argument)
    except ValueError:
        return argument
    return words[0] if len(words) == 1 else argument


def _model(client: Client, settings: Settings) -> LLM:
    config = {"cpu_threads": settings.threads, "gpu": settings.gpu}
    return client.llm.model(settings.model, config={k: v for k, v in config.items() if v is not None} or None)


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
