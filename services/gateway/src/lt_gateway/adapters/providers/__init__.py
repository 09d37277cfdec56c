"""Provider adapters: each turns an OpenAI request into an upstream call and reports exact usage."""

from lt_gateway.adapters.providers.base import Provider
from lt_gateway.domain.usage import Completion, StreamChunk, Usage

__all__ = ["Completion", "Provider", "StreamChunk", "Usage"]
