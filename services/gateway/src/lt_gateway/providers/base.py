"""The provider interface and the values adapters return."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

from leaky_common.errors import InvalidRequest
from lt_gateway.models import ModelSpec


@dataclass(frozen=True, slots=True)
class Usage:
    """Provider-reported token usage. `prompt_tokens` includes cached and cache-written prompt tokens."""

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0
    cache_write_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens

    def openai(self) -> dict[str, Any]:
        """The `usage` object in OpenAI's shape."""
        out: dict[str, Any] = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }
        if self.cached_tokens:
            out["prompt_tokens_details"] = {"cached_tokens": self.cached_tokens}
        return out


@dataclass(frozen=True, slots=True)
class Completion:
    """A non-streamed answer in OpenAI's shape (`chat.completion`, `text_completion` or an embedding list)."""

    body: dict[str, Any]
    usage: Usage


@dataclass(slots=True)
class StreamChunk:
    """One `chat.completion.chunk`; `completion_tokens` counts its content for when no usage comes.

    `usage` is the final usage (on the last chunk). `prompt_usage` is the prompt side when a provider reports
    it up front (Anthropic's message_start), so a stream cut short is charged the exact prompt.
    """

    body: dict[str, Any]
    completion_tokens: int = 0
    usage: Usage | None = None
    prompt_usage: Usage | None = None


class Provider(Protocol):
    """An upstream LLM API. Failures raise `leaky_common.errors.ServiceError`s (see `providers.http`)."""

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
