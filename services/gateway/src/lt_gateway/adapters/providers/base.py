"""The provider interface (every adapter implements it) and the base of chat-only providers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol

from leaky_common.errors import InvalidRequest
from lt_gateway.domain.models import ModelSpec
from lt_gateway.domain.usage import Completion, StreamChunk, Usage


class Provider(Protocol):
    """An upstream LLM API. Failures raise `leaky_common.errors.ServiceError`s (see `adapters.providers.http`)."""

    async def complete(self, spec: ModelSpec, body: dict[str, Any]) -> Completion:
        """Answer a non-streamed chat request."""
        ...

    def stream(self, spec: ModelSpec, body: dict[str, Any]) -> AsyncIterator[StreamChunk]:
        """Answer a streamed chat request chunk by chunk; the last chunk carries usage when known."""
        ...

    async def text_complete(self, spec: ModelSpec, body: dict[str, Any]) -> Completion:
        """Answer a non-streamed legacy `/v1/completions` request."""
        ...

    def text_stream(self, spec: ModelSpec, body: dict[str, Any]) -> AsyncIterator[StreamChunk]:
        """Answer a streamed legacy `/v1/completions` request (`text_completion` chunks)."""
        ...

    async def embed(self, spec: ModelSpec, body: dict[str, Any]) -> Completion:
        """Answer `/v1/embeddings`."""
        ...


def unsupported(spec: ModelSpec, what: str) -> InvalidRequest:
    """The 400 for an endpoint a provider does not offer."""
    return InvalidRequest(
        f"model '{spec.name}' ({spec.provider}) does not support {what}",
        param="model",
        code="unsupported_model",
    )


class ChatOnly:
    """Base for providers that only chat (Anthropic, Gemini): completions and embeddings are 400s."""

    async def text_complete(self, spec: ModelSpec, body: dict[str, Any]) -> Completion:
        """This provider has no legacy completions endpoint."""
        raise unsupported(spec, "/v1/completions")

    async def text_stream(self, spec: ModelSpec, body: dict[str, Any]) -> AsyncIterator[StreamChunk]:
        """This provider has no legacy completions endpoint."""
        raise unsupported(spec, "/v1/completions")
        yield  # an async generator, so the error surfaces when the stream is opened

    async def embed(self, spec: ModelSpec, body: dict[str, Any]) -> Completion:
        """Embeddings are not offered through the gateway for this provider."""
        raise unsupported(spec, "/v1/embeddings")


__all__ = ["ChatOnly", "Completion", "Provider", "StreamChunk", "Usage", "unsupported"]
