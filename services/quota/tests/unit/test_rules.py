"""The pure rules of `lt_quota.domain` on plain records: no service, no Postgres, no Redis."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from leaky_common.errors import Forbidden, InvalidRequest, QuotaExceeded, RateLimited
from lt_quota.domain import (
    APPROVAL_GUIDE,
    AdmitDenied,
    BucketDefaults,
    BucketSizes,
    Cap,
    Leg,
    adjusted_limit,
    bucket_sizes,
    check_key_policy,
    check_session,
    counter_ttl_ms,
    decision_label,
    default_bucket_sizes,
    denial,
    legs_of_reservation,
    longest_freeze,
    may_top_up,
    missing_pool_reason,
    no_pool_for_model,
    plan,
    privacy_strict,
    refusal,
    session_target,
    source_group,
    thresholds_reached,
    ttl_ms,
)
from lt_quota.domain.records import FreezeRecord, KeyRecord, OrgSettings, PoolRecord, UserRecord

NOW = int(datetime(2026, 11, 23, 12, tzinfo=UTC).timestamp() * 1000)
ORG = OrgSettings("o1", "default", "UTC", 10, True, 10_000_000, False, False)
USER = PoolRecord("p-user", "user", "u1", "o1", "tokens", 100)
TEAM = PoolRecord("p-team", "team", "t1", "o1", "tokens", 1000, "monthly")
ORG_POOL = PoolRecord("p-org", "org", "o1", "o1", "tokens", 10**6)
KEY_CAP = PoolRecord("p-key", "key", "k1", "o1", "usd", 500, "daily")
SESSION = PoolRecord("p-sess", "session", "o1/s1", "o1", "usd", 10_000_000)
DEFAULTS = BucketDefaults(BucketSizes(600, 200_000, 600, 200_000), {"pro": 2.0}, 2.0)


def key(**kw: object) -> KeyRecord:
    base = KeyRecord("k1", "u1", "o1", "t1", "user", "u@x", "active", None, False, "p-user", org=ORG)
    return replace(base, **kw)  # type: ignore[arg-type]


def buyer_in(team_id: str | None, org_id: str) -> UserRecord:
    return UserRecord("u1", org_id, "u@x", "U", "user", "active", team_id, datetime(2026, 11, 1, tzinfo=UTC))


def live_freeze(reason: str, expires_at: datetime | None) -> FreezeRecord:
    created = datetime(2026, 11, 1, tzinfo=UTC)
    return FreezeRecord(reason, "session", "s1", reason, expires_at, "admin", "o1", None, created)


# --- the balancer -------------------------------------------------------------------------------------------


def labels(caps: list[Cap]) -> list[tuple[int, str, str]]:
    return [(c.group, c.label, c.pool_id) for c in caps]


def test_the_personal_pool_pays_first_and_org_key_and_session_caps_always_apply() -> None:
    caps, sources = plan(
        ORG,
        [USER, TEAM, ORG_POOL, KEY_CAP],
        SESSION,
        provider="mock",
        model="m",
        critical=False,
        vacation=False,
        now_ms=NOW,
    )
    assert sources == ["personal"]
    assert labels(caps) == [
        (0, "org", "p-org"),
        (0, "key_cap", "p-key"),
        (0, "session", "p-sess"),
        (1, "personal", "p-user"),
    ]
    key_cap = caps[1]
    assert (key_cap.period_key, key_cap.unit, key_cap.leg) == ("d:2026-11-23", "u", "p-key|d:2026-11-23|p")


def test_critical_requests_may_bypass_to_the_team_pool_then_the_vacation_share() -> None:
    caps, sources = plan(
        ORG, [USER, TEAM], None, provider="mock", model="m", critical=True, vacation=True, now_ms=NOW
    )
    assert sources == ["personal", "priority_bypass", "vacation_share"]
    assert labels(caps) == [
        (1, "personal", "p-user"),
        (2, "team", "p-team"),
        (3, "team", "p-team"),
        (3, "vacation_share", "p-team"),
    ]
    share = caps[-1]
    assert share.pct == 10 and share.vacation and share.leg == "p-team|m:2026-11|v"


def test_no_vacation_share_when_the_org_disallows_sharing_or_no_teammate_is_away() -> None:
    no_sharing = replace(ORG, allow_vacation_sharing=False)
    _, sources = plan(
        no_sharing, [USER, TEAM], None, provider="", model="m", critical=False, vacation=True, now_ms=NOW
    )
    assert sources == ["personal"]
    _, sources = plan(
        ORG, [USER, TEAM], None, provider="", model="m", critical=False, vacation=False, now_ms=NOW
    )
    assert sources == ["personal"]


def test_pools_scoped_to_another_provider_or_model_do_not_apply() -> None:
    scoped = [
        replace(USER, id="p-gpt", model="gpt-4o*"),
        replace(ORG_POOL, id="p-openai", provider="openai"),
        replace(USER, id="p-any", model="*"),
    ]
    caps, sources = plan(
        ORG, scoped, None, provider="mock", model="mock-gpt", critical=False, vacation=False, now_ms=NOW
    )
    assert [c.pool_id for c in caps] == ["p-any"] and sources == ["personal"]
    caps, _ = plan(
        ORG, scoped, None, provider="openai", model="gpt-4o-mini", critical=False, vacation=False, now_ms=NOW
    )
    assert {c.pool_id for c in caps} == {"p-gpt", "p-openai", "p-any"}


def test_without_a_personal_pool_there_is_no_alternative() -> None:
    _, sources = plan(
        None, [ORG_POOL], None, provider="", model="m", critical=False, vacation=False, now_ms=NOW
    )
    assert sources == []


def test_legs_of_a_reservation_and_the_group_of_a_source() -> None:
    reservation = {
        "n": "2",
        "k1": "lt:pool:p",
        "d1": "p||p",
        "u1": "t",
        "a1": "30",
        "k2": "lt:vac:t:m",
        "d2": "t|m|v",
        "u2": "t",
        "a2": "5",
    }
    assert legs_of_reservation(reservation) == [
        Leg("lt:pool:p", "p", "", False, "t", 30),
        Leg("lt:vac:t:m", "t", "m", True, "t", 5),
    ]
    assert legs_of_reservation({}) == []
    assert source_group(["personal", "vacation_share"], "vacation_share") == 2
    assert source_group(["personal"], "priority_bypass") == 1


def test_counters_of_periodic_pools_outlive_their_period_by_a_day() -> None:
    end = datetime(2026, 11, 24, tzinfo=UTC)
    assert counter_ttl_ms(None, NOW) == 0
    assert counter_ttl_ms(end, NOW) == 12 * 3_600_000 + 86_400_000
    assert counter_ttl_ms(end, NOW + 10 * 86_400_000) == 0


# --- key policy, sessions, privacy and bucket sizes ---------------------------------------------------------


def test_allowed_models_use_the_shared_matcher() -> None:
    assert check_key_policy(key(allowed_models=("*",)), "anything", None) is False
    assert check_key_policy(key(allowed_models=("",)), "anything", None) is False
    with pytest.raises(Forbidden) as exc:
        check_key_policy(key(allowed_models=()), "m", None)
    assert exc.value.code == "model_not_allowed" and exc.value.param == "model"


def test_priorities_are_normalised_and_critical_needs_the_right() -> None:
    assert check_key_policy(key(allow_priority_bypass=True), "m", "  CRITICAL ") is True
    assert check_key_policy(key(allow_priority_bypass=True), "m", "high") is False
    with pytest.raises(InvalidRequest) as bad:
        check_key_policy(key(), "m", "urgent")
    assert bad.value.code == "invalid_priority"
    with pytest.raises(Forbidden) as denied:
        check_key_policy(key(allowed_priorities=("low", "normal")), "m", "high")
    assert denied.value.code == "priority_not_allowed"


def test_session_ids_are_bounded_and_strict_orgs_require_one() -> None:
    check_session(ORG, None)
    check_session(ORG, "s" * 200)
    with pytest.raises(InvalidRequest) as long:
        check_session(ORG, "s" * 201)
    assert long.value.code == "invalid_session_id"
    with pytest.raises(InvalidRequest) as missing:
        check_session(replace(ORG, strict_sessions=True), None)
    assert missing.value.code == "session_required"


def test_privacy_is_strict_if_the_request_the_user_or_the_org_says_so() -> None:
    assert not privacy_strict(None, key())
    assert privacy_strict("strict", key())
    assert privacy_strict(None, key(privacy_default="strict"))
    assert privacy_strict(None, key(org=replace(ORG, privacy_strict=True)))


def test_bucket_sizes_precedence_key_then_org_then_defaults_scaled() -> None:
    assert default_bucket_sizes(DEFAULTS, None, "standard", "user") == BucketSizes(600, 200_000, 600, 200_000)
    org = replace(ORG, user_requests_per_period=7)
    assert default_bucket_sizes(DEFAULTS, org, "pro", "admin") == BucketSizes(2400, 800_000, 28, 800_000)
    assert default_bucket_sizes(DEFAULTS, replace(ORG, key_tokens_per_period=0), "x", "user").key_tokens == 1
    own = key(org=org, rate_limit_requests=5, tier="pro")
    assert bucket_sizes(DEFAULTS, own) == BucketSizes(5, 400_000, 14, 400_000)


# --- denials ------------------------------------------------------------------------------------------------


def test_frozen_and_rate_limited_denials() -> None:
    frozen = denial(AdmitDenied("frozen", detail="key", reason_text="loop"), None)
    assert isinstance(frozen, Forbidden) and frozen.code == "frozen"
    assert frozen.extra == {"frozen": "key", "reason": "loop"}
    limited = denial(AdmitDenied("rate_limited", detail="user_tokens", retry_ms=1001), None)
    assert isinstance(limited, RateLimited) and limited.headers == {"Retry-After": "2"}
    assert decision_label(AdmitDenied("frozen")) == "frozen"
    assert decision_label(AdmitDenied("rate_limited")) == "rate_limited"
    assert decision_label(AdmitDenied("quota", detail="org")) == "insufficient_quota"


def test_quota_denials_name_the_cap_and_say_how_to_get_more() -> None:
    personal = denial(AdmitDenied("quota", detail="personal", remaining=3), None)
    assert isinstance(personal, QuotaExceeded) and personal.code == "personal_pool_exhausted"
    assert personal.extra["approval"] == {**APPROVAL_GUIDE, "personal_quota_remaining": 3}
    session = denial(AdmitDenied("quota", detail="session", remaining=40), 100)
    assert session.code == "session_budget_exhausted" and "40 micro-dollars" in session.message
    assert session.extra["budget"] == {
        "budget_usd_micros": 100,
        "remaining_usd_micros": 40,
        "spent_usd_micros": None,
    }
    unknown = denial(AdmitDenied("quota", detail="something-new"), None)
    assert unknown.code == "personal_pool_exhausted"
    assert no_pool_for_model().code == "personal_pool_exhausted"


# --- thresholds, top-ups and freezes ------------------------------------------------------------------------


def test_a_charge_reaches_each_threshold_once() -> None:
    assert thresholds_reached(85, 10, 100) == [80]
    assert thresholds_reached(100, 30, 100) == [80, 90, 100]
    assert thresholds_reached(95, 2, 100) == []
    assert thresholds_reached(50, 50, 0) == []


def test_top_up_refusals_and_limits() -> None:
    assert refusal(USER, "credit", "tokens", 10) is None
    assert refusal(USER, "credit", "usd", 10) == (
        "pool p-user is counted in tokens, but this credit is in micro-dollars (usd)"
    )
    assert refusal(USER, "debit", "tokens", 0) == "amount must be positive"
    assert adjusted_limit("credit", 100, 5) == 105 and adjusted_limit("debit", 100, 5) == 95
    assert missing_pool_reason("p9", "u1", "usd", user_exists=False) == "unknown pool p9"
    assert missing_pool_reason(None, "u1", "usd", user_exists=False) == "unknown user u1"
    assert "has no usd pool" in missing_pool_reason(None, "u1", "usd", user_exists=True)


def test_a_buyer_may_top_up_their_own_team_or_org_pool_only() -> None:
    assert may_top_up(USER, "u1", None) and not may_top_up(USER, "u2", None)
    assert may_top_up(TEAM, "u1", buyer_in("t1", "o1")) and not may_top_up(TEAM, "u1", buyer_in("t2", "o1"))
    assert may_top_up(ORG_POOL, "u1", buyer_in(None, "o1")) and not may_top_up(ORG_POOL, "u1", None)
    assert not may_top_up(KEY_CAP, "u1", buyer_in("t1", "o1"))


def test_redis_holds_the_longest_live_freeze() -> None:
    soon = datetime(2026, 11, 23, 13, tzinfo=UTC)
    later = live_freeze("later", soon + timedelta(hours=1))
    assert longest_freeze([live_freeze("soon", soon), later]) == later
    forever = live_freeze("forever", None)
    assert longest_freeze([later, forever, live_freeze("also", None)]).reason == "also"
    assert longest_freeze([forever, later]) == forever
    assert ttl_ms(None, NOW) is None and ttl_ms(soon, NOW) == 3_600_000
    assert session_target("o1", "s1") == "o1/s1" and session_target(None, "s1") == "-/s1"
