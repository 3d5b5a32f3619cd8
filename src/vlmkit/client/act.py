"""``model.act(chat, tools=[...])``: the agent loop, in the spirit of LM Studio's ``.act()``.

Each round asks the model with the tools; the assistant turn is added to the chat; the tools it
called are run (at most ``max_parallel_tool_calls`` at once) and their results added, in the order
of the calls; the next round sees them. The loop ends when the model answers without calling a tool,
or after ``max_prediction_rounds``: the last round offers no tools (``tool_choice`` ``none``), so the
chat ends with an answer. ``on_message`` sees every message added (the assistant turns and the tool
results), as it is added.

A tool is a Python function (described by :func:`vlmkit.tools.tool_from_function`: its name,
docstring and typed parameters) or a :class:`FunctionTool` (a :class:`~vlmkit.tools.ToolDefinition`
and the function that implements it). A function returns text, anything JSON can write, an
:class:`~vlmkit.images.ImageHandle` or a PIL image (the result then carries the image, which the
model sees the way its provider takes images in tool results), or a list of those. What goes wrong
in a call is told to the model as the call's result, as LM Studio does, so it may try again: a tool
it does not have, arguments that do not parse or do not fit the schema, an exception the function
raised.

The loop is written once here: the sync twin runs tools on a thread pool, the async one (an
``async def`` tool is awaited, a plain one runs on a worker thread) on the event loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import json
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from vlmkit.chat import Chat, ChatMessage
from vlmkit.client.common import ConfigInput, prediction_config
from vlmkit.errors import BadRequestError, VlmkitError
from vlmkit.images import ImageHandle
from vlmkit.prediction import PredictionConfig, PredictionResult
from vlmkit.tools import ToolCall, ToolChoice, ToolDefinition, tool_from_function

__all__ = ["ActResult", "FunctionTool", "MessageCallback"]

MessageCallback = Callable[[ChatMessage], Any]

MAX_PARALLEL = 4
"""How many of one turn's calls run at once, unless ``act()`` is told otherwise."""


@dataclass(frozen=True)
class FunctionTool:
    """A tool described by hand: its definition, and the function that runs a call."""

    definition: ToolDefinition
    implementation: Callable[..., Any]


@dataclass
class ActResult:
    """What ``act()`` did: the chat with every turn added, the rounds predicted, and the last prediction."""

    chat: Chat
    rounds: int
    result: PredictionResult
    results: list[PredictionResult] = field(default_factory=list, repr=False)

    @property
    def content(self) -> str:
        """The last answer's text."""
        return self.result.content


def toolbox(tools: Iterable[Any]) -> dict[str, FunctionTool]:
    """The tools by name: functions described from their signatures, :class:`FunctionTool` s as they are."""
    out: dict[str, FunctionTool] = {}
    for i, tool in enumerate(tools):
        if isinstance(tool, FunctionTool):
            named = tool
        elif isinstance(tool, ToolDefinition):
            exc = BadRequestError(
                f"the tool {tool.name!r} is a definition without a function to run: pass "
                "vlmkit.FunctionTool(definition, implementation), or the Python function itself"
            )
            exc.add_location(f"tools[{i}]")
            raise exc
        elif callable(tool):
            named = FunctionTool(tool_from_function(tool), tool)
        else:
            exc = BadRequestError(f"a tool is a Python function or a FunctionTool, not {type(tool).__name__}")
            exc.add_location(f"tools[{i}]")
            raise exc
        if named.definition.name in out:
            exc = BadRequestError(f"two tools are named {named.definition.name!r}; give each its own name")
            exc.add_location(f"tools[{i}]")
            raise exc
        out[named.definition.name] = named
    if not out:
        raise BadRequestError("act() needs at least one tool; to answer without tools, call respond()")
    return out


def act_config(config: ConfigInput, tools: dict[str, FunctionTool]) -> PredictionConfig:
    """The settings of every round: the caller's, with the tools (a ``tool_choice`` is read with them)."""
    definitions = [t.definition for t in tools.values()]
    if isinstance(config, Mapping):
        config = {**config, "tools": definitions}
    return dataclasses.replace(prediction_config(config, None), tools=definitions)


def check_rounds(max_prediction_rounds: int | None, max_parallel_tool_calls: int) -> None:
    if max_prediction_rounds is not None and (not isinstance(max_prediction_rounds, int) or max_prediction_rounds < 1):
        raise BadRequestError(
            f"max_prediction_rounds must be a whole number of at least 1, not {max_prediction_rounds!r}"
        )
    if not isinstance(max_parallel_tool_calls, int) or max_parallel_tool_calls < 1:
        raise BadRequestError(
            f"max_parallel_tool_calls must be a whole number of at least 1, not {max_parallel_tool_calls!r}"
        )


# --- one call -------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """A call's result as the chat holds it: text and images."""

    text: str
    images: list[ImageHandle] = field(default_factory=list)


def _arguments(call: ToolCall, tools: dict[str, FunctionTool]) -> tuple[FunctionTool, dict[str, Any]] | Outcome:
    """The tool and its arguments, or the error the model is told (an unknown tool, bad arguments)."""
    tool = tools.get(call.name)
    if tool is None:
        known = ", ".join(repr(n) for n in tools)
        return Outcome(f"Error: there is no tool named {call.name!r}; the tools are {known}.")
    try:
        arguments = call.parsed_arguments()
    except VlmkitError as exc:
        return Outcome(f"Error: {exc.message}. Call {call.name!r} again with a JSON object of its arguments.")
    import jsonschema  # type: ignore[import-untyped]

    try:
        jsonschema.validate(arguments, dict(tool.definition.parameters))
    except jsonschema.ValidationError as exc:
        where = "".join(f"[{p!r}]" for p in exc.absolute_path) or " (the top level)"
        return Outcome(
            f"Error: the arguments of the call to {call.name!r} do not fit its parameters: at arguments{where}: "
            f"{exc.message}. Call it again with arguments that fit."
        )
    return tool, arguments


def _outcome(value: Any, to_image: Callable[[Any], ImageHandle]) -> Outcome:
    """A function's return value as text and images."""
    out = Outcome("")
    texts: list[str] = []
    for item in _listed(value):
        if isinstance(item, ImageHandle):
            out.images.append(item)
        elif _is_pil(item):
            out.images.append(to_image(item))
        elif isinstance(item, str):
            texts.append(item)
        elif item is not None:
            texts.append(json.dumps(item, default=str))
    out.text = "\n".join(texts)
    return out


def _failed(call: ToolCall, exc: BaseException) -> Outcome:
    return Outcome(f"Error: the tool {call.name!r} failed: {type(exc).__name__}: {exc}")


def run_call(call: ToolCall, tools: dict[str, FunctionTool], to_image: Callable[[Any], ImageHandle]) -> Outcome:
    found = _arguments(call, tools)
    if isinstance(found, Outcome):
        return found
    tool, arguments = found
    try:
        value = tool.implementation(**arguments)
        if inspect.isawaitable(value):
            value = asyncio.run(_awaited(value))
        return _outcome(value, to_image)
    except Exception as exc:
        return _failed(call, exc)


async def _awaited(value: Awaitable[Any]) -> Any:
    return await value


async def arun_call(
    call: ToolCall, tools: dict[str, FunctionTool], to_image: Callable[[Any], Awaitable[ImageHandle]]
) -> Outcome:
    found = _arguments(call, tools)
    if isinstance(found, Outcome):
        return found
    tool, arguments = found
    try:
        if inspect.iscoroutinefunction(tool.implementation):
            value = await tool.implementation(**arguments)
        else:
            value = await asyncio.to_thread(tool.implementation, **arguments)
        items = [await to_image(v) if _is_pil(v) else v for v in _listed(value)]  # images read off the loop
        return _outcome(items, _no_image)
    except Exception as exc:
        return _failed(call, exc)


def _listed(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _is_pil(value: Any) -> bool:
    return type(value).__module__.startswith("PIL.")


def _no_image(value: Any) -> ImageHandle:
    raise TypeError("the async loop reads PIL images before this")


# --- the loop -------------------------------------------------------------------------------------


@dataclass
class Loop:
    """What the sync and async loops share: the rounds so far, and the chat they grow."""

    chat: Chat
    tools: dict[str, FunctionTool]
    base: PredictionConfig
    max_rounds: int | None
    on_message: MessageCallback | None
    results: list[PredictionResult] = field(default_factory=list)

    @classmethod
    def start(
        cls,
        chat: Chat,
        tools: Iterable[Any],
        config: ConfigInput,
        on_message: MessageCallback | None,
        max_rounds: int | None,
        max_parallel: int,
    ) -> Loop:
        check_rounds(max_rounds, max_parallel)
        box = toolbox(tools)
        return cls(chat, box, act_config(config, box), max_rounds, on_message)

    @property
    def last(self) -> bool:
        return self.max_rounds is not None and len(self.results) + 1 >= self.max_rounds

    def config(self) -> PredictionConfig:
        """The next round's settings: the last round offers no tools, so that the chat ends with an answer."""
        return dataclasses.replace(self.base, tool_choice=ToolChoice("none")) if self.last else self.base

    def answered(self, result: PredictionResult) -> ActResult | None:
        """Add a round's answer; the loop's result when it is the last."""
        last = self.last
        self.results.append(result)
        self._added(self.chat.add_assistant_response(result))
        if not result.tool_calls or last:
            return ActResult(self.chat, len(self.results), result, self.results)
        return None

    def add(self, calls: Sequence[ToolCall], outcomes: Sequence[Outcome]) -> None:
        for call, outcome in zip(calls, outcomes, strict=True):
            self._added(self.chat.add_tool_result(call, outcome.text, images=outcome.images))

    def _added(self, message: ChatMessage) -> None:
        if self.on_message is not None:
            self.on_message(message)


def act(
    respond: Callable[[Chat, PredictionConfig], PredictionResult],
    chat: Chat,
    tools: Iterable[Any],
    config: ConfigInput,
    to_image: Callable[[Any], ImageHandle],
    *,
    on_message: MessageCallback | None,
    max_prediction_rounds: int | None,
    max_parallel_tool_calls: int,
) -> ActResult:
    """The loop, sync: ``respond`` predicts one round; the tools run on a pool of threads."""
    loop = Loop.start(chat, tools, config, on_message, max_prediction_rounds, max_parallel_tool_calls)
    with ThreadPoolExecutor(max_workers=max_parallel_tool_calls, thread_name_prefix="vlmkit-tool") as pool:
        while True:
            result = respond(chat, loop.config())
            done = loop.answered(result)
            if done is not None:
                return done
            loop.add(result.tool_calls, list(pool.map(lambda c: run_call(c, loop.tools, to_image), result.tool_calls)))


async def aact(
    respond: Callable[[Chat, PredictionConfig], Awaitable[PredictionResult]],
    chat: Chat,
    tools: Iterable[Any],
    config: ConfigInput,
    to_image: Callable[[Any], Awaitable[ImageHandle]],
    *,
    on_message: MessageCallback | None,
    max_prediction_rounds: int | None,
    max_parallel_tool_calls: int,
) -> ActResult:
    """The loop, async: the tools run as tasks, at most ``max_parallel_tool_calls`` at once."""
    loop = Loop.start(chat, tools, config, on_message, max_prediction_rounds, max_parallel_tool_calls)
    gate = asyncio.Semaphore(max_parallel_tool_calls)

    async def bounded(call: ToolCall) -> Outcome:
        async with gate:
            return await arun_call(call, loop.tools, to_image)

    while True:
        result = await respond(chat, loop.config())
        done = loop.answered(result)
        if done is not None:
            return done
        loop.add(result.tool_calls, await asyncio.gather(*(bounded(c) for c in result.tool_calls)))
