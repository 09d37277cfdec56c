"""The provider interface."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

from lt_gateway.models import ModelSpec


@dataclass(frozen=True, slots=True)
class Usage:
    """Provider-reported token usage."""

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class Completion:
    """A non-streamed answer in OpenAI's `chat.completion` shape, with its usage."""

    body: dict[str, Any]
    usage: Usage


@dataclass(frozen=True, slots=True)
class StreamChunk:
    """One `chat.completion.chunk`; `completion_tokens` counts its content when the upstream reports none."""

    body: dict[str, Any]
    completion_tokens: int = 0
    usage: Usage | None = None


class Provider(Protocol):
    """An upstream LLM API."""

    async def complete(self, spec: ModelSpec, body: dict[str, Any]) -> Completion:
        """Answer a non-streamed chat request."""
        ...

    def stream(self, spec: ModelSpec, body: dict[str, Any]) -> AsyncIterator[StreamChunk]:
        """Answer a streamed chat request chunk by chunk; the last chunk carries usage when known."""
        ...
