"""Quota's Prometheus metrics: admissions, reservations and settlement.

Label values come from fixed sets (`CAPS`, decisions); children of the hot path's counters are made once and
cached (a label lookup hashes and locks, about a microsecond)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from leaky_common.events import UsageRecorded
from leaky_common.metrics import fold

__all__ = [
    "ADMISSIONS",
    "CAPS",
    "RESERVATIONS_EXPIRED_CHARGED",
    "RESERVATIONS_OPEN",
    "RESERVATIONS_RELEASED",
    "RESERVATIONS_SETTLED",
    "SETTLEMENT_LAG",
    "admission",
    "observe_settled",
]

# The caps a 402 names (the balancer's labels) and the rate-limit buckets a 429 names.
CAPS = frozenset(
    {
        "personal",
        "team",
        "vacation_share",
        "org",
        "key_cap",
        "session",
        "key_requests",
        "key_tokens",
        "user_requests",
        "user_tokens",
        "none",
    }
)

ADMISSIONS = Counter(
    "lt_quota_admissions_total",
    "Admission decisions, by decision and the cap or rate-limit bucket that refused (none when not a cap)",
    ["decision", "cap"],
)
RESERVATIONS_OPEN = Gauge(
    "lt_quota_reservations_open", "Reservations admitted and not yet charged (sampled by each sweep)"
)
RESERVATIONS_RELEASED = Counter(
    "lt_quota_reservations_released_total",
    "Reservations shrunk to their answer's usage by the gateway's release",
)
RESERVATIONS_SETTLED = Counter(
    "lt_quota_reservations_settled_total", "Reservations charged at their usage event's actual usage"
)
RESERVATIONS_EXPIRED_CHARGED = Counter(
    "lt_quota_reservations_expired_charged_total",
    "Reservations that reached their TTL unsettled and were charged what they held",
)
SETTLEMENT_LAG = Histogram(
    "lt_quota_settlement_lag_seconds",
    "From a usage event's occurrence (at the gateway) to its reservation being charged",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
)


@lru_cache(maxsize=128)
def admission(decision: str, cap: str = "none") -> Any:
    """The admissions counter's child for a decision and a cap (folded into `CAPS`)."""
    return ADMISSIONS.labels(decision, fold(cap, CAPS))


def observe_settled(events: Iterable[UsageRecorded]) -> None:
    """The settlement lag of events just charged (event time to now)."""
    now = datetime.now(UTC)
    for event in events:
        occurred = event.occurred_at if event.occurred_at.tzinfo else event.occurred_at.replace(tzinfo=UTC)
        SETTLEMENT_LAG.observe(max((now - occurred).total_seconds(), 0.0))
