"""The authorization rules of `lt_quota.domain.rights`: keys narrow, approvals and vacations are bounded."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from leaky_common.errors import Forbidden, InvalidRequest, RateLimited
from lt_quota.domain.rights import (
    KeyLimits,
    VacationRule,
    approved_amount,
    check_key_priorities,
    check_narrower,
    check_session_room,
    check_status_changes,
    vacation_end,
)

NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)


def test_only_the_admin_granted_right_allows_critical_on_a_key() -> None:
    check_key_priorities(None, may_bypass=False)
    check_key_priorities(["low", "high"], may_bypass=False)
    check_key_priorities(["critical"], may_bypass=True)
    with pytest.raises(Forbidden) as exc:
        check_key_priorities(["normal", "critical"], may_bypass=False)
    assert exc.value.code == "priority_not_allowed"


def test_restricted_means_any_restriction() -> None:
    assert not KeyLimits().restricted
    for limits in (
        KeyLimits(allowed_models=("mock-*",)),
        KeyLimits(allowed_priorities=("low",)),
        KeyLimits(expires_at=NOW),
        KeyLimits(caps={"tokens": (10, "none")}),
        KeyLimits(rate_limit_requests=5),
        KeyLimits(rate_limit_tokens=5),
    ):
        assert limits.restricted, limits


def refused(parent: KeyLimits, child: KeyLimits) -> str | None:
    try:
        check_narrower(parent, child)
    except Forbidden as exc:
        assert exc.code == "key_wider_than_caller"
        return exc.param
    return None


def test_a_child_key_must_be_at_least_as_narrow_in_every_respect() -> None:
    parent = KeyLimits(
        allowed_models=("mock-*", "gpt-4o"),
        allowed_priorities=("low", "normal"),
        expires_at=NOW + timedelta(days=3),
        caps={"tokens": (1000, "daily")},
        rate_limit_requests=10,
    )
    same = parent
    assert refused(parent, same) is None
    narrower = KeyLimits(
        allowed_models=("mock-gpt",),
        allowed_priorities=("low",),
        expires_at=NOW + timedelta(days=1),
        caps={"tokens": (10, "daily"), "usd": (5, "none")},
        rate_limit_requests=1,
        rate_limit_tokens=100,
    )
    assert refused(parent, narrower) is None
    cases: dict[str, dict[str, Any]] = {
        "allowed_models": {"allowed_models": None},
        "allowed_priorities": {"allowed_priorities": ("low", "critical")},
        "expires_in_days": {"expires_at": NOW + timedelta(days=5)},
        "max_tokens": {"caps": {"tokens": (1001, "daily")}},
        "rate_limit_requests_per_period": {"rate_limit_requests": None},
    }
    for param, change in cases.items():
        child = KeyLimits(**{**narrower.__dict__, **change})
        assert refused(parent, child) == param, param
    # A glob the parent does not list is wider even if it looks close; a cap of another period is not narrower.
    assert (
        refused(parent, KeyLimits(**{**narrower.__dict__, "allowed_models": ("mock-g*",)}))
        == "allowed_models"
    )
    weekly = KeyLimits(**{**narrower.__dict__, "caps": {"tokens": (10, "weekly")}})
    assert refused(parent, weekly) == "max_tokens"
    assert refused(KeyLimits(allowed_models=("*",)), KeyLimits(allowed_models=("gpt-*",))) is None


def test_approvals_grant_at_most_the_request_and_the_manager_limit() -> None:
    assert approved_amount(100, None, None, admin=False) == 100
    assert approved_amount(100, 40, 50, admin=False) == 40
    assert approved_amount(100, None, 50, admin=True) == 100  # admins: only the request bounds them
    for asked, limit, code in ((10**15, None, "above_requested"), (None, 50, "above_manager_limit")):
        with pytest.raises(InvalidRequest) as exc:
            approved_amount(100, asked, limit, admin=False)
        assert exc.value.code == code


def test_self_set_vacations_end_within_the_limit() -> None:
    rule = VacationRule(max_days=30, changes_per_day=4)
    assert vacation_end(rule, NOW, None) == NOW + timedelta(days=30)
    assert vacation_end(rule, NOW, NOW + timedelta(days=7)) == NOW + timedelta(days=7)
    for until in (NOW - timedelta(seconds=1), NOW + timedelta(days=31)):
        with pytest.raises(InvalidRequest) as exc:
            vacation_end(rule, NOW, until)
        assert exc.value.code == "vacation_too_long"
    check_status_changes(rule, 3)
    with pytest.raises(InvalidRequest) as exc:
        check_status_changes(rule, 4)
    assert exc.value.code == "too_many_status_changes"


def test_new_sessions_per_org_are_bounded() -> None:
    check_session_room(9, 10)
    with pytest.raises(RateLimited) as exc:
        check_session_room(10, 10)
    assert exc.value.code == "too_many_sessions" and exc.value.status == 429
