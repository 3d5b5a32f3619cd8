"""OpenAI's Chat Completions protocol, read and written in one place, with no I/O.

Every face reads and writes OpenAI's chat format through this module: the SDK
(``Chat.from_history``, ``chat.to_openai``), ``completion()``, ``vlmkit serve`` and the SDK's
client of a vlmkit server. It translates, and does nothing else: no image is fetched, read or
decoded here (an image part becomes an :class:`~vlmkit.chat.ImageRef` that
:mod:`vlmkit.images.resolve` reads later, off the event loop in async code).

What is read, following OpenAI's API reference for ``POST /v1/chat/completions``:

- ``messages``: a non-empty list. ``system`` and ``developer`` messages (a developer message reads
  as system) hold text; ``user`` messages hold text, ``image_url``, ``video_url`` and ``file`` parts;
  ``assistant`` messages hold text and ``refusal`` parts (a refusal reads as text) or no content
  at all. An image anywhere but in a user message is refused, as OpenAI refuses it. The Responses
  API's ``input_text`` and ``input_image`` parts are read too.
- An ``image_url`` is a URL string or ``{"url", "detail", "format"}``: http(s), ``data:``, bare
  base64, a local path or ``gs://``/``s3://`` (which of these a face reads is its resolver's
  choice: a server reads no local paths). ``{"file_id": ...}`` in its place, a ``file`` part, or an
  ``input_image`` with ``file_id`` names an image uploaded to a vlmkit server.
- A ``video_url`` (vLLM's part for a video: ``{"type": "video_url", "video_url": {"url": ...}}``,
  the same forms as an ``image_url``) is read as frames; an animated GIF or WebP sent as an
  ``image_url`` stays one image (its first frame): send it as a ``video_url`` to have its frames.
- Tools: ``tools`` (``{"type": "function", "function": {"name", "description", "parameters",
  "strict"}}``), ``tool_choice`` (``none``/``auto``/``required`` or ``{"type": "function",
  "function": {"name"}}``) and ``parallel_tool_calls`` become the settings'
  :class:`~vlmkit.tools.ToolDefinition` s and :class:`~vlmkit.tools.ToolChoice`; an assistant's
  ``tool_calls`` become :class:`~vlmkit.tools.ToolCall` s (their ``arguments`` must be a JSON
  object's text); a ``tool`` message is a tool's result, and may hold images (OpenAI's own API takes
  text only there: where a provider takes no images in a tool result, its module moves them to a
  user message). A tool result must answer a call made earlier in the chat. Each of these wrong is an
  :class:`~vlmkit.errors.InvalidToolError` (400) naming the part (``tools[0].function.parameters``,
  ``messages[3].tool_call_id``). The old ``functions`` / ``function_call`` / ``function`` role are
  refused, pointing at ``tools``.
- Settings become a :class:`~vlmkit.prediction.PredictionConfig`, whose validator is the only one
  (``max_tokens`` / ``max_completion_tokens`` at least 1, as OpenAI requires; the latter wins
  when both are given). ``response_format`` is one of OpenAI's three forms (``text`` means none).
  ``n`` is the number of choices asked for (at least 1). vlmkit's own settings (``top_k``, ``min_p``,
  ``repeat_penalty``, ``detail``, a cap on image tokens, and the token bounds ``image_max_tokens`` /
  ``image_min_tokens``) are read where a face allows them.

Errors are :class:`~vlmkit.errors.VlmkitError` with a ``location``: a request field's name for a
bad field or setting (:class:`~vlmkit.errors.InvalidSettingError`, which a server answers as 422),
``messages[i]...`` for a bad message or part (:class:`~vlmkit.errors.InvalidMessageError`, 400),
with the location at the front of the message. Value types are named in JSON's words.

Answers: ``finish_reason`` and :class:`~vlmkit.prediction.StopReason` map through one table, both
ways; ``chat.completion`` and ``chat.completion.chunk`` bodies are written from a
:class:`~vlmkit.prediction.PredictionResult`, with vlmkit's extension (``stats`` and
``model_info``, which OpenAI's clients ignore) written and read side by side.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from vlmkit._types import DETAIL_NAMES, Detail, type_name
from vlmkit.chat import Chat, ChatMessage, ImagePart, ImageRef, Part, Role, TextPart, tool_results
from vlmkit.errors import BadRequestError, InvalidMessageError, InvalidSettingError, VlmkitError
from vlmkit.prediction import (
    ModelInfo,
    PredictionConfig,
    PredictionResult,
    PredictionStats,
    StopReason,
    json_schema_of,
    setting_error,
)
from vlmkit.tools import ToolCall, ToolChoice, ToolDefinition, call_id, parse_arguments, tool_error

if TYPE_CHECKING:
    from vlmkit.images import ImagePolicy

__all__ = [
    "FINISH_REASONS",
    "OPENAI_SETTINGS",
    "STOP_REASONS",
    "VLMKIT_SETTINGS",
    "ChatRequest",
    "ChunkWriter",
    "FinishReason",
    "ToolCallAssembler",
    "chat_from_history",
    "completion_body",
    "completion_id",
    "config_from_openai",
    "config_to_openai",
    "extension_of",
    "finish_reason_of",
    "messages_from_chat",
    "read_extension",
    "read_request",
    "stats_from_openai",
    "stop_reason_of",
    "to_chat",
    "tool_calls_from_openai",
    "tool_calls_to_openai",
    "tools_from_openai",
    "tools_to_openai",
    "usage_of",
]

# --- messages -> Chat ----------------------------------------------------------------------------

_ROLES: dict[str, Role] = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
    "tool": "tool",
}
_IMAGE_ROLES = ("user", "tool")
_TEXT_PARTS = ("text", "input_text")
_IMAGE_PARTS = ("image_url", "input_image", "file", "video_url")


def to_chat(messages: Any, *, at: str = "messages") -> Chat:
    """A :class:`Chat` from OpenAI-format messages (a Chat is returned as it is).

    Every image is an :class:`ImageRef` carrying its URL, detail, declared format and location
    (``at[i].content[j]``: the Responses API's messages are its ``input``).
    """
    if isinstance(messages, Chat):
        return messages
    _check_messages(messages)
    chat = Chat()
    for i, raw in enumerate(messages):
        chat.messages.append(_message(raw, f"{at}[{i}]"))
    tool_results(chat.messages)  # every tool result answers a call made before it
    return chat


def chat_from_history(history: Any) -> Chat:
    """A chat from a user prompt string, a Chat (copied), ``{"messages": [...]}`` or a message list."""
    if isinstance(history, Chat):
        return history.copy()
    if isinstance(history, str):
        chat = Chat()
        chat.add_user_message(history)
        return chat
    if isinstance(history, Mapping):
        if "messages" not in history:
            raise InvalidMessageError("a history dict needs a 'messages' list")
        return to_chat(history["messages"])
    if isinstance(history, (list, tuple)):
        return to_chat(history)
    raise InvalidMessageError(
        f"cannot make a chat from a {type(history).__name__}; pass a string, a Chat, "
        "a {'messages': [...]} dict or a list of OpenAI-style messages"
    )


def _check_messages(messages: Any) -> None:
    if not isinstance(messages, (list, tuple)):
        raise setting_error(
            "messages",
            f"messages must be a list of {{'role': ..., 'content': ...}} objects, not {type_name(messages)}",
        )
    if not messages:
        raise setting_error("messages", "messages is empty: send at least one message")


def _bad(message: str, where: str) -> InvalidMessageError:
    exc = InvalidMessageError(message)
    exc.add_location(where)
    return exc


def _message(raw: Any, where: str) -> ChatMessage:
    if not isinstance(raw, Mapping):
        raise _bad(f"a message must be an object, not {type_name(raw)}", where)
    name = raw.get("role")
    if name == "function":
        raise _bad(
            "role 'function' is OpenAI's old form of a tool result: send {'role': 'tool', 'tool_call_id': ..., "
            "'content': ...} instead",
            f"{where}.role",
        )
    role = _ROLES.get(name) if isinstance(name, str) else None
    if role is None:
        raise _bad(f"role must be 'system', 'developer', 'user', 'assistant' or 'tool', not {name!r}", f"{where}.role")
    if role == "assistant" and raw.get("function_call"):
        raise tool_error(
            "function_call is OpenAI's old form of a tool call: send tool_calls instead", f"{where}.function_call"
        )
    message = ChatMessage(role, _content(raw, role, where))
    if role == "assistant" and raw.get("tool_calls") is not None:
        message.tool_calls = tool_calls_from_openai(raw["tool_calls"], f"{where}.tool_calls")
    if role == "tool":
        answers = raw.get("tool_call_id")
        if not isinstance(answers, str) or not answers:
            raise tool_error(
                f"a tool message needs 'tool_call_id', the id of the call it answers, not {type_name(answers)}",
                f"{where}.tool_call_id",
            )
        message.tool_call_id = answers
    return message


def _content(raw: Mapping[str, Any], role: Role, where: str) -> list[Part]:
    content = raw.get("content")
    if content is None:
        if role == "assistant":  # OpenAI's assistant messages may have no content
            return []
        raise _bad("the message has no 'content'", f"{where}.content")
    if isinstance(content, str):
        return [TextPart(content)] if content else []
    if not isinstance(content, list):
        raise _bad(f"content must be a string or a list of parts, not {type_name(content)}", f"{where}.content")
    return [_part(part, role, f"{where}.content[{j}]") for j, part in enumerate(content)]


def _part(part: Any, role: str, where: str) -> Part:
    if not isinstance(part, Mapping):
        raise _bad(f"a content part must be an object, not {type_name(part)}", where)
    kind = part.get("type")
    if kind in _TEXT_PARTS or (kind == "refusal" and role == "assistant"):
        key = "refusal" if kind == "refusal" else "text"
        text = part.get(key)
        if not isinstance(text, str):
            raise _bad(f"a {key} part needs a string '{key}', not {type_name(text)}", where)
        return TextPart(text)
    if kind == "refusal":
        raise _bad(f"a refusal part can only be in an assistant message, not in a {role} message", where)
    if kind not in _IMAGE_PARTS:
        known = "'text', 'image_url', 'video_url' and 'file'"
        raise _bad(f"unknown content part type {kind!r}; vlmkit reads {known} parts", where)
    if role not in _IMAGE_ROLES:
        article = "an" if role[:1] in "aeiou" else "a"
        raise _bad(f"images can only be sent in user and tool messages, not in {article} {role} message", where)
    try:
        return _image_ref(part, kind, where)
    except VlmkitError as exc:
        exc.add_location(where)
        raise


def _image_ref(part: Mapping[str, Any], kind: str, where: str) -> ImageRef:
    if kind == "file":  # an uploaded file by id, or a PDF (or image) inline as file_data
        ref = part.get("file")
        file_id = ref.get("file_id") if isinstance(ref, Mapping) else None
        data = ref.get("file_data") if isinstance(ref, Mapping) else None
        if isinstance(data, str) and data:
            return ImageRef(data, None, None, where)
        if not isinstance(file_id, str) or not file_id:
            raise InvalidMessageError(
                "a file part needs {'file': {'file_id': 'file-...'}} naming an uploaded image, or "
                "{'file': {'file_data': 'data:application/pdf;base64,...'}}"
            )
        return ImageRef(file_id, None, None, where, file_id=True)
    named = "video_url" if kind == "video_url" else "image_url"
    a_part = "a video_url" if kind == "video_url" else "an image_url"
    value = part.get(named)
    if kind == "input_image":  # the Responses API's form: the URL or file id and the detail beside it
        if value is None and isinstance(part.get("file_id"), str):
            value = {"file_id": part["file_id"], "detail": part.get("detail")}
        elif isinstance(value, str):
            value = {"url": value, "detail": part.get("detail")}
    video = kind == "video_url"
    if isinstance(value, str):
        if not value:
            raise InvalidMessageError(f"{a_part} part needs a non-empty string 'url'")
        return ImageRef(value, None, None, where, video=video)
    if not isinstance(value, Mapping):
        raise InvalidMessageError(f"{a_part} part needs '{named}': a URL string or {{'url': ...}}")
    url, file_id = value.get("url"), False
    if url is None and isinstance(value.get("file_id"), str) and value["file_id"]:
        url, file_id = value["file_id"], True
    elif not isinstance(url, str) or not url:
        raise InvalidMessageError(f"{a_part} part needs a non-empty string 'url'")
    declared = value.get("format")
    if declared is not None and not isinstance(declared, str):
        raise InvalidMessageError("format must be a MIME type string such as 'image/png'")
    return ImageRef(url, _detail(value.get("detail")), declared, where, file_id=file_id, video=video)


def _detail(value: Any) -> Detail | None:
    if value is None:
        return None
    for name in DETAIL_NAMES:
        if value == name:
            return name
    raise InvalidMessageError(f"detail must be 'low', 'high' or 'auto', not {value!r}")


# --- Chat -> messages ----------------------------------------------------------------------------

ImageWriter = Callable[[ImagePart], dict[str, Any]]
"""How an image is named in written messages: ``{"url": ...}`` or ``{"file_id": ...}`` (detail is added)."""


def messages_from_chat(
    chat: Chat, policy: ImagePolicy | None = None, *, image: ImageWriter | None = None
) -> list[dict[str, Any]]:
    """OpenAI-format messages. An image is a data URL (rendered for ``policy`` when one is given), or
    what ``image`` writes for it; a reference is written as it was read."""
    out: list[dict[str, Any]] = []
    for m in chat.messages:
        written: dict[str, Any] = {"role": m.role}
        if m.tool_call_id is not None:
            written["tool_call_id"] = m.tool_call_id
        content = m.flat_content  # a document as its pages
        if all(isinstance(p, TextPart) for p in content):
            written["content"] = m.text if m.text or not m.tool_calls else None
        else:
            parts: list[dict[str, Any]] = []
            for p in content:
                if isinstance(p, TextPart):
                    parts.append({"type": "text", "text": p.text})
                elif isinstance(p, ImagePart):
                    parts.append({"type": "image_url", "image_url": _image_body(p, policy, image)})
                else:
                    ref: dict[str, Any] = {"file_id" if p.file_id else "url": p.url}
                    named = "video_url" if p.video else "image_url"
                    parts.append({"type": named, named: _described(ref, p.detail, p.format)})
            written["content"] = parts
        if m.tool_calls:
            written["tool_calls"] = tool_calls_to_openai(m.tool_calls)
        out.append(written)
    return out


def _image_body(part: ImagePart, policy: ImagePolicy | None, image: ImageWriter | None) -> dict[str, Any]:
    if image is not None:
        return _described(image(part), part.detail, None)
    handle = part.image
    url = (handle.source or "") if handle.is_reference else handle.render(policy).data_url
    return _described({"url": url}, part.detail, handle.mime_type)


def _described(ref: dict[str, Any], detail: Detail | None, declared: str | None) -> dict[str, Any]:
    if detail:
        ref["detail"] = detail
    if declared:
        ref["format"] = declared
    return ref


# --- settings <-> PredictionConfig ---------------------------------------------------------------

OPENAI_SETTINGS = frozenset(
    {
        "temperature",
        "top_p",
        "max_tokens",
        "max_completion_tokens",
        "stop",
        "seed",
        "presence_penalty",
        "frequency_penalty",
        "response_format",
        "n",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "functions",
        "function_call",
    }
)
"""The request fields :func:`config_from_openai` reads (``functions`` and ``function_call`` to refuse them)."""

VLMKIT_SETTINGS = frozenset({"top_k", "min_p", "repeat_penalty", "detail", "image_max_tokens", "image_min_tokens"})
"""vlmkit's own settings for local models, read beside OpenAI's where a face allows them."""

_PLAIN = ("temperature", "top_p", "seed", "presence_penalty", "frequency_penalty")
_RESPONSE_FORMATS = ("text", "json_object", "json_schema")


def config_from_openai(settings: Mapping[str, Any], *, extensions: bool = True) -> PredictionConfig:
    """The prediction settings of an OpenAI request (a body, or ``completion()``'s keywords).

    Other fields are not looked at: which of them are errors is the face's choice (a server ignores
    them, as OpenAI's clients send many; ``completion()`` refuses them).
    """
    for name in ("functions", "function_call"):
        if settings.get(name):
            exc = BadRequestError(
                f"{name!r} is OpenAI's old form of tool calling: send 'tools' (and 'tool_choice') instead"
            )
            exc.location = name
            raise exc
    tools = tools_from_openai(settings.get("tools"))
    tool_choice = _tool_choice(settings.get("tool_choice"))
    tokens = "max_completion_tokens" if settings.get("max_completion_tokens") is not None else "max_tokens"
    values: dict[str, Any] = {name: settings.get(name) for name in _PLAIN}
    values["max_tokens"] = settings.get(tokens)
    values["stop"] = settings.get("stop")
    values["response_format"] = _response_format(settings.get("response_format"))
    values.update(tools=tools, tool_choice=tool_choice, parallel_tool_calls=settings.get("parallel_tool_calls"))
    values["n"] = settings.get("n") if settings.get("n") != 1 else None  # one choice is the default
    if extensions:
        values.update({name: settings.get(name) for name in VLMKIT_SETTINGS})
    try:
        return PredictionConfig(**{k: v for k, v in values.items() if v is not None})
    except InvalidSettingError as exc:
        if exc.location == "max_tokens" and tokens != "max_tokens":
            raise setting_error(tokens, exc.message.replace("max_tokens", tokens, 1)) from None
        raise


def tools_from_openai(tools: Any) -> tuple[ToolDefinition, ...]:
    """OpenAI's ``tools`` as :class:`ToolDefinition` s; a bad one is an :class:`InvalidToolError` naming it."""
    if tools is None:
        return ()
    if not isinstance(tools, (list, tuple)):
        raise tool_error(f"tools must be an array of tools, not {type_name(tools)}", "tools")
    out = []
    for i, raw in enumerate(tools):
        where = f"tools[{i}]"
        if isinstance(raw, ToolDefinition):
            out.append(raw)
            continue
        if not isinstance(raw, Mapping) or raw.get("type") != "function":
            shown = f"type {raw.get('type')!r}" if isinstance(raw, Mapping) else type_name(raw)
            raise tool_error(f"a tool must be {{'type': 'function', 'function': {{...}}}}, not {shown}", where)
        fn = raw.get("function")
        if not isinstance(fn, Mapping):
            raise tool_error(f"a tool's 'function' must be an object, not {type_name(fn)}", f"{where}.function")
        strict = fn.get("strict")
        try:
            out.append(
                ToolDefinition(
                    fn.get("name"),  # type: ignore[arg-type]  # ToolDefinition checks it
                    fn.get("parameters", {"type": "object", "properties": {}}),
                    fn.get("description"),
                    strict if isinstance(strict, bool) else None,
                )
            )
        except VlmkitError as exc:
            exc.add_location(where)
            raise
    return tuple(out)


def tools_to_openai(tools: Sequence[ToolDefinition]) -> list[dict[str, Any]]:
    out = []
    for tool in tools:
        fn: dict[str, Any] = {"name": tool.name, "parameters": dict(tool.parameters)}
        if tool.description is not None:
            fn["description"] = tool.description
        if tool.strict is not None:
            fn["strict"] = tool.strict
        out.append({"type": "function", "function": fn})
    return out


def _tool_choice(choice: Any) -> ToolChoice | None:
    if choice is None or isinstance(choice, ToolChoice):
        return choice
    if isinstance(choice, str):
        if choice in ("none", "auto", "required"):
            return ToolChoice(choice)  # type: ignore[arg-type]  # checked on the line above
    elif isinstance(choice, Mapping) and choice.get("type") == "function":
        name = choice.get("function", {}).get("name") if isinstance(choice.get("function"), Mapping) else None
        if isinstance(name, str) and name:
            return ToolChoice.forced(name)
    raise tool_error(
        "tool_choice must be 'none', 'auto', 'required' or {'type': 'function', 'function': {'name': ...}}, "
        f"not {choice!r}"[:300],
        "tool_choice",
    )


def tool_choice_to_openai(choice: ToolChoice | str | None) -> Any:
    """OpenAI's form of a tool choice: its mode, or the named tool."""
    if choice is None or isinstance(choice, str):
        return choice
    if choice.name is not None:
        return {"type": "function", "function": {"name": choice.name}}
    return choice.mode


def tool_calls_from_openai(raw: Any, where: str, *, check: bool = True) -> list[ToolCall]:
    """An assistant message's ``tool_calls``; arguments that are not a JSON object's text are refused
    (unless ``check`` is false: an answer's calls are kept as the model wrote them, for the caller to see)."""
    if not isinstance(raw, (list, tuple)):
        raise tool_error(f"tool_calls must be an array, not {type_name(raw)}", where)
    calls = []
    for j, call in enumerate(raw):
        at = f"{where}[{j}]"
        if not isinstance(call, Mapping):
            raise tool_error(f"a tool call must be an object, not {type_name(call)}", at)
        fn = call.get("function")
        if not isinstance(fn, Mapping):
            raise tool_error(f"a tool call needs a 'function' object, not {type_name(fn)}", f"{at}.function")
        name, arguments, ident = fn.get("name"), fn.get("arguments", "{}"), call.get("id")
        if not isinstance(ident, str) or not ident:
            raise tool_error(f"a tool call needs a string 'id', not {type_name(ident)}", f"{at}.id")
        if not isinstance(name, str) or not name:
            raise tool_error(f"a tool call needs the tool's 'name', not {type_name(name)}", f"{at}.function.name")
        if isinstance(arguments, Mapping):  # some servers send the object itself
            arguments = json.dumps(arguments)
        if not isinstance(arguments, str):
            raise tool_error(
                f"a tool call's 'arguments' must be a JSON object's text, not {type_name(arguments)}",
                f"{at}.function.arguments",
            )
        if check:
            parse_arguments(arguments, name, f"{at}.function.arguments")
        calls.append(ToolCall(ident, name, arguments, signature_of(call)))
    return calls


def signature_of(call: Mapping[str, Any]) -> str | None:
    """A call's provider signature where OpenAI's form carries one (``extra_content.google.thought_signature``,
    as Gemini's OpenAI-compatible API writes it)."""
    extra = call.get("extra_content")
    google = extra.get("google") if isinstance(extra, Mapping) else None
    signature = google.get("thought_signature") if isinstance(google, Mapping) else None
    return signature if isinstance(signature, str) else None


def signature_to_openai(signature: str | None) -> dict[str, Any]:
    """The fields that carry a call's provider signature in OpenAI's form (none when it has none)."""
    return {"extra_content": {"google": {"thought_signature": signature}}} if signature else {}


def tool_calls_to_openai(calls: Sequence[ToolCall], *, signatures: bool = True) -> list[dict[str, Any]]:
    """Calls in OpenAI's form; ``signatures=False`` leaves out the providers' signatures (for a server
    that would refuse the unknown ``extra_content``)."""
    return [
        {
            "id": c.id,
            "type": "function",
            "function": {"name": c.name, "arguments": c.arguments},
            **signature_to_openai(c.signature if signatures else None),
        }
        for c in calls
    ]


class ToolCallAssembler:
    """Tool calls put together from a stream's ``delta.tool_calls`` pieces: the first piece of a call
    (by ``index``) has its id and name, later ones add to its ``arguments`` text."""

    def __init__(self) -> None:
        self._calls: dict[int, dict[str, str]] = {}

    def feed(self, pieces: Any) -> None:
        for piece in pieces or ():
            if not isinstance(piece, Mapping):
                continue
            index = piece.get("index")
            index = index if isinstance(index, int) else len(self._calls)
            call = self._calls.setdefault(index, {"id": "", "name": "", "arguments": "", "signature": ""})
            fn: Mapping[str, Any] = piece["function"] if isinstance(piece.get("function"), Mapping) else {}
            if piece.get("id"):
                call["id"] = str(piece["id"])
            if fn.get("name"):
                call["name"] = str(fn["name"])
            if isinstance(fn.get("arguments"), str):
                call["arguments"] += fn["arguments"]
            call["signature"] = signature_of(piece) or call["signature"]

    def calls(self) -> list[ToolCall]:
        """The calls so far, in index order (a call whose stream gave no id gets one)."""
        out = []
        for index in sorted(self._calls):
            call = self._calls[index]
            out.append(
                ToolCall(call["id"] or call_id(), call["name"], call["arguments"] or "{}", call["signature"] or None)
            )
        return out


def _response_format(fmt: Any) -> Any:
    if fmt is None:
        return None
    if not isinstance(fmt, Mapping) or fmt.get("type") not in _RESPONSE_FORMATS:
        shown = type_name(fmt) if not isinstance(fmt, Mapping) else f"type {fmt.get('type')!r}"
        raise setting_error(
            "response_format",
            f"response_format must be {{'type': 'text' | 'json_object' | 'json_schema', ...}}, not {shown}",
        )
    return fmt


def config_to_openai(config: PredictionConfig, *, extensions: bool = False) -> dict[str, Any]:
    """The settings of ``config`` as an OpenAI request's fields (those set only).

    ``response_format`` is written in OpenAI's form (a schema or pydantic class as a strict
    ``json_schema``). With ``extensions``, vlmkit's own settings are added (a vlmkit server reads
    them), and ``detail`` when it is a token cap: a detail level belongs on each image instead.
    """
    out: dict[str, Any] = {
        "temperature": config.temperature,
        "top_p": config.top_p,
        "max_tokens": config.max_tokens,
        "stop": list(config.stop) or None,
        "seed": config.seed,
        "presence_penalty": config.presence_penalty,
        "frequency_penalty": config.frequency_penalty,
        "response_format": response_format_to_openai(config.response_format),
        "tools": tools_to_openai(config.tools) or None,
        "tool_choice": tool_choice_to_openai(config.tool_choice),
        "parallel_tool_calls": config.parallel_tool_calls,
        "n": config.n if config.n != 1 else None,
    }
    if extensions:
        out.update(top_k=config.top_k, min_p=config.min_p, repeat_penalty=config.repeat_penalty)
        out.update(image_max_tokens=config.image_max_tokens, image_min_tokens=config.image_min_tokens)
        if isinstance(config.detail, int):
            out["detail"] = config.detail
    return {k: v for k, v in out.items() if v is not None}


def response_format_to_openai(response_format: Any) -> dict[str, Any] | None:
    """OpenAI's form of a ``response_format``: its own forms as they are, anything else as a strict schema."""
    if response_format is None:
        return None
    if isinstance(response_format, Mapping) and response_format.get("type") in _RESPONSE_FORMATS:
        return dict(response_format)
    schema = json_schema_of(response_format)
    if schema is None:
        return None
    name = getattr(response_format, "__name__", None) or schema.get("title") or "response"
    return {"type": "json_schema", "json_schema": {"name": str(name), "schema": schema, "strict": True}}


# --- a server's request body ---------------------------------------------------------------------


@dataclass(frozen=True)
class ChatRequest:
    """A ``POST /v1/chat/completions`` body, checked. ``messages`` are read by :func:`to_chat` when the
    model is known to exist (so an unknown model is answered before the messages are looked at)."""

    model: str
    messages: list[Any]
    config: PredictionConfig = field(default_factory=PredictionConfig)
    stream: bool = False
    include_usage: bool = False
    user: str | None = None


def read_request(body: Mapping[str, Any], *, extensions: bool = True) -> ChatRequest:
    """The fields of a chat request body; a bad one is an :class:`InvalidSettingError` naming it."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise setting_error("model", "model is required: the name of a model from GET /v1/models")
    messages: list[Any] = body.get("messages")  # type: ignore[assignment]  # checked on the next line
    _check_messages(messages)
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise setting_error("stream", f"stream must be true or false, not {type_name(stream)}")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, Mapping):
        raise setting_error("stream_options", f"stream_options must be an object, not {type_name(options)}")
    user = body.get("user")
    return ChatRequest(
        model,
        list(messages),
        config_from_openai(body, extensions=extensions),
        bool(stream),
        bool(options and options.get("include_usage")),
        user if isinstance(user, str) else None,
    )


# --- finish reasons ------------------------------------------------------------------------------

FinishReason = Literal["stop", "length", "content_filter", "tool_calls"]

_STOPS: tuple[tuple[StopReason, FinishReason], ...] = (
    (StopReason.EOS_FOUND, "stop"),  # the first pair of a finish reason is what it reads back as
    (StopReason.STOP_STRING_FOUND, "stop"),
    (StopReason.USER_STOPPED, "stop"),
    (StopReason.FAILED, "stop"),
    (StopReason.MAX_PREDICTED_TOKENS_REACHED, "length"),
    (StopReason.CONTEXT_LENGTH_REACHED, "length"),
    (StopReason.CONTENT_FILTERED, "content_filter"),
    (StopReason.TOOL_CALLS, "tool_calls"),
)

FINISH_REASONS: dict[StopReason, FinishReason] = dict(_STOPS)
"""Each stop reason's ``finish_reason``."""

STOP_REASONS: dict[str, StopReason] = {
    **{finish: stop for stop, finish in reversed(_STOPS)},
    "function_call": StopReason.TOOL_CALLS,  # OpenAI's older name
}
"""Each ``finish_reason``'s stop reason (``stop`` reads as ``EOS_FOUND``, ``length`` as the token limit)."""


def finish_reason_of(stop: StopReason) -> FinishReason:
    return FINISH_REASONS.get(stop, "stop")


def stop_reason_of(finish: str | None) -> StopReason:
    """The stop reason of a ``finish_reason``; none, or one not known, is ``FAILED``."""
    return STOP_REASONS.get(finish or "", StopReason.FAILED)


# --- answers: PredictionResult -> chat.completion(.chunk) ----------------------------------------


def completion_id() -> str:
    return f"chatcmpl-{secrets.token_hex(12)}"


def usage_of(stats: PredictionStats) -> dict[str, Any]:
    return {
        "prompt_tokens": stats.prompt_tokens,
        "completion_tokens": stats.predicted_tokens,
        "total_tokens": stats.prompt_tokens + stats.predicted_tokens,
        "prompt_tokens_details": {"cached_tokens": stats.cached_prompt_tokens},
    }


def extension_of(result: PredictionResult) -> dict[str, Any]:
    """vlmkit's fields beside OpenAI's in an answer: ``stats`` and ``model_info`` (read by :func:`read_extension`)."""
    return {
        "stats": result.stats.to_dict(),
        "model_info": result.model_info.to_dict() if result.model_info is not None else None,
    }


def read_extension(body: Mapping[str, Any]) -> tuple[PredictionStats | None, ModelInfo | None]:
    """The ``stats`` and ``model_info`` that :func:`extension_of` wrote (None where a body has none)."""
    stats, info = body.get("stats"), body.get("model_info")
    return (
        PredictionStats.from_dict(stats) if isinstance(stats, Mapping) else None,
        ModelInfo.from_dict(info) if isinstance(info, Mapping) else None,
    )


def completion_body(
    result: PredictionResult, model: str, id: str | None = None, *, more: Sequence[PredictionResult] = ()
) -> dict[str, Any]:
    """A ``chat.completion`` for ``result`` (and ``more`` choices after it: their usage added), with
    vlmkit's extension (the first choice's)."""
    usage = usage_of(result.stats)
    for other in more:
        extra = usage_of(other.stats)
        for name in ("prompt_tokens", "completion_tokens", "total_tokens"):
            usage[name] += extra[name]
        usage["prompt_tokens_details"]["cached_tokens"] += extra["prompt_tokens_details"]["cached_tokens"]
    return {
        "id": id or completion_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": None,
        "choices": [
            {
                "index": i,
                "message": _answer_message(choice),
                "logprobs": None,
                "finish_reason": finish_reason_of(choice.stats.stop_reason),
            }
            for i, choice in enumerate([result, *more])
        ],
        "usage": usage,
        **extension_of(result),
    }


def _answer_message(result: PredictionResult) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": result.content, "refusal": None}
    if result.tool_calls:
        message["content"] = result.content or None
        message["tool_calls"] = tool_calls_to_openai(result.tool_calls)
    return message


class ChunkWriter:
    """The ``chat.completion.chunk`` bodies of one stream, sharing its id, model and creation time:
    :meth:`start` (the assistant role), :meth:`text` for each fragment, :meth:`finish` (the finish
    reason and vlmkit's extension), and :meth:`usage` where the client asked for it. ``index`` is
    the choice the chunks are of (a stream of ``n`` choices writes each in turn)."""

    def __init__(self, model: str, id: str | None = None, created: int | None = None) -> None:
        self.model = model
        self.id = id or completion_id()
        self.created = created or int(time.time())
        self.index = 0

    def start(self) -> dict[str, Any]:
        return self._chunk({"role": "assistant", "content": ""})

    def text(self, content: str) -> dict[str, Any]:
        return self._chunk({"content": content})

    def tool_calls(self, calls: Sequence[ToolCall]) -> dict[str, Any]:
        """One chunk holding whole calls (each with its index, id, name and arguments)."""
        written = tool_calls_to_openai(calls)
        return self._chunk({"tool_calls": [{"index": i, **c} for i, c in enumerate(written)]})

    def finish(self, result: PredictionResult) -> dict[str, Any]:
        chunk = self._chunk({}, finish_reason_of(result.stats.stop_reason))
        chunk.update(extension_of(result))
        return chunk

    def usage(self, stats: PredictionStats) -> dict[str, Any]:
        """A usage-only chunk (no choices), as OpenAI sends with ``stream_options.include_usage``."""
        chunk = self._chunk(None)
        chunk["usage"] = usage_of(stats)
        return chunk

    def _chunk(self, delta: dict[str, Any] | None, finish: FinishReason | None = None) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": []
            if delta is None
            else [{"index": self.index, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }


# --- answers: OpenAI's usage and finish reason -> PredictionStats --------------------------------


def stats_from_openai(
    finish: str | None,
    prompt_tokens: int | None,
    completion_tokens: int | None,
    *,
    started: float,
    first_token: float | None,
    ended: float,
) -> PredictionStats:
    """Stats of an answer that has only OpenAI's fields, with the times (``time.perf_counter()``) the
    reader saw: when it asked, the first token, the end."""
    predicted = int(completion_tokens or 0)
    return PredictionStats(
        stop_reason=stop_reason_of(finish),
        prompt_tokens=int(prompt_tokens or 0),
        predicted_tokens=predicted,
        time_to_first_token_sec=(first_token - started) if first_token is not None else None,
        tokens_per_second=predicted / (ended - first_token)
        if predicted and first_token is not None and ended > first_token
        else None,
        total_time_sec=ended - started,
    )
