"""Ollama's API, read and written in one place, with no I/O.

What ``vlmkit serve`` reads, following Ollama's API reference:

- ``/api/chat``: ``model``, ``messages`` (``system``, ``user``, ``assistant``; ``content`` a string,
  and ``images`` in user messages), ``stream`` (true unless false, as at Ollama), ``format``
  (``"json"`` or a JSON schema), ``options``, ``keep_alive``.
- ``/api/generate``: ``model``, ``prompt``, ``system``, ``images``, the same settings. An empty
  prompt (and, for chat, no messages) only loads the model, or unloads it with ``keep_alive: 0``.
- An ``images`` entry is bare base64, as at Ollama, or (going past Ollama, whose users ask for it)
  an http(s) URL or a ``data:`` URL. Each becomes an :class:`~vlmkit.chat.ImageRef` located at
  ``messages[i].images[j]`` (``images[j]`` for generate), which the server reads with its safe
  fetcher.
- ``options`` map onto :class:`~vlmkit.prediction.PredictionConfig` through :data:`OPTIONS`
  (``num_predict`` is ``max_tokens``; -1 or -2, Ollama's "no limit", is none); options about the
  runtime (``num_ctx``, ``num_gpu``, ``num_thread``, ...) are accepted and left to the server.
- ``keep_alive``: seconds, or a duration string (``"5m"``, ``"1h30m"``, ``"300ms"``); negative
  keeps the model loaded, 0 unloads it after the request (:func:`keep_alive_seconds`).

What is written: the chat and generate answers (one body, or NDJSON lines: a fragment a line, the
last with ``done: true``, ``done_reason`` and the counts and durations in nanoseconds), the model
listings (``/api/tags``, ``/api/ps``, ``/api/show`` with ``capabilities``), pull progress, and errors
as ``{"error": "..."}``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal

from vlmkit._types import type_name
from vlmkit.chat import Chat, ChatMessage, ImageRef, Part, Role, TextPart
from vlmkit.errors import InvalidMessageError, InvalidSettingError
from vlmkit.prediction import PredictionConfig, PredictionResult, PredictionStats, StopReason, setting_error
from vlmkit.wire.openai_chat import finish_reason_of

__all__ = [
    "OPTIONS",
    "OllamaRequest",
    "answer_line",
    "error_body",
    "fragment_line",
    "keep_alive_seconds",
    "model_entry",
    "read_chat",
    "read_generate",
    "show_body",
    "timestamp",
    "to_chat",
]

Kind = Literal["chat", "generate"]

OPTIONS: dict[str, str] = {
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "min_p": "min_p",
    "seed": "seed",
    "stop": "stop",
    "repeat_penalty": "repeat_penalty",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
    "num_predict": "max_tokens",
}
"""Each Ollama option read as a prediction setting (Ollama's name: vlmkit's)."""


def error_body(message: str, status: int = 400, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    """An error in Ollama's shape: the message alone (it names the field)."""
    return {"error": message}


# --- requests ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OllamaRequest:
    """A chat or generate body, checked; the messages (or prompt) are read by :func:`to_chat` once the
    model is known. ``keep_alive`` is in seconds (None: keep loaded; absent: the server's TTL)."""

    kind: Kind
    model: str
    body: Mapping[str, Any]
    config: PredictionConfig = field(default_factory=PredictionConfig)
    stream: bool = True
    keep_alive: float | None = -1.0
    keep_alive_given: bool = False

    @property
    def empty(self) -> bool:
        """Nothing to answer: a request that only loads (or unloads) the model."""
        if self.kind == "chat":
            return not self.body.get("messages")
        return not self.body.get("prompt") and not self.body.get("images")


def read_chat(body: Mapping[str, Any]) -> OllamaRequest:
    return _read("chat", body)


def read_generate(body: Mapping[str, Any]) -> OllamaRequest:
    return _read("generate", body)


def _read(kind: Kind, body: Mapping[str, Any]) -> OllamaRequest:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise setting_error("model", "model is required: the name of a model from /api/tags")
    if kind == "chat" and body.get("messages") is not None and not isinstance(body.get("messages"), list):
        raise setting_error("messages", f"messages must be a list, not {type_name(body['messages'])}")
    if kind == "generate" and body.get("prompt") is not None and not isinstance(body.get("prompt"), str):
        raise setting_error("prompt", f"prompt must be a string, not {type_name(body['prompt'])}")
    if body.get("tools"):
        raise setting_error(
            "tools",
            "tools are not supported on /api/chat yet; send the request without 'tools', "
            "or use /v1/chat/completions, which calls tools",
        )
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise setting_error("stream", f"stream must be true or false, not {type_name(stream)}")
    given = "keep_alive" in body and body["keep_alive"] is not None
    return OllamaRequest(
        kind,
        model,
        body,
        config_of(body.get("options"), body.get("format")),
        stream is not False,
        keep_alive_seconds(body["keep_alive"]) if given else -1.0,
        given,
    )


def config_of(options: Any, fmt: Any = None) -> PredictionConfig:
    """The prediction settings of an ``options`` object and a ``format``."""
    if options is not None and not isinstance(options, Mapping):
        raise setting_error("options", f"options must be an object, not {type_name(options)}")
    values: dict[str, Any] = {}
    for theirs, ours in OPTIONS.items():
        value = (options or {}).get(theirs)
        if value is None or (theirs == "num_predict" and isinstance(value, int) and value < 0):
            continue
        values[ours] = value
    if isinstance(values.get("stop"), str):
        values["stop"] = (values["stop"],)
    values["response_format"] = _format(fmt)
    try:
        return PredictionConfig(**{k: v for k, v in values.items() if v is not None})
    except InvalidSettingError as exc:
        location = exc.location
        if location is None or location == "response_format":
            raise
        theirs = next((t for t, o in OPTIONS.items() if o == location), location)
        raise setting_error(f"options.{theirs}", exc.message.replace(location, theirs, 1)) from None


def _format(fmt: Any) -> Any:
    if fmt is None or fmt == "":
        return None
    if fmt == "json":
        return {"type": "json_object"}
    if isinstance(fmt, Mapping):
        return dict(fmt)
    raise setting_error("format", f'format must be "json" or a JSON schema object, not {fmt!r}')


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def keep_alive_seconds(value: Any) -> float | None:
    """``keep_alive`` in seconds: None keeps the model loaded (a negative value), 0 unloads it at once."""
    if isinstance(value, bool):
        raise setting_error("keep_alive", f"keep_alive must be a duration such as '5m' or seconds, not {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        negative = text.startswith("-")
        body = text[1:] if negative else text
        try:
            seconds = float(body)
        except ValueError:
            parts = _DURATION.findall(body)
            if not parts or "".join(n + u for n, u in parts) != body:
                raise setting_error(
                    "keep_alive", f"keep_alive {value!r} is not a duration; send seconds or e.g. '30s', '5m', '1h'"
                ) from None
            seconds = sum(float(n) * _UNITS[u] for n, u in parts)
        seconds = -seconds if negative else seconds
    else:
        raise setting_error(
            "keep_alive", f"keep_alive must be a duration such as '5m' or seconds, not {type_name(value)}"
        )
    return None if seconds < 0 else seconds


def to_chat(req: OllamaRequest) -> Chat:
    """The conversation: chat's messages, or generate's system and prompt; images as references."""
    body = req.body
    chat = Chat()
    if req.kind == "generate":
        system = body.get("system")
        if isinstance(system, str) and system:
            chat.messages.append(ChatMessage("system", [TextPart(system)]))
        content: list[Part] = [TextPart(body.get("prompt") or "")]
        content += _images(body.get("images"), "images")
        chat.messages.append(ChatMessage("user", content))
        return chat
    for i, raw in enumerate(body.get("messages") or []):
        chat.messages.append(_message(raw, f"messages[{i}]"))
    return chat


_ROLES: dict[str, Role] = {"system": "system", "user": "user", "assistant": "assistant"}


def _message(raw: Any, where: str) -> ChatMessage:
    if not isinstance(raw, Mapping):
        raise InvalidMessageError.at(f"a message must be an object, not {type_name(raw)}", where)
    name = raw.get("role")
    role = _ROLES.get(name) if isinstance(name, str) else None
    if role is None:
        raise InvalidMessageError.at(
            f"role must be 'system', 'user' or 'assistant', not {raw.get('role')!r}", f"{where}.role"
        )
    text = raw.get("content", "")
    if not isinstance(text, str):
        raise InvalidMessageError.at(f"content must be a string, not {type_name(text)}", f"{where}.content")
    parts: list[Part] = [TextPart(text)] if text else []
    images = raw.get("images")
    if images and role != "user":
        raise InvalidMessageError.at(
            f"images can only be sent in user messages, not in a {role} message", f"{where}.images"
        )
    return ChatMessage(role, parts + _images(images, f"{where}.images"))


def _images(images: Any, where: str) -> list[Part]:
    if images is None:
        return []
    if not isinstance(images, list):
        raise InvalidMessageError.at(f"images must be a list of base64 strings or URLs, not {type_name(images)}", where)
    out: list[Part] = []
    for j, image in enumerate(images):
        here = f"{where}[{j}]"
        if not isinstance(image, str) or not image:
            raise InvalidMessageError.at(
                f"an image must be a base64 string, an http(s) URL or a data URL, not {type_name(image)}", here
            )
        if image.startswith(("http://", "https://", "data:")):
            out.append(ImageRef(image, None, None, here))
        else:
            out.append(ImageRef(f"data:;base64,{image}", None, None, here))
    return out


# --- answers -------------------------------------------------------------------------------------


def timestamp(at: datetime | None = None) -> str:
    """Ollama's ``created_at``/``modified_at``: RFC 3339 with nanoseconds' room, in UTC."""
    return (at or datetime.now(timezone.utc)).isoformat().replace("+00:00", "Z")


def _done_reason(stop: StopReason) -> str:
    """Ollama's ``done_reason``: OpenAI's finish reason where Ollama has it (``length``), else ``stop``."""
    return "length" if finish_reason_of(stop) == "length" else "stop"


def _counts(stats: PredictionStats) -> dict[str, Any]:
    total = stats.total_time_sec or 0.0
    first = stats.time_to_first_token_sec or 0.0
    return {
        "total_duration": int(total * 1e9),
        "load_duration": 0,
        "prompt_eval_count": stats.prompt_tokens,
        "prompt_eval_duration": int(first * 1e9),
        "eval_count": stats.predicted_tokens,
        "eval_duration": int(max(total - first, 0.0) * 1e9),
    }


def _text(kind: Kind, text: str) -> dict[str, Any]:
    return {"message": {"role": "assistant", "content": text}} if kind == "chat" else {"response": text}


def fragment_line(kind: Kind, model: str, text: str) -> dict[str, Any]:
    """One streamed line: a fragment of the reply."""
    return {"model": model, "created_at": timestamp(), **_text(kind, text), "done": False}


def answer_line(
    kind: Kind, model: str, result: PredictionResult | None, *, text: str, reason: str | None = None
) -> dict[str, Any]:
    """The whole answer (``text`` the reply), or a stream's last line (``text`` empty); ``result`` None
    for a request that only loaded or unloaded the model (``reason`` says which)."""
    out: dict[str, Any] = {"model": model, "created_at": timestamp(), **_text(kind, text), "done": True}
    if result is None:
        out["done_reason"] = reason or "load"
        return out
    out["done_reason"] = _done_reason(result.stats.stop_reason)
    out.update(_counts(result.stats))
    if kind == "generate":
        out["context"] = []
    return out


def model_entry(
    name: str, *, size: int, family: str, context_length: int | None, modified_at: str, expires_at: str | None = None
) -> dict[str, Any]:
    """A model in ``/api/tags`` (or, with ``expires_at``, ``/api/ps``)."""
    out: dict[str, Any] = {
        "name": name,
        "model": name,
        "modified_at": modified_at,
        "size": size,
        "digest": "",
        "details": _details(family),
    }
    if expires_at is not None:
        out["expires_at"] = expires_at
        out["size_vram"] = 0
        out["context_length"] = context_length
    return out


def _details(family: str) -> dict[str, Any]:
    return {
        "parent_model": "",
        "format": "gguf",
        "family": family,
        "families": [family],
        "parameter_size": "",
        "quantization_level": "",
    }


def show_body(*, family: str, vision: bool, context_length: int | None, modified_at: str) -> dict[str, Any]:
    """``/api/show``: the model's details and ``capabilities`` (``completion``, and ``vision`` where it sees)."""
    capabilities: Sequence[str] = ["completion", "vision"] if vision else ["completion"]
    info: dict[str, Any] = {"general.architecture": family}
    if context_length:
        info[f"{family}.context_length"] = context_length
    return {
        "modelfile": "",
        "parameters": "",
        "template": "",
        "details": _details(family),
        "model_info": info,
        "capabilities": list(capabilities),
        "modified_at": modified_at,
        "license": "",
    }
