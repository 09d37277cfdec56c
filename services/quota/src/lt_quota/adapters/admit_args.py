"""The admission script's inputs (`adapters/lua/admit.lua`, run by `RedisState.admit`)."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["AdmitArgs", "Counter"]


@dataclass(frozen=True)
class Counter:
    """One cap an admission must fit: a pool's counter for the current period (or a vacation share).

    `group` 0 must always fit; 1.. are the balancer's alternatives. `pct` > 0 makes the limit that share of
    the previous counter's limit (the vacation share of a team pool). `leg` is `pool_id|period_key|source`,
    what settlement needs to write the ledger row.
    """

    key: str
    label: str
    unit: str  # 't' tokens, 'u' micro-dollars
    group: int
    leg: str
    pct: int = 0


@dataclass(frozen=True)
class AdmitArgs:
    """Inputs of one admission."""

    now_ms: int
    org_id: str
    user_id: str
    key_id: str
    session_id: str | None  # `<org>/<session>`: what a session freeze is kept under
    reservation_id: str
    request_id: str
    expires_ms: int
    prompt_tokens: int
    max_output_tokens: int
    min_output_tokens: int
    bucket_output_tokens: int
    input_price: int
    output_price: int
    key_requests: int
    key_tokens: int
    user_requests: int
    user_tokens: int
    period_ms: int
    strategy: str
    burst: float
    sources: tuple[str, ...]
    counters: tuple[Counter, ...] = field(default_factory=tuple)
    # When Redis lost recent bucket levels (0: not lately): a bucket it no longer holds counts as full then.
    buckets_full_at: int = 0
