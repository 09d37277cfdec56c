"""Quota's metrics: admissions by decision and cap, with caps from a fixed set."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prometheus_client import REGISTRY

from leaky_common.events import UsageRecorded
from lt_quota.adapters.metrics import admission, observe_settled
from lt_quota.domain import AdmitDenied, decision_label, denied_cap


def count(decision: str, cap: str) -> float:
    return REGISTRY.get_sample_value("lt_quota_admissions_total", {"decision": decision, "cap": cap}) or 0.0


def test_a_denial_names_the_cap_or_bucket_that_refused() -> None:
    assert denied_cap(AdmitDenied("quota", detail="team")) == "team"
    assert denied_cap(AdmitDenied("rate_limited", detail="user_tokens")) == "user_tokens"
    assert denied_cap(AdmitDenied("frozen", detail="key")) == "none"  # what is frozen is no cap
    assert decision_label(AdmitDenied("quota", detail="session")) == "insufficient_quota"


def test_admissions_count_by_decision_and_cap_and_fold_unknown_caps() -> None:
    before = (
        count("insufficient_quota", "session"),
        count("insufficient_quota", "other"),
        count("admitted", "none"),
    )
    admission("insufficient_quota", "session").inc()
    admission("insufficient_quota", "a-label-quota-never-makes").inc()
    admission("admitted").inc()
    after = (
        count("insufficient_quota", "session"),
        count("insufficient_quota", "other"),
        count("admitted", "none"),
    )
    assert [a - b for a, b in zip(after, before, strict=True)] == [1, 1, 1]
    assert admission("admitted") is admission("admitted")  # the child is cached


def test_settlement_lag_is_from_the_events_occurrence() -> None:
    before = REGISTRY.get_sample_value("lt_quota_settlement_lag_seconds_bucket", {"le": "10.0"}) or 0.0
    slow = REGISTRY.get_sample_value("lt_quota_settlement_lag_seconds_count") or 0.0
    old = datetime.now(UTC) - timedelta(seconds=20)
    observe_settled([UsageRecorded(request_id="r", model="m", provider="p", occurred_at=old)])
    assert REGISTRY.get_sample_value("lt_quota_settlement_lag_seconds_count") == slow + 1
    assert (
        REGISTRY.get_sample_value("lt_quota_settlement_lag_seconds_bucket", {"le": "10.0"}) or 0.0
    ) == before
