"""Typed request and response bodies of the public API (OpenAI's shapes, plus the gateway's `leaky_tokens`).

The governed endpoints pass provider answers through without validating them against these models (the hot
path renders its own JSON); the models say what comes back. Providers may add fields: extra ones are allowed.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from lt_gateway.domain.models import ModelSpec


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class ChatCompletionRequest(_Open):
    """`POST /v1/chat/completions`; fields the gateway does not govern go to the provider untouched."""

    model: str
    messages: list[dict[str, Any]] = Field(min_length=1)
    stream: bool = False
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)


class CompletionRequest(_Open):
    """`POST /v1/completions` (legacy text completions)."""

    model: str
    prompt: str | list[Any]
    stream: bool = False
    max_tokens: int | None = Field(default=None, ge=1)


class EmbeddingRequest(_Open):
    """`POST /v1/embeddings`."""

    model: str
    input: str | list[Any]


class TokenUsage(_Open):
    """OpenAI's `usage` (embeddings report prompt tokens only)."""

    prompt_tokens: int
    completion_tokens: int | None = None
    total_tokens: int
    prompt_tokens_details: dict[str, int] | None = None


class Cost(BaseModel):
    """`leaky_tokens`: what the request cost and which quota paid for it."""

    cost_usd: str
    cost_usd_micros: int
    quota_source: str


class AssistantMessage(_Open):
    """The answer of a chat completion."""

    role: str
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[dict[str, Any]] | None = None


class ChatChoice(_Open):
    """One choice of a chat completion (the gateway serves n=1)."""

    index: int
    message: AssistantMessage
    logprobs: Any = None
    finish_reason: str | None = None


class ChatCompletion(_Open):
    """A `chat.completion`; streamed, a sequence of `chat.completion.chunk` events ending in usage and cost."""

    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: TokenUsage
    leaky_tokens: Cost


class TextChoice(_Open):
    """One choice of a text completion."""

    index: int
    text: str
    logprobs: Any = None
    finish_reason: str | None = None


class TextCompletion(_Open):
    """A `text_completion`."""

    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[TextChoice]
    usage: TokenUsage
    leaky_tokens: Cost


class Embedding(_Open):
    """One input's vector."""

    object: Literal["embedding"]
    index: int
    embedding: list[float] | str


class EmbeddingList(_Open):
    """The embeddings of `/v1/embeddings`, one per input."""

    object: Literal["list"]
    data: list[Embedding]
    model: str
    usage: TokenUsage
    leaky_tokens: Cost


class ModelLimits(BaseModel):
    """What the gateway knows about a model: its mode, limits and prices (micro-dollars per million tokens)."""

    mode: str
    max_output_tokens: int
    context_window: int
    input_usd_micros_per_mtok: int
    output_usd_micros_per_mtok: int


class ModelCard(BaseModel):
    """An OpenAI model object, plus `leaky_tokens`."""

    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str
    leaky_tokens: ModelLimits

    @classmethod
    def of(cls, spec: ModelSpec) -> ModelCard:
        """The card of a routable model."""
        return cls(
            id=spec.name,
            owned_by=spec.provider,
            leaky_tokens=ModelLimits(
                mode=spec.mode,
                max_output_tokens=spec.max_output_tokens,
                context_window=spec.context_window,
                input_usd_micros_per_mtok=spec.input_usd_micros_per_mtok,
                output_usd_micros_per_mtok=spec.output_usd_micros_per_mtok,
            ),
        )


class ModelList(BaseModel):
    """The models this key may call."""

    object: Literal["list"] = "list"
    data: list[ModelCard]


def request_body(model: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` documenting a JSON body the endpoint reads itself (FastAPI does not parse it)."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }
