"""Why an admission is refused, in the words and codes the client sees (and how to get more tokens)."""

from __future__ import annotations

from typing import Any

from leaky_common.errors import Forbidden, QuotaExceeded, RateLimited, ServiceError
from lt_quota.domain.outcomes import AdmitDenied, retry_after_seconds

__all__ = ["APPROVAL_GUIDE", "decision_label", "denial", "denied_cap", "no_pool_for_model"]

APPROVAL_GUIDE = {
    "message": "Your personal token pool cannot cover this request. Ask a manager of your team for more "
    "tokens with POST /v1/approvals, or buy a top-up with POST /v1/purchases.",
    "endpoint": "POST /v1/approvals",
    "steps": [
        "POST /v1/approvals {requested_credits, reason}",
        "a manager of your team approves or rejects it",
        "approved credits raise your personal pool",
    ],
    "required_fields": ["requested_credits", "reason"],
}
# Which cap a 402 names (the balancer's cap labels).
_EXHAUSTED = {
    "personal": ("personal_pool_exhausted", "personal token pool exhausted"),
    "team": ("team_pool_exhausted", "team pool exhausted"),
    "vacation_share": ("vacation_share_exhausted", "the vacation share of your team pool is used up"),
    "org": ("org_pool_exhausted", "organisation pool exhausted"),
    "key_cap": ("key_cap_exhausted", "this API key's own cap is exhausted"),
    "session": ("session_budget_exhausted", "session budget exhausted"),
}


def no_pool_for_model() -> QuotaExceeded:
    """402 when no pool of the caller covers the requested model at all."""
    return QuotaExceeded(
        "you have no token pool for this model", code="personal_pool_exhausted", approval=APPROVAL_GUIDE
    )


def decision_label(outcome: AdmitDenied) -> str:
    """The admissions metric's label for a denial."""
    if outcome.reason in ("frozen", "rate_limited"):
        return outcome.reason
    return "insufficient_quota"


def denied_cap(outcome: AdmitDenied) -> str:
    """The cap (402) or rate-limit bucket (429) that refused, for the admissions metric; `none` otherwise."""
    return outcome.detail if outcome.reason in ("quota", "rate_limited") else "none"


def denial(outcome: AdmitDenied, session_budget: int | None) -> ServiceError:
    """The error for a denial: 403 frozen, 429 with Retry-After, or 402 naming the cap that ran out (with
    how to ask for more, and the session's budget when that ran out)."""
    if outcome.reason == "frozen":
        return Forbidden(
            f"this {outcome.detail} is frozen: {outcome.reason_text}",
            code="frozen",
            frozen=outcome.detail,
            reason=outcome.reason_text,
        )
    if outcome.reason == "rate_limited":
        seconds = retry_after_seconds(outcome.retry_ms)
        return RateLimited(
            f"rate limit reached ({outcome.detail}); retry in {seconds} s",
            code="rate_limited",
            headers={"Retry-After": str(seconds)},
            limit=outcome.detail,
        )
    code, what = _EXHAUSTED.get(outcome.detail, _EXHAUSTED["personal"])
    unit = "micro-dollars" if outcome.detail == "session" else "left"
    extra: dict[str, Any] = {"approval": APPROVAL_GUIDE}
    if outcome.detail == "personal":
        extra["approval"] = {**APPROVAL_GUIDE, "personal_quota_remaining": outcome.remaining}
    if outcome.detail == "session" and session_budget is not None:
        extra["budget"] = {
            "budget_usd_micros": session_budget,
            "remaining_usd_micros": outcome.remaining,
            "spent_usd_micros": None,
        }
    return QuotaExceeded(
        f"{what}: {outcome.remaining} {unit}, not enough for this request", code=code, **extra
    )
