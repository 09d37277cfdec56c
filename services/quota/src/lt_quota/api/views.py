"""HTTP response bodies of the quota service: what each route sends back, field for field.

Timestamps are ISO 8601 strings as the service formats them; amounts are tokens or micro-dollars (a pool's
`unit`). Lists come as `{"object": "list", "data": [...]}`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Generic, Literal, TypeVar

from pydantic import BaseModel

__all__ = [
    "ApprovalList",
    "ApprovalView",
    "CreatedUserView",
    "DeletedPoolView",
    "FreezeList",
    "FreezeView",
    "KeyList",
    "KeyView",
    "MembershipView",
    "MyTeamList",
    "MyTeamView",
    "NewKeyView",
    "NewOrgView",
    "NewUserView",
    "OrgList",
    "OrgSummaryView",
    "OrgView",
    "PoolList",
    "PoolView",
    "PrivacyView",
    "QuotaView",
    "RevokedKeyView",
    "RotatedKeyView",
    "SessionList",
    "SessionView",
    "TeamList",
    "TeamMemberView",
    "TeamSummaryView",
    "TeamView",
    "UnfreezeView",
    "UserList",
    "UserView",
]

Item = TypeVar("Item", bound=BaseModel)


class ListView(BaseModel, Generic[Item]):
    """A list in OpenAI's envelope."""

    object: Literal["list"] = "list"
    data: list[Item]


# --- users, teams, orgs --------------------------------------------------------------------------------------


class UserView(BaseModel):
    """A user as the API shows it."""

    id: str
    email: str
    name: str
    org_id: str
    # The team the user is charged to: the primary team if an admin set one, else the team joined first.
    team_id: str | None
    primary_team_id: str | None = None
    role: str
    status: str
    default_priority: str = "normal"
    allow_priority_bypass: bool = False
    privacy_default: str = "standard"
    tier: str = "standard"
    # When a vacation the user set themselves ends (null: no end set).
    vacation_until: datetime | None = None


class UserList(ListView[UserView]):
    """`GET /v1/admin/users`."""


class NewUserView(BaseModel):
    """A user just created with a personal pool and a first API key (the secret is shown only here)."""

    id: str
    email: str
    name: str
    org_id: str
    role: str
    api_key: str
    key_prefix: str
    pool_id: str


class CreatedUserView(NewUserView):
    """`POST /v1/admin/users`: the new user and the team they joined (if any)."""

    team_id: str | None


class PrivacyView(BaseModel):
    """`PUT /v1/users/me/privacy`."""

    user_id: str
    privacy_default: str


class TeamView(BaseModel):
    """`POST /v1/admin/teams`: the team and its token pool (if one was asked for)."""

    id: str
    name: str
    org_id: str
    pool_id: str | None


class TeamBucketsView(BaseModel):
    """`PATCH /v1/admin/teams/{team_id}/buckets`: the team's bucket sizes per period (null: the org's)."""

    id: str
    name: str
    org_id: str
    key_requests_per_period: int | None
    key_tokens_per_period: int | None
    user_requests_per_period: int | None
    user_tokens_per_period: int | None


class TeamSummaryView(BaseModel):
    """A team of the org with its member count."""

    id: str
    name: str
    member_count: int
    created_at: str


class TeamList(ListView[TeamSummaryView]):
    """`GET /v1/admin/teams`."""


class MembershipView(BaseModel):
    """`POST /v1/admin/teams/{team_id}/members/{user_id}` (201 new, 200 role changed)."""

    team_id: str
    user_id: str
    role: str


class OrgView(BaseModel):
    """The admin's org and its governance settings (`null` bucket sizes: the service's defaults)."""

    id: str
    name: str
    timezone: str
    vacation_share_percent: int
    allow_vacation_sharing: bool
    default_session_budget_usd_micros: int
    strict_sessions: bool
    privacy_strict: bool
    key_requests_per_period: int | None
    key_tokens_per_period: int | None
    user_requests_per_period: int | None
    user_tokens_per_period: int | None
    # The most a manager (not an admin) approves per request; null: up to what was requested.
    manager_approval_limit: int | None = None
    bucket_period_s: float


class NewOrgView(OrgView):
    """`POST /v1/admin/orgs`: the org and its first admin (whose key is shown only here)."""

    admin: NewUserView


class OrgSummaryView(BaseModel):
    """An org as platform admins list it."""

    id: str
    name: str
    timezone: str
    platform: bool
    user_count: int
    created_at: str


class OrgList(ListView[OrgSummaryView]):
    """`GET /v1/admin/orgs`."""


# --- pools, quota, sessions ----------------------------------------------------------------------------------


class PoolView(BaseModel):
    """A pool with its live numbers for the current period (`resets_at` null: a pool without a period)."""

    id: str
    owner_type: str
    owner_id: str
    unit: str
    period: str
    provider: str | None
    model: str | None
    limit: int
    used: int
    reserved: int
    remaining: int
    resets_at: str | None


class PoolList(ListView[PoolView]):
    """`GET /v1/admin/pools`."""


class DeletedPoolView(BaseModel):
    """`DELETE /v1/admin/pools/{pool_id}`."""

    id: str
    deleted: bool


class QuotaView(BaseModel):
    """Every pool that applies to a user, plus the flat figures of their personal token pool."""

    pools: list[PoolView]
    personal_quota: int
    used_tokens: int
    reserved_tokens: int
    available_quota: int
    team_pool_available: int
    vacation_share_available: int
    status: str


class SessionView(BaseModel):
    """A session's budget in micro-dollars (`pool_id` null: never used, the org's default applies)."""

    session_id: str
    pool_id: str | None
    budget_usd_micros: int
    spent_usd_micros: int
    reserved_usd_micros: int
    remaining_usd_micros: int


class SessionList(ListView[SessionView]):
    """`GET /v1/admin/sessions`."""


class TeamMemberView(BaseModel):
    """A member of a team the caller manages, with their personal token pool."""

    id: str
    email: str
    name: str
    status: str
    role: str
    personal_pool: PoolView | None


class MyTeamView(BaseModel):
    """One of the caller's teams; `members` and `pools` only for teams the caller manages."""

    id: str
    name: str
    role: str
    member_count: int
    members: list[TeamMemberView] | None = None
    pools: list[PoolView] | None = None


class MyTeamList(ListView[MyTeamView]):
    """`GET /v1/users/me/teams`."""


# --- freezes -------------------------------------------------------------------------------------------------


class FreezeView(BaseModel):
    """A freeze of a session, key or user (`expires_at` null: until lifted)."""

    id: str
    target_type: str
    target_id: str
    reason: str
    source: str
    user_id: str | None
    expires_at: str | None
    created_at: str


class FreezeList(ListView[FreezeView]):
    """`GET /v1/admin/freezes`: live freezes of the org."""


class UnfreezeView(BaseModel):
    """`DELETE /v1/admin/freezes/{target_type}/{target_id}`: how many live freezes were lifted."""

    target_type: str
    target_id: str
    frozen: bool
    lifted: int


# --- keys ----------------------------------------------------------------------------------------------------


class KeyView(BaseModel):
    """An API key without its secret (`null` bucket sizes: the org's)."""

    id: str
    name: str
    key_prefix: str
    created_at: str
    revoked_at: str | None
    expires_at: str | None
    allowed_models: list[str] | None
    allowed_priorities: list[str] | None
    rate_limit_requests_per_period: int | None
    rate_limit_tokens_per_period: int | None


class KeyList(ListView[KeyView]):
    """A user's keys."""


class NewKeyView(KeyView):
    """`POST /v1/users/me/keys`: the new key and its secret (shown only here)."""

    api_key: str


class RotatedKeyView(NewKeyView):
    """`POST /v1/users/me/keys/{key_id}/rotate`: the replacement key, its secret and the key it replaced."""

    rotated_from: str


class RevokedKeyView(BaseModel):
    """A revoked key."""

    id: str
    revoked: bool


# --- approvals -----------------------------------------------------------------------------------------------


class ApprovalView(BaseModel):
    """A request for more tokens on the requester's personal pool, and its decision."""

    id: str
    team_id: str
    requester_user_id: str
    pool_id: str
    requested_credits: int
    unit: str
    reason: str
    priority: str
    status: str
    approved_credits: int | None
    decided_by: str | None
    decision_reason: str | None
    decided_at: str | None
    created_at: str


class ApprovalList(ListView[ApprovalView]):
    """A list of approval requests."""
