"""LM Studio's websocket protocol (what its SDKs speak), read and written in one place, with no I/O.

LM Studio's SDKs (``lmstudio`` for Python, ``@lmstudio/sdk``) talk to a server over one websocket
per namespace (``/llm``, ``/system``, ``/files``, ...). The first message is the authentication
(``authVersion``, ``clientIdentifier``, ``clientPasskey``), answered ``{"success": ...}``; then
every message is a JSON frame: ``rpcCall`` (answered ``rpcResult`` / ``rpcError`` with the same
``callId``), ``channelCreate`` / ``channelSend`` / ``channelClose`` for streams (the server answers
on the channel with ``channelSend`` messages, then ``channelClose``, or ``channelError``), and
``communicationWarning`` for a frame that belongs to no call or channel. The shapes follow the SDK's
generated schema types (lmstudio-js's Zod schemas, ``lmstudio._sdk_models``); vlmkit's own
definitions are written here from them.

Frames a client sends are read by :func:`read_frame` into small values, each validated when it is
built (:class:`Authenticate`, :class:`RpcCall`, :class:`ChannelCreate`, :class:`ChannelSend`,
:class:`ChannelClose`); anything else is a :class:`ProtocolError` that carries the call or channel
it belongs to, when the frame said, so the server can answer on it. Frames the server sends are
written by the functions below (plain dicts, for the server to encode).

Messages: LM Studio's chat history becomes a :class:`~vlmkit.chat.Chat` whose images are
:class:`~vlmkit.chat.ImageRef` to uploaded files (the server looks them up); its prediction config
stack (``llm.prediction.*`` keys) becomes a :class:`~vlmkit.prediction.PredictionConfig` through
one table that is also used to write the config back; a
:class:`~vlmkit.prediction.PredictionResult` becomes the prediction's fragments and its final
``success`` message with the stats (LM Studio's names, plus vlmkit's image counts, which the SDK
ignores). Stop reasons are already LM Studio's strings (:class:`~vlmkit.prediction.StopReason`).

Tools (what the SDK's ``.act()`` sends): the config key ``llm.prediction.tools`` holds
``{"type": "toolArray", "tools": [...], "force": bool}``, whose tools are OpenAI's
``{"type": "function", "function": {...}}`` and are read by :mod:`vlmkit.wire.openai_chat` into
:class:`~vlmkit.tools.ToolDefinition` s (``force`` is a required call, else the model chooses); a bad
one is an :class:`~vlmkit.errors.InvalidToolError` naming the part
(``llm.prediction.tools.tools[0].function.parameters``). In the history an assistant message's
``toolCallRequest`` parts are its :class:`~vlmkit.tools.ToolCall` s (arguments an object) and a
``tool`` message's ``toolCallResult`` parts (text only: the protocol has no images there) are one
vlmkit ``tool`` message each, answering the call its ``toolCallId`` names. A prediction's calls go
back as ``toolCallGenerationStart`` / ``NameReceived`` / ``ArgumentFragmentGenerated`` /
``toolCallGenerationEnd`` messages (:func:`tool_call_messages`).

Config keys vlmkit does not act on (``contextOverflowPolicy``, reasoning
parsing, speculative decoding, load settings) are ignored, as LM Studio ignores keys it does not
know; a caller's own prompt template (text completion) is refused, saying so.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from vlmkit._types import type_name
from vlmkit.chat import Chat, ChatMessage, ImageRef, Part, Role, TextPart, tool_results
from vlmkit.errors import BadRequestError, InvalidMessageError, InvalidSettingError, InvalidToolError, VlmkitError
from vlmkit.prediction import (
    ModelInfo,
    PredictionConfig,
    PredictionResult,
    PredictionStats,
    StopReason,
    json_schema_of,
)
from vlmkit.tools import ToolCall, ToolChoice, parse_arguments, tool_error
from vlmkit.wire.openai_chat import tools_from_openai

__all__ = [
    "DISCOVERY_PORTS",
    "NAMESPACES",
    "Authenticate",
    "ChannelClose",
    "ChannelCreate",
    "ChannelSend",
    "Frame",
    "ProtocolError",
    "RpcCall",
    "UploadTooLargeError",
    "auth_result",
    "channel_close",
    "channel_error",
    "channel_send",
    "chat_from_history",
    "communication_warning",
    "config_from_stack",
    "config_to_kv",
    "download_option",
    "download_progress",
    "download_success",
    "error_body",
    "fragment",
    "load_config_kv",
    "loaded_info",
    "model_info",
    "model_key",
    "prediction_success",
    "prompt_progress",
    "read_frame",
    "rpc_error",
    "rpc_result",
    "search_identifier",
    "search_result",
    "search_term",
    "stats_body",
    "tool_call_messages",
    "upload_content",
    "upload_result",
]

NAMESPACES = ("llm", "embedding", "system", "files", "repository", "plugins")
"""The websocket paths LM Studio's SDKs open, one per API namespace."""

DISCOVERY_PORTS = (41343, 52993, 16141, 39414, 22931)
"""The ports LM Studio's SDKs probe (``GET /lmstudio-greeting``) when given no host, in order."""

NOT_FOUND_CODE = "generic.noModelMatchingQuery"
"""The ``displayData.code`` that makes the SDK raise its model-not-found error."""


class ProtocolError(BadRequestError):
    """A frame or message that does not follow the protocol; ``call_id`` / ``channel_id`` say what
    the frame belonged to (when it said), so the answer goes there."""

    def __init__(self, message: str, *, call_id: int | None = None, channel_id: int | None = None) -> None:
        super().__init__(message)
        self.call_id = call_id
        self.channel_id = channel_id


# --- frames a client sends -----------------------------------------------------------------------


def _id(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ProtocolError(f"'{name}' must be a non-negative integer, not {_shown(value)}")
    return value


def _text(value: Any, name: str, frame: str) -> str:
    if not isinstance(value, str) or not value:
        raise ProtocolError(f"a {frame} frame needs '{name}', a non-empty string (got {_shown(value)})")
    return value


def _shown(value: Any) -> str:
    return repr(value) if isinstance(value, (int, float, str)) and len(repr(value)) < 40 else type_name(value)


@dataclass(frozen=True)
class Authenticate:
    """The first message of a connection: who the client is, and its passkey. When the server has API
    keys, one of them is the passkey, or the LM Studio API token the SDK split in two: it sends
    ``sk-lm-ID:KEY`` (``api_token=``, ``LMSTUDIO_API_TOKEN``) as identifier ``ID`` and passkey ``KEY``."""

    client_identifier: str
    client_passkey: str
    auth_version: int = 1

    def __post_init__(self) -> None:
        _text(self.client_identifier, "clientIdentifier", "authentication")
        if not isinstance(self.client_passkey, str):
            raise ProtocolError(f"'clientPasskey' must be a string, not {_shown(self.client_passkey)}")
        if self.auth_version != 1:
            raise ProtocolError(f"authVersion {_shown(self.auth_version)} is not supported; this server speaks 1")

    def secrets(self) -> tuple[str, ...]:
        """The strings that may be the client's key."""
        pair = f"{self.client_identifier}:{self.client_passkey}"
        return (self.client_passkey, pair, f"sk-lm-{pair}")


@dataclass(frozen=True)
class RpcCall:
    endpoint: str
    call_id: int
    parameter: Any = None

    def __post_init__(self) -> None:
        _id(self.call_id, "callId")
        _text(self.endpoint, "endpoint", "rpcCall")


@dataclass(frozen=True)
class ChannelCreate:
    endpoint: str
    channel_id: int
    creation_parameter: Any = None

    def __post_init__(self) -> None:
        _id(self.channel_id, "channelId")
        _text(self.endpoint, "endpoint", "channelCreate")


@dataclass(frozen=True)
class ChannelSend:
    channel_id: int
    message: Mapping[str, Any]

    def __post_init__(self) -> None:
        _id(self.channel_id, "channelId")
        if not isinstance(self.message, Mapping):
            raise ProtocolError(f"a channelSend frame needs 'message', an object (got {_shown(self.message)})")


@dataclass(frozen=True)
class ChannelClose:
    channel_id: int

    def __post_init__(self) -> None:
        _id(self.channel_id, "channelId")


Frame = Authenticate | RpcCall | ChannelCreate | ChannelSend | ChannelClose

_FRAME_TYPES = ("rpcCall", "channelCreate", "channelSend", "channelClose")


def read_frame(data: str | bytes, *, max_bytes: int) -> Frame:
    """One frame a client sent, checked. A frame over ``max_bytes``, not JSON, or not a frame of
    the protocol is a :class:`ProtocolError` (naming the call or channel when the frame had one)."""
    if len(data) > max_bytes:
        raise ProtocolError(
            f"the frame is {len(data):,} bytes, over this server's limit of {max_bytes:,}; send images "
            "with files.uploadFileBase64 (one per frame) and refer to them by the handle it answers"
        )
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"the frame is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ProtocolError(f"a frame must be a JSON object, not {type_name(obj)}")
    call_id, channel_id = _safe_id(obj.get("callId")), _safe_id(obj.get("channelId"))
    try:
        return _frame(obj)
    except ProtocolError as exc:
        exc.call_id, exc.channel_id = call_id, channel_id
        raise


def _safe_id(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _frame(obj: dict[str, Any]) -> Frame:
    kind = obj.get("type")
    if kind is None and "authVersion" in obj:
        return Authenticate(obj.get("clientIdentifier"), obj.get("clientPasskey"), obj.get("authVersion"))  # type: ignore[arg-type]
    if kind == "rpcCall":
        return RpcCall(obj.get("endpoint"), obj.get("callId"), obj.get("parameter"))  # type: ignore[arg-type]
    if kind == "channelCreate":
        return ChannelCreate(obj.get("endpoint"), obj.get("channelId"), obj.get("creationParameter"))  # type: ignore[arg-type]
    if kind == "channelSend":
        return ChannelSend(obj.get("channelId"), obj.get("message"))  # type: ignore[arg-type]
    if kind == "channelClose":
        return ChannelClose(obj.get("channelId"))  # type: ignore[arg-type]
    if kind is None:
        raise ProtocolError(f"the frame has no 'type'; a client sends one of {', '.join(_FRAME_TYPES)}")
    raise ProtocolError(f"unknown frame type {_shown(kind)}; a client sends one of {', '.join(_FRAME_TYPES)}")


# --- frames the server sends ---------------------------------------------------------------------


def error_body(message: str, *, code: str | None = None, suggestion: str | None = None) -> dict[str, Any]:
    """An error as LM Studio serializes one (``title``; ``displayData.code`` picks the SDK's error class)."""
    body: dict[str, Any] = {"title": message}
    if suggestion is not None:
        body["suggestion"] = suggestion
    if code is not None:
        body["displayData"] = {"code": code}
    return body


def auth_result(error: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"success": True} if error is None else {"success": False, "error": error}


def rpc_result(call_id: int, result: Any) -> dict[str, Any]:
    frame = {"type": "rpcResult", "callId": call_id}
    if result is not None:
        frame["result"] = result
    return frame


def rpc_error(call_id: int, error: dict[str, Any]) -> dict[str, Any]:
    return {"type": "rpcError", "callId": call_id, "error": error}


def channel_send(channel_id: int, message: dict[str, Any]) -> dict[str, Any]:
    return {"type": "channelSend", "channelId": channel_id, "message": message}


def channel_close(channel_id: int) -> dict[str, Any]:
    return {"type": "channelClose", "channelId": channel_id}


def channel_error(channel_id: int, error: dict[str, Any]) -> dict[str, Any]:
    return {"type": "channelError", "channelId": channel_id, "error": error}


def communication_warning(warning: str) -> dict[str, Any]:
    return {"type": "communicationWarning", "warning": warning}


# --- models --------------------------------------------------------------------------------------


def model_key(specifier: Any, where: str = "modelSpecifier") -> str:
    """The model a specifier names: ``{"type": "query", "query": {"identifier"}}`` or an instance reference."""
    if isinstance(specifier, str) and specifier:
        return specifier
    if isinstance(specifier, Mapping):
        if specifier.get("type") == "instanceReference" and isinstance(specifier.get("instanceReference"), str):
            return str(specifier["instanceReference"])
        query = specifier.get("query") if specifier.get("type") == "query" else specifier
        if isinstance(query, Mapping):
            for name in ("identifier", "path"):
                if isinstance(query.get(name), str) and query[name]:
                    return str(query[name])
    raise ProtocolError(
        f"{where} must name a model: {{'type': 'query', 'query': {{'identifier': KEY}}}} or "
        f"{{'type': 'instanceReference', 'instanceReference': KEY}} (got {_shown(specifier)})"
    )


def model_info(
    key: str,
    *,
    path: str,
    size_bytes: int,
    vision: bool,
    architecture: str,
    context_length: int | None,
    loaded: bool,
) -> dict[str, Any]:
    """A model as the SDK describes one: ``LlmInfo`` for a downloaded model, ``LlmInstanceInfo``
    (with ``identifier``, ``instanceReference``, ``contextLength``) for a loaded one."""
    info: dict[str, Any] = {
        "type": "llm",
        "modelKey": key,
        "format": "gguf",
        "displayName": key,
        "path": path,
        "sizeBytes": size_bytes,
        "vision": vision,
        "trainedForToolUse": False,
        "maxContextLength": context_length or 0,
        "architecture": architecture,
    }
    if loaded:
        info.update(identifier=key, instanceReference=key, contextLength=context_length or 0)
    return info


def loaded_info(info: ModelInfo) -> dict[str, Any]:
    """:func:`model_info` of a loaded model, from what the engine says about it."""
    return model_info(
        info.key,
        path=info.path,
        size_bytes=info.size_bytes,
        vision=info.vision,
        architecture=info.architecture,
        context_length=info.context_length,
        loaded=True,
    )


def load_config_kv(context_length: int | None) -> dict[str, Any]:
    """The load config a loaded model reports (a KV config): its context length."""
    fields = [] if context_length is None else [{"key": "llm.load.contextLength", "value": context_length}]
    return {"fields": fields}


# --- chat history --------------------------------------------------------------------------------

_ROLES: dict[str, Role] = {"system": "system", "user": "user", "assistant": "assistant", "tool": "tool"}


def chat_from_history(history: Any, where: str = "history") -> Chat:
    """A :class:`Chat` from LM Studio's ``{"messages": [...]}``; an image is an :class:`ImageRef` to an
    uploaded file (``file_id``: the handle ``uploadFileBase64`` answered), located for errors. A
    ``tool`` message's results become one vlmkit ``tool`` message each; a result answering no call
    made before it is an :class:`~vlmkit.errors.InvalidToolError` naming its ``toolCallId``."""
    if not isinstance(history, Mapping) or not isinstance(history.get("messages"), list):
        raise _bad(f"must be an object holding a 'messages' list (got {_shown(history)})", where)
    chat = Chat()
    origins: list[str] = []  # where each of the chat's messages came from, for errors
    for i, raw in enumerate(history["messages"]):
        here = f"{where}.messages[{i}]"
        if not isinstance(raw, Mapping):
            raise _bad(f"must be an object, not {type_name(raw)}", here)
        role = raw.get("role")
        if role not in _ROLES:
            raise _bad(f"'role' must be one of system, user, assistant, tool (got {_shown(role)})", here)
        content = raw.get("content")
        if isinstance(content, str):
            content = [{"type": "text", "text": content}]
        if not isinstance(content, list):
            raise _bad(f"'content' must be a list of parts, not {type_name(content)}", here)
        if role == "tool":
            for j, part in enumerate(content):
                chat.messages.append(_tool_result(part, f"{here}.content[{j}]"))
                origins.append(f"{here}.content[{j}].toolCallId")
            continue
        message = ChatMessage(_ROLES[role], [])
        for j, part in enumerate(content):
            at = f"{here}.content[{j}]"
            if isinstance(part, Mapping) and part.get("type") == "toolCallRequest" and role == "assistant":
                message.tool_calls.append(_tool_call(part, at))
            else:
                message.content.append(_part(part, at, _ROLES[role]))
        chat.messages.append(message)
        origins.append(here)
    try:
        tool_results(chat.messages)
    except InvalidToolError as exc:  # located in the chat's messages: say where in LM Studio's history
        index = int(str(exc.location).split("]", 1)[0].removeprefix("messages["))
        raise tool_error(exc.detail, origins[index]) from None
    return chat


def _tool_call(raw: Mapping[str, Any], where: str) -> ToolCall:
    """A ``toolCallRequest`` part: ``{"toolCallRequest": {"type": "function", "id", "name", "arguments"}}``."""
    request = raw.get("toolCallRequest")
    if not isinstance(request, Mapping):
        raise tool_error(f"a toolCallRequest part needs 'toolCallRequest', an object (got {_shown(request)})", where)
    ident, name, arguments = request.get("id"), request.get("name"), request.get("arguments")
    if not isinstance(ident, str) or not ident:
        raise tool_error(
            f"a tool call request needs 'id', the id its result answers (got {_shown(ident)})",
            f"{where}.toolCallRequest.id",
        )
    if not isinstance(name, str) or not name:
        raise tool_error(
            f"a tool call request needs the tool's 'name' (got {_shown(name)})", f"{where}.toolCallRequest.name"
        )
    if arguments is not None and not isinstance(arguments, Mapping):
        raise tool_error(
            f"a tool call request's 'arguments' must be an object, not {type_name(arguments)}",
            f"{where}.toolCallRequest.arguments",
        )
    return ToolCall(ident, name, json.dumps(dict(arguments or {})))


def _tool_result(raw: Any, where: str) -> ChatMessage:
    """A ``toolCallResult`` part (``{"content": text, "toolCallId"}``) as a vlmkit ``tool`` message."""
    if not isinstance(raw, Mapping) or raw.get("type") != "toolCallResult":
        kind = raw.get("type") if isinstance(raw, Mapping) else raw
        raise _bad(f"a tool message holds toolCallResult parts only (got {_shown(kind)})", where)
    content, answers = raw.get("content"), raw.get("toolCallId")
    if not isinstance(content, str):
        raise tool_error(f"a tool call result needs 'content', a string (got {_shown(content)})", f"{where}.content")
    if not isinstance(answers, str) or not answers:
        raise tool_error(
            f"a tool call result needs 'toolCallId', the id of the call it answers (got {_shown(answers)})",
            f"{where}.toolCallId",
        )
    message = ChatMessage("tool", [TextPart(content)] if content else [])
    message.tool_call_id = answers
    return message


def _part(raw: Any, where: str, role: Role) -> Part:
    kind = raw.get("type") if isinstance(raw, Mapping) else None
    if kind == "text":
        if not isinstance(raw.get("text"), str):
            raise _bad(f"a text part needs 'text', a string (got {_shown(raw.get('text'))})", where)
        return TextPart(raw["text"])
    if kind == "file":
        identifier, file_type = raw.get("identifier"), raw.get("fileType")
        if file_type != "image":
            raise _bad(f"only image files can be sent to a model (this file's fileType is {_shown(file_type)})", where)
        if role != "user":
            raise _bad(f"images can only be in user messages, not in a {role} message", where)
        if not isinstance(identifier, str) or not identifier:
            raise _bad("a file part needs 'identifier', the handle files.uploadFileBase64 answered", where)
        return ImageRef(identifier, location=where, file_id=True)
    if kind == "toolCallRequest":
        raise _bad(f"toolCallRequest parts belong in assistant messages, not in a {role} message", where)
    if kind == "toolCallResult":
        raise _bad(f"toolCallResult parts belong in tool messages, not in a {role} message", where)
    raise _bad(f"a part must be of type text or file (got {_shown(kind)})", where)


def _bad(message: str, where: str) -> InvalidMessageError:
    exc = InvalidMessageError(message)
    exc.add_location(where)
    return exc


# --- prediction config ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Key:
    """One ``llm.prediction.*`` key: the PredictionConfig field it sets, whether its value is a
    checkbox (``{"checked", "value"}``), and how its value reads and writes."""

    field: str
    checkbox: bool = False
    read: Callable[[Any], Any] = lambda v: v
    write: Callable[[Any], Any] = lambda v: v


def _int(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _read_structured(value: Any) -> Any:
    if not isinstance(value, Mapping) or value.get("type") in (None, "none"):
        return None
    if value.get("type") == "json":
        schema = value.get("jsonSchema")
        return schema if schema is not None else {"type": "object"}
    raise InvalidSettingError(
        f"structured output of type {_shown(value.get('type'))} is not supported; give a JSON schema "
        "(response_format=... in the SDK: a schema dict or a pydantic class)"
    )


def _write_structured(value: Any) -> Any:
    return {"type": "json", "jsonSchema": value}


_PREDICTION_KEYS: dict[str, _Key] = {
    "llm.prediction.maxPredictedTokens": _Key("max_tokens", checkbox=True, read=_int),
    "llm.prediction.temperature": _Key("temperature"),
    "llm.prediction.topKSampling": _Key("top_k", read=_int),
    "llm.prediction.topPSampling": _Key("top_p", checkbox=True),
    "llm.prediction.minPSampling": _Key("min_p", checkbox=True),
    "llm.prediction.repeatPenalty": _Key("repeat_penalty", checkbox=True),
    "llm.prediction.stopStrings": _Key("stop", write=list),
    "llm.prediction.structured": _Key("response_format", read=_read_structured, write=_write_structured),
    "llm.prediction.llama.cpuThreads": _Key("cpu_threads", read=_int),
}


def config_from_stack(stack: Any, where: str = "predictionConfigStack") -> PredictionConfig:
    """A :class:`PredictionConfig` from a KV config stack (its layers in order; a later one wins).

    A bad value is an :class:`~vlmkit.errors.InvalidSettingError` naming the key.
    """
    if stack is None:
        return PredictionConfig()
    if not isinstance(stack, Mapping) or not isinstance(stack.get("layers"), list):
        raise _setting(f"{where} must be an object holding a 'layers' list (got {_shown(stack)})", where)
    values: dict[str, Any] = {}
    for i, layer in enumerate(stack["layers"]):
        config = layer.get("config") if isinstance(layer, Mapping) else None
        fields = config.get("fields") if isinstance(config, Mapping) else None
        if not isinstance(fields, list):
            raise _setting(
                f"each layer needs 'config': {{'fields': [...]}} (layer {i} has none)", f"{where}.layers[{i}]"
            )
        for field in fields:
            key = field.get("key") if isinstance(field, Mapping) else None
            if key == "llm.prediction.promptTemplate":
                raise _setting(
                    "a prompt template of the caller's (text completion, .complete()) is not supported by vlmkit "
                    "yet; use .respond() with a chat, which the model's own chat template formats",
                    key,
                )
            if key == "llm.prediction.tools":
                values.update(_tool_use(field.get("value"), key))
                continue
            spec = _PREDICTION_KEYS.get(key) if isinstance(key, str) else None
            if spec is None:
                continue  # a key vlmkit does not act on, as LM Studio skips keys it does not know
            value = field.get("value")
            if spec.checkbox:
                value = value.get("value") if isinstance(value, Mapping) and value.get("checked") else None
            try:
                values[spec.field] = spec.read(value) if value is not None else None
            except InvalidSettingError as exc:
                raise _setting(exc.detail, str(key)) from None
    try:
        return PredictionConfig(**{k: v for k, v in values.items() if v is not None})
    except InvalidToolError as exc:  # e.g. two tools of one name
        exc.add_location("llm.prediction.tools")
        raise
    except InvalidSettingError as exc:
        key = next((k for k, s in _PREDICTION_KEYS.items() if s.field == exc.location), where)
        raise _setting(exc.detail, key) from None


def _tool_use(value: Any, key: str) -> dict[str, Any]:
    """The tools and tool choice of an ``llm.prediction.tools`` value (``none``, or a ``toolArray``)."""
    if value is None or (isinstance(value, Mapping) and value.get("type") == "none"):
        return {"tools": None, "tool_choice": None}
    if not isinstance(value, Mapping) or value.get("type") != "toolArray":
        kind = value.get("type") if isinstance(value, Mapping) else value
        raise tool_error(
            "tool use must be {'type': 'none'} or {'type': 'toolArray', 'tools': [{'type': 'function', "
            f"'function': {{...}}}}, ...]}} (got {_shown(kind)})",
            key,
        )
    force = value.get("force")
    if force is not None and not isinstance(force, bool):
        raise tool_error(f"'force' must be true or false, not {_shown(force)}", f"{key}.force")
    try:
        tools = tools_from_openai(value.get("tools") or [])
    except VlmkitError as exc:
        exc.add_location(key)
        raise
    return {"tools": tools or None, "tool_choice": ToolChoice("required") if force and tools else None}


def config_to_kv(config: PredictionConfig) -> dict[str, Any]:
    """The KV config a prediction reports having used (the keys :func:`config_from_stack` reads)."""
    fields = []
    for key, spec in _PREDICTION_KEYS.items():
        value = getattr(config, spec.field)
        if spec.field == "response_format":
            value = json_schema_of(value)
        if value is None or value == ():
            continue
        value = spec.write(value)
        fields.append({"key": key, "value": {"checked": True, "value": value} if spec.checkbox else value})
    return {"fields": fields}


def _setting(message: str, key: str) -> InvalidSettingError:
    exc = InvalidSettingError(message)
    exc.add_location(key)
    return exc


# --- prediction results --------------------------------------------------------------------------

_LMSTUDIO_STOP = {StopReason.CONTENT_FILTERED: "failed"}


def prompt_progress(progress: float) -> dict[str, Any]:
    return {"type": "promptProcessingProgress", "progress": progress}


def fragment(content: str, tokens_count: int = 1) -> dict[str, Any]:
    return {
        "type": "fragment",
        "fragment": {
            "content": content,
            "tokensCount": tokens_count,
            "containsDrafted": False,
            "reasoningType": "none",
        },
    }


def tool_call_messages(call: ToolCall) -> list[dict[str, Any]]:
    """The channel messages that hand the client one call the model made: its start, name and
    arguments, then ``toolCallGenerationEnd`` with the request (arguments as an object); arguments
    that are not a JSON object (a provider's malformed call) end in ``toolCallGenerationFailed``."""
    messages: list[dict[str, Any]] = [
        {"type": "toolCallGenerationStart", "toolCallId": call.id},
        {"type": "toolCallGenerationNameReceived", "name": call.name},
        {"type": "toolCallGenerationArgumentFragmentGenerated", "content": call.arguments},
    ]
    try:
        arguments = parse_arguments(call.arguments, call.name)
    except InvalidToolError as exc:
        failed = {"type": "toolCallGenerationFailed", "error": error_body(exc.message), "rawContent": call.arguments}
        return [*messages, failed]
    request = {"type": "function", "id": call.id, "name": call.name, "arguments": arguments}
    return [*messages, {"type": "toolCallGenerationEnd", "toolCallRequest": request}]


def stats_body(stats: PredictionStats) -> dict[str, Any]:
    """LM Studio's ``LlmPredictionStats``, with vlmkit's image and cache counts beside them."""
    body: dict[str, Any] = {
        "stopReason": _LMSTUDIO_STOP.get(stats.stop_reason, stats.stop_reason.value),
        "promptTokensCount": stats.prompt_tokens,
        "predictedTokensCount": stats.predicted_tokens,
        "totalTokensCount": stats.total_tokens,
        "cachedPromptTokensCount": stats.cached_prompt_tokens,
        "imagesEncoded": stats.images_encoded,
        "imagesReused": stats.images_reused,
        "imagesPreprocessed": stats.images_preprocessed,
        "imageTokensCount": stats.image_tokens,
        "totalTimeSec": stats.total_time_sec,
    }
    if stats.tokens_per_second is not None:
        body["tokensPerSecond"] = stats.tokens_per_second
    if stats.time_to_first_token_sec is not None:
        body["timeToFirstTokenSec"] = stats.time_to_first_token_sec
    return body


def prediction_success(
    result: PredictionResult, info: dict[str, Any], config: PredictionConfig, context_length: int | None
) -> dict[str, Any]:
    """The last message of a prediction channel: stats, the model, and the configs it ran with."""
    return {
        "type": "success",
        "stats": stats_body(result.stats),
        "modelInfo": info,
        "loadModelConfig": load_config_kv(context_length),
        "predictionConfig": config_to_kv(config),
    }


# --- files ---------------------------------------------------------------------------------------


def upload_content(parameter: Any, *, max_bytes: int) -> tuple[str, bytes]:
    """The file name and bytes of an ``uploadFileBase64`` call; over ``max_bytes`` (decoded) is refused
    before decoding."""
    if not isinstance(parameter, Mapping):
        raise ProtocolError(f"uploadFileBase64 needs {{'name', 'contentBase64'}} (got {_shown(parameter)})")
    name, content = parameter.get("name"), parameter.get("contentBase64")
    if not isinstance(name, str) or not isinstance(content, str):
        raise ProtocolError("uploadFileBase64 needs 'name' and 'contentBase64', both strings")
    size = len(content) * 3 // 4 - content[-2:].count("=")  # the decoded size, known before decoding
    if size > max_bytes:
        raise UploadTooLargeError(
            f"the upload {name!r} is about {size:,} bytes, over this server's limit of {max_bytes:,} per image; "
            "send a smaller image (downscale it), or raise `limits: max_body_mb` in the server's config"
        )
    try:
        data = base64.b64decode(content, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ProtocolError(f"the upload {name!r} is not valid base64: {exc}") from None
    if not data:
        raise ProtocolError(f"the upload {name!r} is empty")
    return name, data


def upload_result(identifier: str, size_bytes: int) -> dict[str, Any]:
    return {"identifier": identifier, "fileType": "image", "sizeBytes": size_bytes}


class UploadTooLargeError(ProtocolError):
    status_code = 413


# --- the model repository ------------------------------------------------------------------------


def search_term(parameter: Any) -> tuple[str, int]:
    """The search term (lowercased; empty: everything) and the result limit (1 to 25, default 10) of
    a ``searchModels`` call."""
    opts = parameter.get("opts") if isinstance(parameter, Mapping) else None
    if not isinstance(opts, Mapping):
        raise ProtocolError(f"searchModels needs 'opts': {{'searchTerm', 'limit'}} (got {_shown(opts)})")
    term, limit = opts.get("searchTerm") or "", opts.get("limit") or 10
    if not isinstance(term, str):
        raise ProtocolError(f"'searchTerm' must be a string (got {_shown(term)})")
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 25:
        raise ProtocolError(f"'limit' must be an integer from 1 to 25 (got {_shown(limit)})")
    return term.strip().lower(), limit


def search_result(key: str, *, exact: bool) -> dict[str, Any]:
    """A model of vlmkit's catalog as a search result (its identifier: the catalog key)."""
    return {"name": key, "identifier": {"type": "catalog", "identifier": key}, "exact": exact, "staffPick": False}


def download_option(key: str, file_name: str, repo: str) -> dict[str, Any]:
    """The one way vlmkit downloads a catalog model: its GGUF and projector, by the catalog key.
    ``sizeBytes`` is 0: the catalog does not know it before the hub is asked."""
    quant = file_name.rsplit("-", 1)[-1].removesuffix(".gguf") if "-" in file_name else None
    option: dict[str, Any] = {
        "name": file_name,
        "sizeBytes": 0,
        "fitEstimation": "fitWithoutGPU",
        "downloadIdentifier": key,
        "indexedModelIdentifier": f"{repo}/{file_name}",
        "recommended": True,
    }
    if quant:
        option["quantization"] = quant
    return option


def search_identifier(parameter: Any) -> str:
    """The catalog key a ``getModelDownloadOptions`` call names."""
    found = parameter.get("modelSearchResultIdentifier") if isinstance(parameter, Mapping) else None
    key = found.get("identifier") if isinstance(found, Mapping) else None
    if not isinstance(key, str) or not key:
        raise ProtocolError("getModelDownloadOptions needs 'modelSearchResultIdentifier': {'type', 'identifier'}")
    return key


def download_progress(downloaded: int, total: int, speed: float) -> dict[str, Any]:
    update = {"downloadedBytes": downloaded, "totalBytes": total, "speedBytesPerSecond": speed}
    return {"type": "downloadProgress", "update": update}


def download_success(key: str) -> dict[str, Any]:
    return {"type": "success", "defaultIdentifier": key}
