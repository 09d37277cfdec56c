"""What is checked before quota is asked, what quota is asked for, and what the upstream is sent."""

from __future__ import annotations

from typing import Any

from leaky_common.contracts import AdmitRequest
from leaky_common.errors import InvalidRequest, NotFound
from lt_gateway.domain.models import ModelSpec
from lt_gateway.domain.requests import GovernanceHeaders, ParsedRequest

_ENDPOINT = {"chat": "/v1/chat/completions", "completion": "/v1/completions", "embedding": "/v1/embeddings"}
# Which model modes each endpoint serves (OpenAI-compatible servers answer legacy completions for chat models).
_SERVES: dict[str, frozenset[str]] = {
    "chat": frozenset({"chat"}),
    "completion": frozenset({"chat", "completion"}),
    "embedding": frozenset({"embedding"}),
}


def servable(parsed: ParsedRequest, spec: ModelSpec | None) -> ModelSpec:
    """The model the request names, if it exists, serves this endpoint and fits the prompt (404/400 else)."""
    if spec is None:
        raise NotFound(f"The model '{parsed.model}' does not exist", param="model", code="model_not_found")
    if spec.mode not in _SERVES[parsed.kind]:
        raise InvalidRequest(
            f"'{spec.name}' is a {spec.mode} model; call {_ENDPOINT[spec.mode]}",
            param="model",
            code="unsupported_model",
        )
    if parsed.prompt_tokens > spec.context_window:
        raise InvalidRequest(
            f"This model's maximum context length is {spec.context_window} tokens; "
            f"the request has about {parsed.prompt_tokens}.",
            param="messages",
            code="context_length_exceeded",
        )
    return spec


def admit_request(
    parsed: ParsedRequest, spec: ModelSpec, api_key: str, request_id: str, gov: GovernanceHeaders
) -> AdmitRequest:
    """Quota's one question: authenticate, rate-limit and reserve for this request (embeddings output 1)."""
    embedding = parsed.kind == "embedding"
    return AdmitRequest(
        api_key=api_key,
        request_id=request_id,
        model=spec.name,
        provider=spec.provider,
        prompt_tokens=parsed.prompt_tokens,
        max_output_tokens=1 if embedding else parsed.max_output_tokens,
        model_max_output_tokens=1 if embedding else spec.max_output_tokens,
        min_output_tokens=1 if embedding else min(16, parsed.max_output_tokens or 16),
        input_usd_micros_per_mtok=spec.input_usd_micros_per_mtok,
        output_usd_micros_per_mtok=spec.output_usd_micros_per_mtok,
        session_id=gov.session_id,
        priority=gov.priority,
        privacy=gov.privacy,
    )


def upstream_body(parsed: ParsedRequest, spec: ModelSpec, granted_output_tokens: int) -> dict[str, Any]:
    """The request as `spec`'s deployment is sent it: its upstream model, output capped at the grant."""
    body = dict(parsed.body)
    body["model"] = spec.upstream_model
    if parsed.kind != "embedding":
        cap = min(granted_output_tokens, spec.max_output_tokens)
        field = parsed.max_tokens_field
        if parsed.max_output_tokens is None and parsed.kind == "chat":
            # The client set no limit; OpenAI's reasoning models refuse the legacy max_tokens.
            field = "max_completion_tokens" if spec.provider in ("openai", "azure") else "max_tokens"
        body[field] = cap
    return body
