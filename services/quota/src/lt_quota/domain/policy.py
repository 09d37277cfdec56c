"""A key's rules for one request: allowed models and priorities, session ids, privacy and bucket sizes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from leaky_common.errors import Forbidden, InvalidRequest
from leaky_common.model_access import model_allowed
from lt_quota.domain.records import BucketOverrides, KeyRecord, OrgSettings

__all__ = [
    "PRIORITIES",
    "SESSION_ID_MAX",
    "BucketDefaults",
    "BucketSizes",
    "bucket_sizes",
    "check_key_policy",
    "check_session",
    "default_bucket_sizes",
    "privacy_strict",
]

PRIORITIES = ("low", "normal", "high", "critical")
SESSION_ID_MAX = 200


def _asked_priority(priority: str | None) -> str | None:
    """The priority a request asks for, normalised; 400 for one that does not exist."""
    asked = (priority or "").strip().lower() or None
    if asked is not None and asked not in PRIORITIES:
        raise InvalidRequest(
            f"unknown priority {priority!r}; use one of {', '.join(PRIORITIES)}",
            code="invalid_priority",
            param="priority",
        )
    return asked


def check_key_policy(key: KeyRecord, model: str, priority: str | None) -> bool:
    """Check the key's model and priority rules; True if the request may draw on the team pool (a critical
    request with the right to bypass). A default priority of critical without that right is just normal.
    The right comes only from the user's admin-granted `allow_priority_bypass`: a key's
    `allowed_priorities` can only narrow what the user may ask for, never grant the bypass."""
    if not model_allowed(key.allowed_models, model):
        raise Forbidden(f"this API key may not use model {model}", code="model_not_allowed", param="model")
    asked = _asked_priority(priority)
    if asked is not None and key.allowed_priorities is not None and asked not in key.allowed_priorities:
        raise Forbidden(f"this API key may not use priority {asked}", code="priority_not_allowed")
    may_bypass = key.allow_priority_bypass
    if (asked or key.default_priority) != "critical":
        return False
    if not may_bypass and asked == "critical":
        raise Forbidden("critical priority is not allowed for this user or key", code="priority_not_allowed")
    return may_bypass


def check_session(org: OrgSettings | None, session_id: str | None) -> None:
    """A session id has 1 to 200 characters; an org with strict sessions requires one."""
    if session_id is not None and not 0 < len(session_id) <= SESSION_ID_MAX:
        raise InvalidRequest(
            f"a session id has 1 to {SESSION_ID_MAX} characters",
            code="invalid_session_id",
            param="session_id",
        )
    if org is not None and org.strict_sessions and not session_id:
        raise InvalidRequest(
            "this organisation requires a session id (X-Session-ID header or ?session_id=)",
            code="session_required",
            param="session_id",
        )


def privacy_strict(asked: str | None, key: KeyRecord) -> bool:
    """Strict privacy if the request, the user's default or the org asks for it."""
    org = key.org
    return asked == "strict" or key.privacy_default == "strict" or bool(org and org.privacy_strict)


@dataclass(frozen=True)
class BucketSizes:
    """Leaky-bucket capacities per period (requests and tokens, per key and per user)."""

    key_requests: int
    key_tokens: int
    user_requests: int
    user_tokens: int


@dataclass(frozen=True)
class BucketDefaults:
    """The service's bucket sizes per period, scaled per tier and for admins."""

    sizes: BucketSizes
    tiers: Mapping[str, float] = field(default_factory=dict)
    admin_multiplier: float = 1.0


def default_bucket_sizes(
    defaults: BucketDefaults,
    org: OrgSettings | None,
    tier: str,
    role: str,
    team: BucketOverrides | None = None,
) -> BucketSizes:
    """The bucket sizes per period of a key without its own: the team's overrides, else the org's, else the
    service's defaults, scaled by the user's tier and (for admins) the admin multiplier."""
    mult = defaults.tiers.get(tier, 1.0) * (defaults.admin_multiplier if role == "admin" else 1.0)
    base = defaults.sizes

    def scaled(field: str, default: int) -> int:
        override = getattr(team, field, None)
        if override is None:
            override = getattr(org, field, None)
        return max(1, int((default if override is None else override) * mult))

    return BucketSizes(
        key_requests=scaled("key_requests_per_period", base.key_requests),
        key_tokens=scaled("key_tokens_per_period", base.key_tokens),
        user_requests=scaled("user_requests_per_period", base.user_requests),
        user_tokens=scaled("user_tokens_per_period", base.user_tokens),
    )


def bucket_sizes(defaults: BucketDefaults, key: KeyRecord) -> BucketSizes:
    """The sizes one admission uses: the key's own sizes exactly as set (no scaling), else the defaults."""
    sizes = default_bucket_sizes(defaults, key.org, key.tier, key.role, key.team_buckets)
    return replace(
        sizes,
        key_requests=key.rate_limit_requests or sizes.key_requests,
        key_tokens=key.rate_limit_tokens or sizes.key_tokens,
    )
