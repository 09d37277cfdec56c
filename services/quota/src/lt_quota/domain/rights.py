"""Management rights of a key and limits of self-service changes: a key narrows its owner's rights and never
widens them; a restricted key makes only keys at least as narrow as itself and manages no other key;
approvals grant at most what was asked (and an org's manager limit); self-set vacations are bounded."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from leaky_common.errors import Forbidden, InvalidRequest, RateLimited
from leaky_common.model_access import model_allowed

__all__ = [
    "KeyLimits",
    "VacationRule",
    "approved_amount",
    "check_key_priorities",
    "check_narrower",
    "check_session_room",
    "check_status_changes",
    "vacation_end",
]

_GLOB = set("*?[")


@dataclass(frozen=True)
class KeyLimits:
    """What restricts a key: allowed models and priorities (None: all), expiry, own caps per unit (limit,
    period) and own bucket sizes (None: the org's)."""

    allowed_models: tuple[str, ...] | None = None
    allowed_priorities: tuple[str, ...] | None = None
    expires_at: datetime | None = None
    caps: dict[str, tuple[int, str]] = field(default_factory=dict)
    rate_limit_requests: int | None = None
    rate_limit_tokens: int | None = None

    @property
    def restricted(self) -> bool:
        """True for a key with any restriction: it then manages only itself and makes only narrower keys."""
        return (
            self.allowed_models is not None
            or self.allowed_priorities is not None
            or self.expires_at is not None
            or bool(self.caps)
            or self.rate_limit_requests is not None
            or self.rate_limit_tokens is not None
        )


def check_key_priorities(priorities: Sequence[str] | None, may_bypass: bool) -> None:
    """A key may list `critical` only for a user an admin gave the bypass right (403 otherwise): a key narrows
    its owner's rights, it never grants one."""
    if priorities is not None and "critical" in priorities and not may_bypass:
        raise Forbidden(
            "priority critical needs the bypass right an admin grants (allow_priority_bypass); a key cannot "
            "grant it",
            code="priority_not_allowed",
            param="allowed_priorities",
        )


def _model_covered(parent: tuple[str, ...], pattern: str) -> bool:
    """A child's model pattern is within the parent's list: listed as is, or a plain name the list allows."""
    if pattern in parent or "*" in parent or "" in parent:
        return True
    return not (_GLOB & set(pattern)) and model_allowed(parent, pattern)


def _refuse(field_name: str, what: str) -> Forbidden:
    return Forbidden(
        f"this key is restricted, so a key it creates must be at least as narrow: {what}",
        code="key_wider_than_caller",
        param=field_name,
    )


def _check_sizes(parent: KeyLimits, child: KeyLimits) -> None:
    for name, mine, theirs in (
        ("rate_limit_requests_per_period", parent.rate_limit_requests, child.rate_limit_requests),
        ("rate_limit_tokens_per_period", parent.rate_limit_tokens, child.rate_limit_tokens),
    ):
        if mine is not None and (theirs is None or theirs > mine):
            raise _refuse(name, f"{name} at most {mine}")


def check_narrower(parent: KeyLimits, child: KeyLimits) -> None:
    """403 `key_wider_than_caller` unless `child` is at least as restricted as `parent` in every respect:
    models and priorities a subset, an expiry no later, for each of the parent's caps a cap of the same unit
    and period no larger, bucket sizes no larger."""
    if parent.allowed_models is not None:
        models = child.allowed_models
        if models is None or not all(_model_covered(parent.allowed_models, m) for m in models):
            raise _refuse("allowed_models", f"allowed_models within {list(parent.allowed_models)}")
    if parent.allowed_priorities is not None:
        prios = child.allowed_priorities
        if prios is None or not set(prios) <= set(parent.allowed_priorities):
            raise _refuse(
                "allowed_priorities", f"allowed_priorities within {list(parent.allowed_priorities)}"
            )
    if parent.expires_at is not None and (child.expires_at is None or child.expires_at > parent.expires_at):
        raise _refuse("expires_in_days", f"expiring no later than {parent.expires_at.isoformat()}")
    for unit, (limit, period) in parent.caps.items():
        cap = child.caps.get(unit)
        if cap is None or cap[0] > limit or cap[1] != period:
            name = "max_tokens" if unit == "tokens" else "max_usd_micros"
            raise _refuse(name, f"{name} at most {limit} per period {period!r}")
    _check_sizes(parent, child)


def approved_amount(requested: int, asked: int | None, manager_limit: int | None, *, admin: bool) -> int:
    """What an approval grants: `asked` (default: what was requested), never more than was requested, and for
    a manager who is not an admin never more than the org's per-approval limit (400 otherwise)."""
    granted = requested if asked is None else asked
    if granted > requested:
        raise InvalidRequest(
            f"an approval grants at most what was requested ({requested})",
            code="above_requested",
            param="approved_credits",
        )
    if not admin and manager_limit is not None and granted > manager_limit:
        raise InvalidRequest(
            f"a manager approves at most {manager_limit} per request in this organisation; ask an admin",
            code="above_manager_limit",
            param="approved_credits",
        )
    return granted


@dataclass(frozen=True)
class VacationRule:
    """Self-service vacation: at most `max_days` long and `changes_per_day` changes in any 24 hours."""

    max_days: int
    changes_per_day: int


def check_status_changes(rule: VacationRule, changes_last_day: int) -> None:
    """400 `too_many_status_changes` once a user changed their own status `changes_per_day` times in 24 h."""
    if changes_last_day >= rule.changes_per_day:
        raise InvalidRequest(
            f"you may change your status at most {rule.changes_per_day} times a day",
            code="too_many_status_changes",
            param="status",
        )


def vacation_end(rule: VacationRule, now: datetime, until: datetime | None) -> datetime:
    """When a self-set vacation ends: `until`, by default `max_days` from now; 400 `vacation_too_long` for an
    end in the past or more than `max_days` ahead."""
    latest = now + timedelta(days=rule.max_days)
    end = latest if until is None else until
    if end <= now or end > latest:
        raise InvalidRequest(
            f"a vacation you set yourself ends within {rule.max_days} days (an admin can set a longer one)",
            code="vacation_too_long",
            param="until",
        )
    return end


def check_session_room(new_last_day: int, per_day: int) -> None:
    """429 `too_many_sessions` when an org already started `per_day` new sessions in the last 24 hours (a
    session already seen is never refused by this)."""
    if new_last_day >= per_day:
        raise RateLimited(
            f"this organisation started {new_last_day} new sessions in the last 24 hours, the most allowed "
            f"({per_day}); reuse a session id or ask an operator to raise LT_SESSIONS_PER_ORG_PER_DAY",
            code="too_many_sessions",
            param="session_id",
        )
