"""One adapter per provider kind, all sharing the upstream connection pool."""

from __future__ import annotations

from lt_gateway.providers.anthropic import AnthropicProvider
from lt_gateway.providers.base import Provider
from lt_gateway.providers.gemini import GeminiProvider
from lt_gateway.providers.http import UpstreamHTTP
from lt_gateway.providers.mock import MockProvider
from lt_gateway.providers.openai import OpenAIProvider


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
