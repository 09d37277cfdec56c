"""The columns and row mappers of the records the repository returns (the records are `lt_quota.domain.records`)."""

from __future__ import annotations

from typing import TypeAlias

import asyncpg

from lt_quota.domain.records import BucketOverrides, OrgSettings, PoolRecord, UserRecord

__all__ = [
    "CHARGED_TEAM",
    "ORG_COLUMNS",
    "POOL_COLUMNS",
    "TEAM_BUCKET_COLUMNS",
    "USER_COLUMNS",
    "Conn",
    "org_from_row",
    "pool_from_row",
    "team_buckets_from_row",
    "user_from_row",
]


# Pool connections are proxies of Connection; both work here.
Conn: TypeAlias = asyncpg.Connection


# The team a user is charged to: the primary team an admin set (while the user is still in it), else the
# team they joined first.
CHARGED_TEAM = """(SELECT tm.team_id FROM team_members tm WHERE tm.user_id = u.id
      ORDER BY tm.team_id IS DISTINCT FROM u.primary_team_id, tm.created_at, tm.team_id LIMIT 1)"""

USER_COLUMNS = f"""
    u.id, u.org_id, u.email, u.name, u.role, u.status, u.created_at, u.default_priority,
    u.allow_priority_bypass, u.privacy_default, u.tier, u.primary_team_id, u.vacation_until,
    {CHARGED_TEAM} AS team_id
"""


def user_from_row(row: asyncpg.Record) -> UserRecord:
    return UserRecord(
        id=row["id"],
        org_id=row["org_id"],
        email=row["email"],
        name=row["name"],
        role=row["role"],
        status=row["status"],
        team_id=row["team_id"],
        created_at=row["created_at"],
        default_priority=row["default_priority"],
        allow_priority_bypass=row["allow_priority_bypass"],
        privacy_default=row["privacy_default"],
        tier=row["tier"],
        primary_team_id=row["primary_team_id"],
        vacation_until=row["vacation_until"],
    )


POOL_COLUMNS = 'id, owner_type, owner_id, org_id, unit, "limit", period, provider, model'


def pool_from_row(row: asyncpg.Record) -> PoolRecord:
    return PoolRecord(
        row["id"],
        row["owner_type"],
        row["owner_id"],
        row["org_id"],
        row["unit"],
        row["limit"],
        row["period"],
        row["provider"],
        row["model"],
    )


ORG_COLUMNS = """o.id AS org_id_, o.name AS org_name, o.timezone, o.vacation_share_percent,
    o.allow_vacation_sharing, o.default_session_budget_usd_micros, o.strict_sessions,
    o.privacy_strict AS org_privacy_strict, o.key_requests_per_period, o.key_tokens_per_period,
    o.user_requests_per_period, o.user_tokens_per_period, o.manager_approval_limit"""


def org_from_row(row: asyncpg.Record) -> OrgSettings:
    return OrgSettings(
        id=row["org_id_"],
        name=row["org_name"],
        timezone=row["timezone"],
        vacation_share_percent=row["vacation_share_percent"],
        allow_vacation_sharing=row["allow_vacation_sharing"],
        default_session_budget_usd_micros=row["default_session_budget_usd_micros"],
        strict_sessions=row["strict_sessions"],
        privacy_strict=row["org_privacy_strict"],
        key_requests_per_period=row["key_requests_per_period"],
        key_tokens_per_period=row["key_tokens_per_period"],
        user_requests_per_period=row["user_requests_per_period"],
        user_tokens_per_period=row["user_tokens_per_period"],
        manager_approval_limit=row["manager_approval_limit"],
    )


_BUCKET_FIELDS = (
    "key_requests_per_period",
    "key_tokens_per_period",
    "user_requests_per_period",
    "user_tokens_per_period",
)
# A team's bucket sizes, from a `teams tb` join (NULL columns when the user is in no team).
TEAM_BUCKET_COLUMNS = ", ".join(f"tb.{f} AS team_{f}" for f in _BUCKET_FIELDS)


def team_buckets_from_row(row: asyncpg.Record) -> BucketOverrides | None:
    """A team's bucket sizes from TEAM_BUCKET_COLUMNS (None if the team overrides none)."""
    values = {f: row[f"team_{f}"] for f in _BUCKET_FIELDS}
    return BucketOverrides(**values) if any(v is not None for v in values.values()) else None
