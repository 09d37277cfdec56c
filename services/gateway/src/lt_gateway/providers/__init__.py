"""Provider adapters: each turns an OpenAI chat request into an upstream call and reports exact usage."""

from lt_gateway.providers.base import Completion, Provider, StreamChunk, Usage

__all__ = ["Completion", "Provider", "StreamChunk", "Usage"]
