"""What a prediction is asked to do, and what it gives back: shared by the engine, the SDK and the server.

This module holds plain data only (no engine, no I/O), so every layer can import it.

Image token budgets (local models): ``image_max_tokens`` and ``image_min_tokens`` bound the tokens
each image of the prompt becomes, as llama.cpp's ``--image-max-tokens`` / ``--image-min-tokens``
do for projectors with dynamic resolution (Qwen-VL and the like): the engine scales the image down
or up until mtmd gives a count within the bounds (a projector with a fixed input size gives what it
gives). ``detail`` maps onto them: an int ``detail`` is an ``image_max_tokens`` (the smaller of the
two applies when both are set, an image's own int ``detail`` wins for that image); ``"low"``,
``"auto"`` and ``"high"`` bound the image's long edge (512, 1024, full resolution); a cap then
shrinks it further, and a floor enlarges it past that bound where it must. The server reads both
as vlmkit extensions in the request body, as it reads ``detail`` (a gateway model refuses them);
the stats report ``image_tokens`` (all images of the prompt) and each image's size. The SDK's and
the server's ``detail`` keep their meaning: a level on an image, or an int cap on the request.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from vlmkit._types import DETAIL_NAMES, type_name
from vlmkit._types import Detail as ImageDetail
from vlmkit.errors import GroundingError, InvalidSettingError, StructuredOutputError
from vlmkit.images.grounding import Box, Point, SentImage, parse
from vlmkit.tools import ToolCall, ToolChoice, ToolDefinition, tool_error

Detail = ImageDetail | int
"""A prediction's ``detail`` setting: a level (``"low"``, ``"high"``, ``"auto"``) or a cap on image tokens."""

__all__ = [
    "DETAIL_NAMES",
    "Detail",
    "ModelInfo",
    "PredictionConfig",
    "PredictionFragment",
    "PredictionResult",
    "PredictionStats",
    "PreparedImageInfo",
    "StopReason",
    "json_schema_of",
    "parse_structured",
    "setting_error",
    "snake_case",
]


class StopReason(str, Enum):
    """Why generation stopped (the strings LM Studio uses).

    ``CONTENT_FILTERED`` (a provider withheld the answer) is vlmkit's own; ``TOOL_CALLS``: the model
    stopped to have tools called (the result's ``tool_calls``).
    """

    EOS_FOUND = "eosFound"
    MAX_PREDICTED_TOKENS_REACHED = "maxPredictedTokensReached"
    STOP_STRING_FOUND = "stopStringFound"
    USER_STOPPED = "userStopped"
    CONTEXT_LENGTH_REACHED = "contextLengthReached"
    CONTENT_FILTERED = "contentFiltered"
    TOOL_CALLS = "toolCalls"
    FAILED = "failed"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class PredictionConfig:
    """Settings of one prediction. ``None`` means the engine's default.

    Every setting is checked here, whichever face it came through (a ``PredictionConfig`` built in
    code, a dict in LM Studio's camelCase, ``completion(...)`` keywords, a server request): this is
    the one validator. A bad value is an :class:`~vlmkit.errors.InvalidSettingError` whose
    ``location`` is the setting's name. Ranges are OpenAI's where OpenAI has the setting
    (``max_tokens`` at least 1, penalties between -2 and 2).

    ``detail`` bounds what an image may cost: ``"low"`` (a small rendering, fewest image tokens),
    ``"high"`` (the model's full resolution), ``"auto"`` (the default: a medium bound), or an int,
    the most image tokens one image may take. ``response_format`` is a JSON schema (a dict) or a
    pydantic model class; the reply is then constrained by a grammar so that it always parses.

    ``tools`` are the :class:`~vlmkit.tools.ToolDefinition` s the model may call; ``tool_choice``
    whether it may (``"auto"``), must (``"required"``, or a tool's name), or must not (``"none"``);
    ``parallel_tool_calls`` whether one turn may hold several calls. ``n`` asks for that many
    independent choices.
    """

    temperature: float | None = None
    max_tokens: int | None = None
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    repeat_penalty: float | None = None
    stop: Sequence[str] = ()
    seed: int | None = None
    detail: Detail | None = None
    response_format: Any = None
    cpu_threads: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    image_max_tokens: int | None = None
    image_min_tokens: int | None = None
    tools: Sequence[ToolDefinition] = ()
    tool_choice: ToolChoice | str | None = None
    parallel_tool_calls: bool | None = None
    n: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "stop", _stop_strings(self.stop))
        _number("temperature", self.temperature, "at least 0", lambda v: v >= 0)
        _number("top_p", self.top_p, "in (0, 1]", lambda v: 0 < v <= 1)
        _number("min_p", self.min_p, "in [0, 1]", lambda v: 0 <= v <= 1)
        _number("repeat_penalty", self.repeat_penalty, "at least 0", lambda v: v >= 0)
        for name in ("presence_penalty", "frequency_penalty"):
            _number(name, getattr(self, name), "between -2 and 2", lambda v: -2 <= v <= 2)
        _integer("max_tokens", self.max_tokens, 1)
        _integer("top_k", self.top_k, 0)
        _integer("seed", self.seed, None)
        _integer("cpu_threads", self.cpu_threads, 1)
        _integer("image_max_tokens", self.image_max_tokens, 1)
        _integer("image_min_tokens", self.image_min_tokens, 1)
        d = self.detail
        if d is not None and not (d in DETAIL_NAMES or (isinstance(d, int) and not isinstance(d, bool) and d >= 1)):
            raise setting_error(
                "detail", f"detail must be 'low', 'high', 'auto' or a positive image token count, not {d!r}"
            )
        low, cap = self.image_min_tokens, self.max_image_tokens
        if low is not None and cap is not None and low > cap:
            raise setting_error(
                "image_min_tokens",
                f"image_min_tokens={low} is more than the image token cap {cap} "
                f"({'image_max_tokens' if cap == self.image_max_tokens else 'detail'}); lower it or raise the cap",
            )
        object.__setattr__(self, "response_format", _response_format(self.response_format))
        _integer("n", self.n, 1)
        object.__setattr__(self, "tools", _tools(self.tools))
        object.__setattr__(self, "tool_choice", _tool_choice(self.tool_choice, self.tools))
        if self.parallel_tool_calls is not None and not isinstance(self.parallel_tool_calls, bool):
            raise setting_error(
                "parallel_tool_calls",
                f"parallel_tool_calls must be true or false, not {type_name(self.parallel_tool_calls)}",
            )

    @property
    def max_image_tokens(self) -> int | None:
        """The most tokens one image may take: ``image_max_tokens`` or an int ``detail``, the smaller."""
        caps = [c for c in (self.image_max_tokens, self.detail) if isinstance(c, int)]
        return min(caps) if caps else None

    def merged(self, other: PredictionConfig | None) -> PredictionConfig:
        """This config with every field that ``other`` sets (not ``None``/empty) taking precedence."""
        if other is None:
            return self
        changes = {
            f.name: getattr(other, f.name)
            for f in dataclasses.fields(other)
            if getattr(other, f.name) not in (None, ())
        }
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PredictionConfig:
        """Build from a dict; camelCase keys (``maxTokens``, as LM Studio's) are accepted too."""
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            name = snake_case(key)
            if name == "max_predicted_tokens":
                name = "max_tokens"
            elif name == "stop_strings":
                name = "stop"
            if name not in names:
                raise InvalidSettingError(f"unknown prediction setting {key!r}; known: {', '.join(sorted(names))}")
            kwargs[name] = value
        return cls(**kwargs)

    def json_schema(self) -> dict[str, Any] | None:
        """The JSON schema of ``response_format`` (a dict, or a pydantic model's schema)."""
        return json_schema_of(self.response_format)


def setting_error(name: str, message: str) -> InvalidSettingError:
    """The error for a bad setting: ``location`` names it (a server answers with it as ``param``)."""
    exc = InvalidSettingError(message)
    exc.location = name
    return exc


def _number(name: str, value: Any, rule: str, ok: Callable[[float], bool]) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise setting_error(name, f"{name} must be a number, not {type_name(value)}")
    if not ok(value):
        raise setting_error(name, f"{name} must be {rule}, not {value!r}")


def _integer(name: str, value: Any, minimum: int | None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise setting_error(name, f"{name} must be an integer, not {type_name(value)}")
    if minimum is not None and value < minimum:
        raise setting_error(name, f"{name} must be at least {minimum}, not {value!r}")


def _stop_strings(stop: Any) -> tuple[str, ...]:
    """``stop`` as a tuple of strings: one string, or any sequence of them (an empty string stops nothing)."""
    if stop is None:
        return ()
    strings = (stop,) if isinstance(stop, str) else tuple(stop) if isinstance(stop, (list, tuple)) else None
    if strings is None:
        raise setting_error("stop", f"stop must be a string or a list of strings, not {type_name(stop)}")
    for i, s in enumerate(strings):
        if not isinstance(s, str):
            raise setting_error("stop", f"stop must be a string or a list of strings; stop[{i}] is {type_name(s)}")
    return tuple(s for s in strings if s)


def _response_format(fmt: Any) -> Any:
    """``fmt`` checked: a JSON schema, one of OpenAI's forms, or a pydantic class; OpenAI's ``text`` is None."""
    if fmt is None:
        return None
    if isinstance(fmt, Mapping):
        kind = fmt.get("type")
        if kind == "text":
            return None
        if kind == "json_schema" and not isinstance(fmt.get("json_schema"), Mapping):
            raise setting_error(
                "response_format", "a 'json_schema' response_format needs a 'json_schema' object holding the schema"
            )
        return fmt
    if isinstance(fmt, bool):  # JSON Schema's boolean schemas: true accepts any value, false none
        if not fmt:
            raise setting_error("response_format", _FALSE_SCHEMA)
        return fmt
    if callable(getattr(fmt, "model_json_schema", None)):
        return fmt
    raise setting_error(
        "response_format",
        f"response_format must be a JSON schema dict or a pydantic model class, not {type_name(fmt)}",
    )


def _tools(tools: Any) -> tuple[ToolDefinition, ...]:
    if tools is None:
        return ()
    if isinstance(tools, (str, Mapping)) or not isinstance(tools, Sequence):
        raise tool_error(f"tools must be a list of tool definitions, not {type_name(tools)}", "tools")
    names: set[str] = set()
    for i, tool in enumerate(tools):
        if not isinstance(tool, ToolDefinition):
            raise tool_error(
                f"a tool must be a vlmkit.tools.ToolDefinition (or OpenAI's {{'type': 'function', ...}} where a "
                f"face reads OpenAI's form), not {type_name(tool)}",
                f"tools[{i}]",
            )
        if tool.name in names:
            raise tool_error(
                f"two tools are named {tool.name!r}; give each tool its own name", f"tools[{i}].function.name"
            )
        names.add(tool.name)
    return tuple(tools)


def _tool_choice(choice: Any, tools: Sequence[ToolDefinition]) -> ToolChoice | None:
    if choice is None:
        return None
    if isinstance(choice, str):
        if choice not in ("none", "auto", "required"):
            raise tool_error(
                f"tool_choice must be 'none', 'auto', 'required' or a named tool, not {choice!r}", "tool_choice"
            )
        choice = ToolChoice(choice)  # type: ignore[arg-type]  # checked on the line above
    if not isinstance(choice, ToolChoice):
        raise tool_error(
            f"tool_choice must be a string or a vlmkit.tools.ToolChoice, not {type_name(choice)}", "tool_choice"
        )
    if choice.mode != "none" and (choice.mode == "required" or choice.name) and not tools:
        raise tool_error("tool_choice asks for a tool call, but no tools are given; send tools with it", "tool_choice")
    if choice.name is not None and choice.name not in {t.name for t in tools}:
        known = ", ".join(repr(t.name) for t in tools)
        raise tool_error(
            f"tool_choice names the tool {choice.name!r}, which is not among the tools ({known})", "tool_choice"
        )
    return choice


_FALSE_SCHEMA = "response_format is the JSON schema false, which no reply can meet; give a schema a reply can meet"


def json_schema_of(response_format: Any) -> dict[str, Any] | None:
    """A JSON schema from a dict, an OpenAI-style ``{"type": "json_schema", ...}``, a pydantic class, or
    a boolean schema (``true`` is the empty schema, any value)."""
    if response_format is None:
        return None
    if response_format is True:
        return {}
    if response_format is False:
        raise setting_error("response_format", _FALSE_SCHEMA)
    if isinstance(response_format, Mapping):
        fmt = dict(response_format)
        if fmt.get("type") == "text":
            return None
        if fmt.get("type") == "json_schema" and isinstance(fmt.get("json_schema"), Mapping):
            inner = dict(fmt["json_schema"])
            return dict(inner.get("schema", {}))
        if fmt.get("type") == "json_object":
            return {"type": "object"}
        return fmt
    schema = getattr(response_format, "model_json_schema", None)
    if callable(schema):
        result = schema()
        if isinstance(result, dict):
            return result
    raise InvalidSettingError(
        f"response_format must be a JSON schema dict or a pydantic model class, got {type(response_format).__name__}"
    )


def parse_structured(result: PredictionResult, response_format: Any, model: str) -> Any:
    """The reply parsed as JSON (validated into the pydantic class when one was given).

    The one place a structured reply is parsed, whichever backend answered. A reply that does not
    parse or fit is a :class:`~vlmkit.errors.StructuredOutputError` saying why: cut at N tokens by
    the token limit or the context window (and which to raise), cut by a stop string, or a model
    that did not keep to the schema. A prediction the caller stopped has nothing parsed (``None``).
    """
    content, stats = result.content, result.stats
    try:
        validate = getattr(response_format, "model_validate_json", None)
        return validate(content) if callable(validate) else json.loads(content)
    except ValueError as exc:  # json.JSONDecodeError and pydantic.ValidationError are ValueErrors
        if stats.stop_reason is StopReason.USER_STOPPED:
            return None
        why = _CUT.get(stats.stop_reason)
        if why is not None:
            message = f"the structured reply of {model} {why.format(n=stats.predicted_tokens)}"
        else:
            message = f"{model} answered, but not in the requested format: {exc}"
        raise StructuredOutputError(message, content=content, stop_reason=stats.stop_reason.value) from exc


_CUT = {
    StopReason.MAX_PREDICTED_TOKENS_REACHED: "was cut at {n} tokens by the token limit before its JSON was "
    "complete; raise max_tokens (maxTokens), or leave it unset",
    StopReason.CONTEXT_LENGTH_REACHED: "was cut at {n} tokens when the context window was full, before its "
    "JSON was complete; load the model with a larger context_length, or send a shorter chat",
    StopReason.STOP_STRING_FOUND: "was cut at {n} tokens by a stop string before its JSON was complete; "
    "leave out stop strings that can occur inside the JSON",
}


@dataclass
class PredictionStats:
    """Counts and timings of one prediction.

    ``prompt_tokens`` counts every position of the prompt (text and image tokens);
    ``cached_prompt_tokens`` of them were already evaluated (reused from an earlier turn).
    ``images_encoded`` images went through the vision encoder; ``images_reused`` came from the
    cache of encoded images or were already in the evaluated prefix. ``images_preprocessed`` were
    rendered and preprocessed for the model (an image kept from an earlier turn is not).
    ``image_tokens`` counts the prompt's image tokens (within its token budgets), and
    ``image_sizes`` gives each image's size as sent to the encoder (``"WxH"``, in prompt order).
    """

    stop_reason: StopReason = StopReason.FAILED
    prompt_tokens: int = 0
    predicted_tokens: int = 0
    cached_prompt_tokens: int = 0
    images_encoded: int = 0
    images_reused: int = 0
    images_preprocessed: int = 0
    image_tokens: int = 0
    image_sizes: list[str] = field(default_factory=list)
    time_to_first_token_sec: float | None = None
    tokens_per_second: float | None = None
    total_time_sec: float = 0.0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.predicted_tokens

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["stop_reason"] = self.stop_reason.value
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PredictionStats:
        """Read back :meth:`to_dict` (unknown keys are ignored; an unknown stop reason reads as ``FAILED``)."""
        stats = cls(**{k: v for k, v in data.items() if k in _STATS_FIELDS and k != "stop_reason"})
        try:
            stats.stop_reason = StopReason(data.get("stop_reason", StopReason.FAILED))
        except ValueError:
            stats.stop_reason = StopReason.FAILED
        return stats


@dataclass(frozen=True)
class PreparedImageInfo:
    """What ``model.prepare(image)`` did: the image's tokens and size (``"WxH"``) at its budget, and
    whether its embeddings were cached already (``already_cached``: nothing was encoded now)."""

    image_tokens: int
    image_size: str
    already_cached: bool


@dataclass(frozen=True)
class ModelInfo:
    """What is known about a loaded model (read from its GGUF metadata)."""

    key: str
    path: str
    mmproj_path: str | None
    architecture: str
    context_length: int
    vision: bool
    size_bytes: int
    projector_type: str | None = None
    n_params: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelInfo:
        """Read back :meth:`to_dict` (unknown keys are ignored, so newer servers' additions are harmless)."""
        return cls(**{k: v for k, v in data.items() if k in _INFO_FIELDS})


_STATS_FIELDS = frozenset(f.name for f in dataclasses.fields(PredictionStats))
_INFO_FIELDS = frozenset(f.name for f in dataclasses.fields(ModelInfo))


@dataclass(frozen=True)
class PredictionFragment:
    """A piece of streamed output: ``content`` is the text decoded since the previous fragment."""

    content: str
    tokens_count: int = 1


@dataclass
class PredictionResult:
    """The outcome of a prediction: the text, what it parsed to, stats and the model it came from."""

    content: str
    stats: PredictionStats
    model_info: ModelInfo | None = None
    parsed: Any = None
    fragments: list[PredictionFragment] = field(default_factory=list, repr=False)
    tool_calls: list[ToolCall] = field(default_factory=list)
    """The tools the model called (its stop reason is then ``TOOL_CALLS``)."""
    sent_images: list[SentImage] = field(default_factory=list, repr=False)
    """The prompt's images, in order, each with what vlmkit did to it before the model saw it."""

    def __str__(self) -> str:
        return self.content

    @property
    def boxes(self) -> list[Box | Point]:
        """The boxes and points of the answer, in the pixels of the image asked about (upright, full size).

        For a prompt with one image; with several, map the answer to the one it is about with
        ``vlmkit.grounding.parse(result.content, result.sent_images[i], result.model_info)``.
        """
        if len(self.sent_images) != 1:
            how = "it had none" if not self.sent_images else f"it had {len(self.sent_images)}"
            raise GroundingError(
                f"prediction.boxes needs a prompt with exactly one image ({how}); for several, call "
                "vlmkit.grounding.parse(result.content, result.sent_images[i], result.model_info)"
            )
        if self.model_info is None:
            raise GroundingError("prediction.boxes needs the model's info, and this prediction has none")
        return parse(self.content, self.sent_images[0], self.model_info)


def snake_case(name: str) -> str:
    """``maxTokens`` -> ``max_tokens``: LM Studio's camelCase keys as Python names (settings and load options)."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()
