"""Gateway-specific Prometheus metrics: provider calls, tokens and cost.

Labels are bounded: `model` is the routing file's model name (a request naming another never gets this far),
`provider` the routing file's provider, `quota_source` one of quota's balancer sources (else `other`), and
`status` an HTTP status code or `ok`. Children are cached per deployment: a label lookup hashes and locks,
about a microsecond, on the hot path.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from prometheus_client import Counter, Histogram

from leaky_common.metrics import fold

__all__ = [
    "COST_USD",
    "PROVIDER_DURATION",
    "PROVIDER_ERRORS",
    "QUOTA_SOURCES",
    "TIME_TO_FIRST_TOKEN",
    "TOKENS",
    "ProviderMetrics",
    "UsageMetrics",
    "provider_metrics",
    "status_label",
    "usage_metrics",
]

QUOTA_SOURCES = frozenset({"personal", "priority_bypass", "vacation_share", "team", "org"})

TOKENS = Counter(
    "lt_gateway_tokens_total",
    "Tokens through the gateway (kind: prompt or completion)",
    ["model", "provider", "quota_source", "kind"],
)
COST_USD = Counter(
    "lt_gateway_cost_usd_total",
    "Cost of the requests served, in US dollars",
    ["model", "provider", "quota_source"],
)
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120)
PROVIDER_DURATION = Histogram(
    "lt_gateway_provider_request_duration_seconds",
    "A provider call's duration: to the whole answer, or to the first chunk of a stream (status ok or the HTTP "
    "status the gateway made of its failure)",
    ["provider", "model", "status"],
    buckets=_LATENCY_BUCKETS,
)
TIME_TO_FIRST_TOKEN = Histogram(
    "lt_gateway_provider_time_to_first_token_seconds",
    "From a streamed call's start to its first chunk",
    ["provider", "model"],
    buckets=_LATENCY_BUCKETS,
)
PROVIDER_ERRORS = Counter(
    "lt_gateway_provider_errors_total",
    "Provider calls that failed (fallbacks included), by the HTTP status the gateway made of the failure",
    ["provider", "model", "status"],
)


def status_label(status: int) -> str:
    """An HTTP status as a label value (anything outside 100-599 is `other`)."""
    return str(status) if 100 <= status <= 599 else "other"


@dataclass(frozen=True)
class ProviderMetrics:
    """One deployment's provider-call children (successful calls; failures look theirs up)."""

    model: str
    provider: str
    ok: Any
    first_token: Any

    def failed(self, status: int, seconds: float) -> None:
        """A failed call: its error and its duration under the status."""
        label = status_label(status)
        PROVIDER_ERRORS.labels(self.provider, self.model, label).inc()
        PROVIDER_DURATION.labels(self.provider, self.model, label).observe(seconds)


@lru_cache(maxsize=1024)
def provider_metrics(model: str, provider: str) -> ProviderMetrics:
    """The cached children of a deployment (`model`: a routing-file name; the table bounds the cache)."""
    for status in ("500", "502", "503", "504"):  # the usual failures exist (at 0) from the first call on
        PROVIDER_ERRORS.labels(provider, model, status)
    return ProviderMetrics(
        model,
        provider,
        PROVIDER_DURATION.labels(provider, model, "ok"),
        TIME_TO_FIRST_TOKEN.labels(provider, model),
    )


@dataclass(frozen=True)
class UsageMetrics:
    """Tokens and cost children of one (model, provider, quota source)."""

    prompt: Any
    completion: Any
    cost: Any

    def add(self, prompt_tokens: int, completion_tokens: int, cost_usd_micros: int) -> None:
        """Count one request's usage."""
        self.prompt.inc(prompt_tokens)
        self.completion.inc(completion_tokens)
        self.cost.inc(cost_usd_micros / 1_000_000)


@lru_cache(maxsize=1024)
def usage_metrics(model: str, provider: str, quota_source: str) -> UsageMetrics:
    """The cached usage children (`quota_source` folded into `QUOTA_SOURCES`)."""
    source = fold(quota_source, QUOTA_SOURCES)
    return UsageMetrics(
        TOKENS.labels(model, provider, source, "prompt"),
        TOKENS.labels(model, provider, source, "completion"),
        COST_USD.labels(model, provider, source),
    )
