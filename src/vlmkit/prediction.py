"""What a prediction is asked to do, and what it gives back: shared by the engine, the SDK and the server.

This module holds plain data only (no engine, no I/O), so every layer can import it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Literal

from vlmkit.errors import InvalidSettingError, StructuredOutputError

Detail = Literal["low", "high", "auto"] | int

DETAIL_NAMES = ("low", "high", "auto")


class StopReason(str, Enum):
    """Why generation stopped (the strings LM Studio uses)."""

    EOS_FOUND = "eosFound"
    MAX_PREDICTED_TOKENS_REACHED = "maxPredictedTokensReached"
    STOP_STRING_FOUND = "stopStringFound"
    USER_STOPPED = "userStopped"
    CONTEXT_LENGTH_REACHED = "contextLengthReached"
    FAILED = "failed"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class PredictionConfig:
    """Settings of one prediction. ``None`` means the engine's default.

    ``detail`` bounds what an image may cost: ``"low"`` (a small rendering, fewest image tokens),
    ``"high"`` (the model's full resolution), ``"auto"`` (the default: a medium bound), or an int,
    the most image tokens one image may take. ``response_format`` is a JSON schema (a dict) or a
    pydantic model class; the reply is then constrained by a grammar so that it always parses.
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

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        else:
            object.__setattr__(self, "stop", tuple(self.stop))
        if self.temperature is not None and self.temperature < 0:
            raise InvalidSettingError(f"temperature must be >= 0, got {self.temperature}")
        if self.max_tokens is not None and self.max_tokens < 0:
            raise InvalidSettingError(f"max_tokens must be >= 0 (or None for no limit), got {self.max_tokens}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise InvalidSettingError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.min_p is not None and not 0 <= self.min_p <= 1:
            raise InvalidSettingError(f"min_p must be in [0, 1], got {self.min_p}")
        if self.cpu_threads is not None and self.cpu_threads < 1:
            raise InvalidSettingError(f"cpu_threads must be >= 1, got {self.cpu_threads}")
        d = self.detail
        if d is not None and not (
            (isinstance(d, str) and d in DETAIL_NAMES) or (isinstance(d, int) and not isinstance(d, bool))
        ):
            raise InvalidSettingError(f"detail must be 'low', 'high', 'auto' or a positive token count, got {d!r}")
        if isinstance(d, int) and d < 1:
            raise InvalidSettingError(f"detail as a token cap must be >= 1, got {d}")

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
            name = _snake(key)
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


def json_schema_of(response_format: Any) -> dict[str, Any] | None:
    """A JSON schema from a dict, an OpenAI-style ``{"type": "json_schema", ...}`` or a pydantic class."""
    if response_format is None:
        return None
    if isinstance(response_format, Mapping):
        fmt = dict(response_format)
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
    cache of encoded images or were already in the evaluated prefix.
    """

    stop_reason: StopReason = StopReason.FAILED
    prompt_tokens: int = 0
    predicted_tokens: int = 0
    cached_prompt_tokens: int = 0
    images_encoded: int = 0
    images_reused: int = 0
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

    def __str__(self) -> str:
        return self.content


def _snake(name: str) -> str:
    out = []
    for ch in name:
        if ch.isupper():
            out.append("_")
            out.append(ch.lower())
        else:
            out.append(ch)
    return "".join(out)
