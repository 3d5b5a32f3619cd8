"""Turn a :class:`~vlmkit.chat.Chat` into the prompt text a model expects, via its own chat template.

Images become mtmd's media marker inside the text, where the template puts the message's text;
mtmd later replaces each marker with the model's image tokens (and its begin/end tokens). Some
templates iterate over typed content parts, others concatenate a string: which one a template is
gets probed once, and the messages are shaped to match. Tools, tool calls and tool results are
shown as :mod:`vlmkit.engine.tool_calls` says.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from vlmkit.chat import Chat, ChatMessage, ImagePart, ImageRef, TextPart, tool_results
from vlmkit.engine.tool_calls import call_text, template_calls, tools_note
from vlmkit.errors import ChatTemplateError, InvalidMessageError
from vlmkit.tools import ToolDefinition
from vlmkit.wire.openai_chat import tools_to_openai

# Used when a GGUF carries no chat template.
FALLBACK_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_PROBE = "vlmkit-probe-4f1c"


@dataclass(frozen=True)
class Prompt:
    text: str
    images: list[ImagePart]
    locations: list[str]
    """Where each image is in the chat (``messages[i].content[j]``), for the errors that name it."""


class ChatTemplate:
    """A compiled Jinja chat template (sandboxed), with the model's BOS/EOS strings."""

    def __init__(self, source: str | None, *, bos_token: str = "", eos_token: str = "") -> None:
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = _raise
        env.globals["strftime_now"] = lambda fmt: datetime.datetime.now().strftime(fmt)
        self.source = source or FALLBACK_TEMPLATE
        self._template = env.from_string(self.source)
        self.bos_token = bos_token
        self.eos_token = eos_token
        self.typed_content = self._probe_typed_content()
        self.knows_tools = "tools" in self.source
        """Whether the template shows tools itself (else they are shown in text: see tool_calls)."""

    def _render(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        *,
        add_generation_prompt: bool = True,
    ) -> str:
        return str(
            self._template.render(
                messages=messages,
                add_generation_prompt=add_generation_prompt,
                bos_token=self.bos_token,
                eos_token=self.eos_token,
                tools=tools,
            )
        )

    def _probe_typed_content(self) -> bool:
        try:
            out = self._render([{"role": "user", "content": [{"type": "text", "text": _PROBE}]}])
        except Exception:
            return False
        return _PROBE in out

    def render(
        self,
        chat: Chat | Sequence[ChatMessage],
        marker: str,
        tools: Sequence[ToolDefinition] = (),
        *,
        add_generation_prompt: bool = True,
    ) -> Prompt:
        """The prompt for ``chat``; without ``add_generation_prompt``, the chat as it stands (ending
        with the model's last reply), the start of what the next turn's prompt will be."""
        messages = chat.messages if isinstance(chat, Chat) else list(chat)
        answers = tool_results(messages)
        in_text = not self.knows_tools
        images: list[ImagePart] = []
        locations: list[str] = []
        shaped: list[dict[str, Any]] = []
        for i, msg in enumerate(messages):
            role: str = msg.role
            parts: list[dict[str, Any]] = []
            if role == "tool" and in_text:
                role = "user"
                parts.append({"type": "text", "text": "<tool_response>\n"})
            for j, part in enumerate(msg.flat_content):  # a document: its pages
                if isinstance(part, TextPart):
                    parts.append({"type": "text", "text": part.text})
                elif isinstance(part, ImagePart):
                    images.append(part)
                    locations.append(f"messages[{i}].content[{j}]")
                    parts.append({"type": "text", "text": marker})
                elif isinstance(part, ImageRef):  # the engine reads no files and fetches nothing
                    exc = InvalidMessageError(
                        f"the image {part.url[:80]!r} has not been read; read the chat's images first: "
                        "chat.with_images(vlmkit.images.resolve_images(chat.image_refs))"
                    )
                    if part.location:
                        exc.add_location(part.location)
                    raise exc
            if msg.role == "tool" and in_text:
                parts.append({"type": "text", "text": "\n</tool_response>"})
            if msg.tool_calls and in_text:
                parts.append({"type": "text", "text": call_text(msg)})
            entry: dict[str, Any] = {"role": role}
            if self.typed_content:
                entry["content"] = parts or [{"type": "text", "text": ""}]
            else:
                entry["content"] = "".join(p["text"] for p in parts)
            if msg.tool_calls and not in_text:
                entry["tool_calls"] = template_calls(msg)
            if msg.role == "tool" and not in_text:
                entry.update(tool_call_id=msg.tool_call_id, name=answers[i].name)
            shaped.append(entry)
        if tools and in_text:
            _add_system_note(shaped, tools_note(tools), self.typed_content)
        try:
            text = self._render(
                shaped,
                tools_to_openai(tools) if tools and not in_text else None,
                add_generation_prompt=add_generation_prompt,
            )
        except Exception as exc:  # a template's raise_exception, or a template bug
            raise ChatTemplateError(f"the model's chat template refused this chat: {exc}") from exc
        if text.count(marker) != len(images):
            raise ChatTemplateError(
                f"the model's chat template dropped images ({text.count(marker)} of {len(images)} kept); "
                "put images in user messages"
            )
        return Prompt(text=text, images=images, locations=locations)


def _add_system_note(shaped: list[dict[str, Any]], note: str, typed: bool) -> None:
    """``note`` at the end of the system prompt (a system message first, when there is none)."""
    if shaped and shaped[0]["role"] == "system":
        content = shaped[0]["content"]
        if typed:
            shaped[0]["content"] = [*content, {"type": "text", "text": "\n\n" + note}]
        else:
            shaped[0]["content"] = f"{content}\n\n{note}" if content else note
        return
    shaped.insert(0, {"role": "system", "content": [{"type": "text", "text": note}] if typed else note})


@lru_cache(maxsize=16)
def compile_template(source: str | None, bos_token: str, eos_token: str) -> ChatTemplate:
    return ChatTemplate(source, bos_token=bos_token, eos_token=eos_token)


def _raise(message: str) -> None:
    raise ValueError(message)
