"""Providers: one call for every vision model, local or cloud, LiteLLM-style.

``completion(model="provider/name", messages=[...])`` sends OpenAI-format messages to OpenAI, the
OpenAI-compatible family (Azure OpenAI, xAI, Mistral, Groq, OpenRouter, DeepSeek, Together, LM Studio,
llama.cpp server, vLLM), Anthropic, Gemini, Vertex AI, AWS Bedrock or Ollama, rendering every image
to what that provider accepts, and answers in OpenAI's ``ChatCompletion`` shape.
"""

from vlmkit.providers.call import PROVIDER_OPTIONS, acompletion, completion, sent_images
from vlmkit.providers.capabilities import supports_vision
from vlmkit.providers.registry import ROUTES
from vlmkit.providers.response import ChatCompletion, ChatCompletionChunk, Usage
from vlmkit.providers.streams import AsyncCompletionStream, CompletionStream
from vlmkit.providers.transport import RetryPolicy, Transport

__all__ = [
    "PROVIDER_OPTIONS",
    "ROUTES",
    "AsyncCompletionStream",
    "ChatCompletion",
    "ChatCompletionChunk",
    "CompletionStream",
    "RetryPolicy",
    "Transport",
    "Usage",
    "acompletion",
    "completion",
    "sent_images",
    "supports_vision",
]
