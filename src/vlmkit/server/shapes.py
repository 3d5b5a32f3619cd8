"""OpenAI's ``chat.completion`` and ``chat.completion.chunk`` objects for answers of the local engine.

Besides OpenAI's fields, a completion carries ``stats`` (the engine's stop reason, token counts,
time to first token, tokens per second) and ``model_info``, which OpenAI clients ignore and
vlmkit's remote SDK backend reads.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from vlmkit.prediction import PredictionResult, PredictionStats, StopReason

_FINISH = {
    StopReason.EOS_FOUND: "stop",
    StopReason.STOP_STRING_FOUND: "stop",
    StopReason.USER_STOPPED: "stop",
    StopReason.MAX_PREDICTED_TOKENS_REACHED: "length",
    StopReason.CONTEXT_LENGTH_REACHED: "length",
    StopReason.FAILED: "stop",
}


def completion_id() -> str:
    return f"chatcmpl-{secrets.token_hex(12)}"


def finish_reason(stats: PredictionStats) -> str:
    return _FINISH.get(stats.stop_reason, "stop")


def usage(stats: PredictionStats) -> dict[str, Any]:
    return {
        "prompt_tokens": stats.prompt_tokens,
        "completion_tokens": stats.predicted_tokens,
        "total_tokens": stats.prompt_tokens + stats.predicted_tokens,
        "prompt_tokens_details": {"cached_tokens": stats.cached_prompt_tokens},
    }


def completion(result: PredictionResult, model: str, cid: str | None = None) -> dict[str, Any]:
    return {
        "id": cid or completion_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": None,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": result.content, "refusal": None},
                "logprobs": None,
                "finish_reason": finish_reason(result.stats),
            }
        ],
        "usage": usage(result.stats),
        "stats": result.stats.to_dict(),
        "model_info": result.model_info.to_dict() if result.model_info is not None else None,
    }


def chunk(
    cid: str,
    model: str,
    created: int,
    *,
    content: str | None = None,
    role: str | None = None,
    finish: str | None = None,
    choices: bool = True,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    delta: dict[str, Any] = {}
    if role is not None:
        delta["role"] = role
    if content is not None:
        delta["content"] = content
    out: dict[str, Any] = {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}] if choices else [],
    }
    if extra:
        out.update(extra)
    return out
