"""supports_vision answers from vlmkit's own capability table."""

from __future__ import annotations

import json
from importlib.resources import files

import pytest

from vlmkit import supports_vision


def test_the_required_answers() -> None:
    assert supports_vision(model="openai/gpt-4-vision-preview") == True  # noqa: E712
    assert supports_vision(model="vertex_ai/gemini-1.0-pro-vision") == True  # noqa: E712
    assert supports_vision(model="openai/gpt-3.5-turbo") == False  # noqa: E712
    assert supports_vision(model="xai/grok-2-vision-latest") == True  # noqa: E712
    assert supports_vision(model="xai/grok-2-latest") == False  # noqa: E712


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("openai/gpt-4o", True),
        ("openai/gpt-4o-2024-08-06", True),
        ("openai/gpt-4.1-mini", True),
        ("openai/o3-mini", False),
        ("openai/gpt-4o-audio-preview", False),
        ("azure/gpt-4o", True),
        ("gpt-4o", True),
        ("anthropic/claude-3-7-sonnet-latest", True),
        ("anthropic/claude-2.1", False),
        ("gemini/gemini-2.0-flash", True),
        ("gemini/gemini-pro", False),
        ("vertex_ai/claude-3-5-sonnet@20240620", True),
        ("bedrock/us.anthropic.claude-3-7-sonnet-20250219-v1:0", True),
        ("bedrock/amazon.nova-micro-v1:0", False),
        ("bedrock/amazon.nova-pro-v1:0", True),
        ("mistral/pixtral-large-latest", True),
        ("mistral/open-mistral-nemo", False),
        ("groq/meta-llama/llama-4-scout-17b-16e-instruct", True),
        ("deepseek/deepseek-chat", False),
        ("openrouter/anthropic/claude-3.5-sonnet", True),
        ("openrouter/openai/gpt-3.5-turbo", False),
        ("ollama/llava:13b", True),
        ("ollama/gemma3:1b", False),
        ("ollama/llama3.1", False),
        ("lm_studio/qwen2-vl-2b-instruct", True),
        ("openai/never-heard-of-it", False),
        ("nope/x", False),
    ],
)
def test_table(model: str, expected: bool) -> None:
    assert supports_vision(model=model) is expected


def test_custom_llm_provider_argument() -> None:
    assert supports_vision("grok-2-vision-latest", custom_llm_provider="xai") is True


def test_the_table_is_a_shipped_data_file() -> None:
    data = json.loads(files("vlmkit.providers").joinpath("capabilities.json").read_text())
    assert {"openai", "anthropic", "gemini", "vertex_ai", "xai", "bedrock", "ollama"} <= set(data["providers"])
