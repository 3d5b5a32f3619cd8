"""Tool calls on the embedded engine: the tools shown to the model, its calls read back.

The model's own chat template shows the tools where it knows how (a template that reads ``tools``,
as Qwen's, Llama's and Mistral's do, gets them in OpenAI's form, and an assistant turn's calls as
``tool_calls`` with their arguments as objects). A template that knows no tools gets them the way
the Hermes / Qwen convention writes them, in text: a system note listing the tools (``<tools>``),
each past call as ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` and each result as a
user turn holding ``<tool_response>...</tool_response>`` (its images stay where they are, in
the turn, so the model sees them).

When a call is required (``tool_choice`` ``required``, or a named tool) the reply is constrained by
a grammar (:mod:`vlmkit.engine.json_grammar`) to ``{"name": ..., "arguments": {...}}`` of a declared
tool, its arguments valid for that tool's schema; a template that writes calls inside
``<tool_call>`` gets that opening put in the prompt first, so the model continues its own format.
When the model may choose (``auto``), its reply is read for ``<tool_call>`` blocks naming declared
tools; what is outside them is the reply's text, and only the text before the first
``<tool_call>`` is streamed as fragments (:class:`HeldCalls`), so a call is never shown as text.
Either way the calls are the same :class:`~vlmkit.tools.ToolCall` values every backend returns.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import Any

from vlmkit.chat import ChatMessage
from vlmkit.errors import VlmkitError
from vlmkit.prediction import PredictionFragment
from vlmkit.tools import ToolCall, ToolChoice, ToolDefinition, call_id, parse_arguments
from vlmkit.wire.openai_chat import tools_to_openai

__all__ = [
    "CALL_OPEN",
    "HeldCalls",
    "call_schema",
    "forced",
    "parse_calls",
    "read_forced_call",
    "template_calls",
    "tools_note",
]

CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"
_BLOCK = re.compile(re.escape(CALL_OPEN) + r"\s*(.*?)\s*(?:" + re.escape(CALL_CLOSE) + r"|$)", re.DOTALL)


class HeldCalls:
    """Fragments passed on up to the first ``<tool_call>``, none after it (a piece that may be the start
    of one is held until the next tells)."""

    def __init__(self, emit: Callable[[PredictionFragment], None]) -> None:
        self._emit = emit
        self._held = ""
        self.hiding = False

    def __call__(self, fragment: PredictionFragment) -> None:
        if self.hiding:
            return
        text = self._held + fragment.content
        at = text.find(CALL_OPEN)
        if at >= 0:
            self.hiding, shown, self._held = True, text[:at], ""
        else:
            keep = next(
                (k for k in range(min(len(text), len(CALL_OPEN) - 1), 0, -1) if CALL_OPEN.startswith(text[-k:])), 0
            )
            shown, self._held = text[: len(text) - keep], text[len(text) - keep :]
        if shown:
            self._emit(PredictionFragment(shown, fragment.tokens_count))

    def flush(self) -> None:
        """The held text, when the reply ended without a call after it."""
        if self._held and not self.hiding:
            self._emit(PredictionFragment(self._held, 0))
        self._held = ""


def forced(choice: ToolChoice | str | None, tools: Sequence[ToolDefinition]) -> bool:
    """Whether the reply must be a call (then it is constrained by a grammar)."""
    return bool(tools) and isinstance(choice, ToolChoice) and (choice.mode == "required" or choice.name is not None)


def offered(choice: ToolChoice | str | None, tools: Sequence[ToolDefinition]) -> bool:
    """Whether the model may call a tool at all (``tool_choice`` ``none`` says it may not)."""
    return bool(tools) and not (isinstance(choice, ToolChoice) and choice.mode == "none")


def call_schema(tools: Sequence[ToolDefinition], name: str | None) -> dict[str, Any]:
    """The JSON Schema of one call of a declared tool (of ``name`` only, when given)."""
    branches = [
        {
            "type": "object",
            "properties": {"name": {"const": t.name}, "arguments": dict(t.parameters)},
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for t in tools
        if name is None or t.name == name
    ]
    return branches[0] if len(branches) == 1 else {"oneOf": branches}


def read_forced_call(text: str) -> ToolCall | None:
    """The call a grammar-constrained reply holds (None when the reply was cut before it was whole)."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        return None
    return ToolCall(call_id(), value["name"], json.dumps(value.get("arguments") or {}))


def parse_calls(text: str, tools: Sequence[ToolDefinition]) -> tuple[str, list[ToolCall]]:
    """The reply's text outside its ``<tool_call>`` blocks, and the calls of declared tools the blocks hold
    (a block that does not parse, or names no declared tool, stays in the text)."""
    names = {t.name for t in tools}
    calls: list[ToolCall] = []
    kept: list[str] = []
    last = 0
    for match in _BLOCK.finditer(text):
        try:
            value = json.loads(match.group(1))
            name = value.get("name") if isinstance(value, dict) else None
            arguments = value.get("arguments", {}) if isinstance(value, dict) else None
            if name not in names or not isinstance(arguments, dict):
                continue
        except ValueError:
            continue
        kept.append(text[last : match.start()])
        last = match.end()
        calls.append(ToolCall(call_id(), str(name), json.dumps(arguments)))
    kept.append(text[last:])
    return ("".join(kept).strip() if calls else text), calls


def template_calls(message: ChatMessage) -> list[dict[str, Any]]:
    """An assistant turn's calls as chat templates read them (arguments as objects)."""
    return [
        {
            "id": c.id,
            "type": "function",
            "function": {"name": c.name, "arguments": _arguments(c)},
        }
        for c in message.tool_calls
    ]


def _arguments(call: ToolCall) -> Any:
    try:
        return parse_arguments(call.arguments, call.name)
    except VlmkitError:  # arguments that are no JSON object: shown as the model wrote them
        return call.arguments


def tools_note(tools: Sequence[ToolDefinition]) -> str:
    """The system note that shows tools to a model whose template knows none (Hermes' wording)."""
    listed = "\n".join(json.dumps(t) for t in tools_to_openai(tools))
    return (
        "You may call one or more functions to assist with the user query.\n\n"
        "You are provided with function signatures within <tools></tools> XML tags:\n"
        f"<tools>\n{listed}\n</tools>\n\n"
        "For each function call, return a json object with function name and arguments within "
        f"{CALL_OPEN}{CALL_CLOSE} XML tags:\n{CALL_OPEN}\n"
        '{"name": <function-name>, "arguments": <args-json-object>}'
        f"\n{CALL_CLOSE}"
    )


def call_text(message: ChatMessage) -> str:
    """An assistant turn's calls written as text, for a template that knows no tools."""
    written = [
        {"name": c["function"]["name"], "arguments": c["function"]["arguments"]} for c in template_calls(message)
    ]
    return "".join(f"\n{CALL_OPEN}\n{json.dumps(call)}\n{CALL_CLOSE}" for call in written)
