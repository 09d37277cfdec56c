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
# Providers that answer one choice per request (Anthropic has no `n`; Gemini's candidateCount is not mapped).
ONE_CHOICE = frozenset({"anthropic", "gemini"})


def serves_choices(parsed: ParsedRequest, spec: ModelSpec) -> bool:
    """Whether `spec` can generate the request's choices (`n` > 1 needs an OpenAI-shaped provider)."""
    return parsed.generated == 1 or spec.provider not in ONE_CHOICE


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
    if not serves_choices(parsed, spec):
        raise InvalidRequest(
            f"'{spec.name}' ({spec.provider}) answers one choice per request; n must be 1",
            param="n",
            code="unsupported_value",
        )
    if parsed.prompt_tokens > spec.context_window:
        raise InvalidRequest(
            f"This model's maximum context length is {spec.context_window} tokens; "
            f"the request has about {parsed.prompt_tokens}.",
            param="messages",
            code="context_length_exceeded",
        )
    return spec


def _input_price(spec: ModelSpec) -> int:
    # A prompt written to the cache is billed at the cache-write price (Anthropic's is above the input's).
    return max(spec.input_usd_micros_per_mtok, spec.cache_write_usd_micros_per_mtok or 0)


def admit_request(
    parsed: ParsedRequest,
    chain: list[ModelSpec],
    api_key: str,
    request_id: str,
    gov: GovernanceHeaders,
    reservation_id: str | None = None,
) -> AdmitRequest:
    """Quota's one question: authenticate, rate-limit and reserve for this request (embeddings output 1).

    `chain` is the deployment and the fallbacks that may answer: the reservation covers the most a member
    of it can bill (its largest prompt estimate, its highest prices), and the output budget of every
    generated choice.
    """
    spec = chain[0]
    max_out: int | None = 1
    if parsed.kind == "embedding":
        model_max, min_out = 1, 1
    else:
        per_choice = parsed.max_output_tokens
        max_out = per_choice * parsed.generated if per_choice else None
        model_max = spec.max_output_tokens * parsed.generated
        min_out = min(16, per_choice or 16) * parsed.generated
    return AdmitRequest(
        api_key=api_key,
        request_id=request_id,
        model=spec.name,
        provider=spec.provider,
        prompt_tokens=max(parsed.estimated_prompt(s.provider, s.upstream_model) for s in chain),
        max_output_tokens=max_out,
        model_max_output_tokens=model_max,
        min_output_tokens=min_out,
        input_usd_micros_per_mtok=max(_input_price(s) for s in chain),
        output_usd_micros_per_mtok=max(s.output_usd_micros_per_mtok for s in chain),
        session_id=gov.session_id,
        priority=gov.priority,
        privacy=gov.privacy,
        reservation_id=reservation_id,
    )


def upstream_body(parsed: ParsedRequest, spec: ModelSpec, granted_output_tokens: int) -> dict[str, Any]:
    """The request as `spec`'s deployment is sent it: its upstream model, output capped at the grant."""
    body = dict(parsed.body)
    body["model"] = spec.upstream_model
    if parsed.kind != "embedding":
        # The grant covers every generated choice; each is capped at its share.
        cap = min(granted_output_tokens // parsed.generated, spec.max_output_tokens)
        field = parsed.max_tokens_field
        if parsed.max_output_tokens is None and parsed.kind == "chat":
            # The client set no limit; OpenAI's reasoning models refuse the legacy max_tokens.
            field = "max_completion_tokens" if spec.provider in ("openai", "azure") else "max_tokens"
        body[field] = cap
    return body
