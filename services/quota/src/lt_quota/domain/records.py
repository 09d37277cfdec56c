"""Quota's records: users, keys (joined with what admission needs), org settings, pools and freezes.

The repository builds them from rows (`adapters/repository/records.py` maps the columns); the rules read them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

__all__ = ["BucketOverrides", "FreezeRecord", "KeyRecord", "OrgSettings", "PoolRecord", "UserRecord"]


@dataclass(frozen=True)
class UserRecord:
    id: str
    org_id: str
    email: str
    name: str
    role: str
    status: str
    team_id: str | None
    created_at: datetime
    default_priority: str = "normal"
    allow_priority_bypass: bool = False
    privacy_default: str = "standard"
    tier: str = "standard"
    # When a vacation the user set themselves ends (None: not on vacation, or set by an admin without an end).
    vacation_until: datetime | None = None
    # Set by an admin: the team charged when the user is in several (`team_id` is the one in effect).
    primary_team_id: str | None = None


@dataclass(frozen=True)
class BucketOverrides:
    """Leaky-bucket sizes per period set on a team (None: not overridden)."""

    key_requests_per_period: int | None = None
    key_tokens_per_period: int | None = None
    user_requests_per_period: int | None = None
    user_tokens_per_period: int | None = None


@dataclass(frozen=True)
class KeyRecord:
    """An API key joined with its user and personal pool: what admission needs."""

    key_id: str
    user_id: str
    org_id: str
    team_id: str | None
    role: str
    email: str
    status: str
    expires_at: datetime | None
    revoked: bool
    pool_id: str | None
    tier: str = "standard"
    default_priority: str = "normal"
    allow_priority_bypass: bool = False
    privacy_default: str = "standard"
    allowed_models: tuple[str, ...] | None = None
    allowed_priorities: tuple[str, ...] | None = None
    org: OrgSettings | None = None
    managed_team_ids: tuple[str, ...] = ()
    # True for users of the platform org (`orgs.platform`): its admins manage orgs and global settings.
    platform: bool = False
    # The key's own leaky-bucket sizes (None: the org's, else the service's).
    rate_limit_requests: int | None = None
    rate_limit_tokens: int | None = None
    # The bucket sizes of the team the user is charged to (None: the org's, else the service's).
    team_buckets: BucketOverrides | None = None


@dataclass(frozen=True)
class OrgSettings:
    """An org's governance settings."""

    id: str
    name: str
    timezone: str
    vacation_share_percent: int
    allow_vacation_sharing: bool
    default_session_budget_usd_micros: int
    strict_sessions: bool
    privacy_strict: bool
    # Leaky-bucket size overrides per period (None: the service's settings).
    key_requests_per_period: int | None = None
    key_tokens_per_period: int | None = None
    user_requests_per_period: int | None = None
    user_tokens_per_period: int | None = None
    # The most a manager (not an admin) may approve per request (None: up to what was requested).
    manager_approval_limit: int | None = None


@dataclass(frozen=True)
class PoolRecord:
    id: str
    owner_type: str
    owner_id: str
    org_id: str
    unit: str
    limit: int
    period: str = "none"
    provider: str = ""
    model: str = ""


@dataclass(frozen=True)
class FreezeRecord:
    """One freeze of a session, key or user."""

    id: str
    target_type: str
    target_id: str
    reason: str
    expires_at: datetime | None
    source: str
    org_id: str | None
    user_id: str | None
    created_at: datetime
