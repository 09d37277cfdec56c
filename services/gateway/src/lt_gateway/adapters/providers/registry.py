"""One adapter per provider kind, all sharing the upstream connection pool."""

from __future__ import annotations

from lt_gateway.adapters.providers.anthropic import AnthropicProvider
from lt_gateway.adapters.providers.base import Provider
from lt_gateway.adapters.providers.gemini import GeminiProvider
from lt_gateway.adapters.providers.http import UpstreamHTTP
from lt_gateway.adapters.providers.mock import MockProvider
from lt_gateway.adapters.providers.openai import OpenAIProvider


def build_providers(http: UpstreamHTTP) -> dict[str, Provider]:
    """The adapters keyed by `ModelSpec.provider`."""
    openai = OpenAIProvider(http)
    return {
        "mock": MockProvider(),
        "openai": openai,
        "qwen": openai,
        "openai_compatible": openai,
        "azure": OpenAIProvider(http, azure=True),
        "anthropic": AnthropicProvider(http),
        "gemini": GeminiProvider(http),
    }
