"""One admitted request on its way through a provider, and what it costs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from leaky_common.contracts import AdmitResponse
from lt_gateway.domain.headers import ratelimit_headers
from lt_gateway.domain.models import ModelSpec
from lt_gateway.domain.pricing import format_usd
from lt_gateway.domain.requests import ParsedRequest
from lt_gateway.domain.usage import Usage


@dataclass(slots=True)
class Call:
    """One admitted request on its way through a provider."""

    parsed: ParsedRequest
    # The deployment serving the request: the requested model's, or the fallback that answered.
    spec: ModelSpec
    admitted: AdmitResponse
    request_id: str
    session_id: str | None
    started: float
    estimated_cost: int

    def cost(self, usage: Usage) -> int:
        """What `usage` costs at the serving deployment's prices."""
        return self.spec.cost_usd_micros(
            usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens, usage.cache_write_tokens
        )

    def cost_field(self, cost: int) -> dict[str, Any]:
        """The `leaky_tokens` object added to answers: the cost and which quota paid."""
        return {
            "cost_usd": format_usd(cost),
            "cost_usd_micros": cost,
            "quota_source": self.admitted.quota_source,
        }

    def headers(self) -> dict[str, str]:
        """The response headers every admitted request gets: id, quota source, estimate, rate limits."""
        return {
            "x-request-id": self.request_id,
            "x-leaky-tokens-quota-source": self.admitted.quota_source,
            "x-leaky-tokens-cost-usd-estimated": format_usd(self.estimated_cost),
            **ratelimit_headers(self.admitted.ratelimit),
        }


def counted(prompt: Usage, completion_tokens: int) -> Usage:
    """Usage of a stream the upstream reported no final usage for: the prompt side as known, plus what was
    streamed (counted with the tokenizer)."""
    return Usage(prompt.prompt_tokens, completion_tokens, prompt.cached_tokens, prompt.cache_write_tokens)
