"""HTTP request and response bodies of the quota service."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
)

__all__ = [
    "BUCKET_FIELDS",
    "AddMemberBody",
    "ApprovalBody",
    "ApproveBody",
    "ConsumeBody",
    "CreateKeyBody",
    "CreateOrgBody",
    "CreatePoolBody",
    "CreateTeamBody",
    "CreateUserBody",
    "FreezeBody",
    "FreezeTarget",
    "OrgBody",
    "PasswordBody",
    "PrimaryTeamBody",
    "PrivacyBody",
    "RejectBody",
    "SessionBudgetBody",
    "StatusBody",
    "TeamBucketsBody",
    "UpdateKeyBody",
    "UpdatePoolBody",
    "UpdateUserBody",
]

Email = Annotated[
    str, StringConstraints(strip_whitespace=True, to_lower=True, max_length=254, pattern=r"^[^@\s]+@[^@\s]+$")
]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Unit = Literal["tokens", "usd"]
PeriodName = Literal["none", "daily", "weekly", "monthly"]
Priority = Literal["low", "normal", "high", "critical"]
Amount = Annotated[int, Field(ge=0, le=10**15)]
Pattern = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Text = Annotated[str, StringConstraints(strip_whitespace=True, max_length=1000)]
RequestsPerPeriod = Annotated[int, Field(ge=1, le=10**9)]
TokensPerPeriod = Annotated[int, Field(ge=1, le=10**15)]


class CreateUserBody(BaseModel):
    """`POST /v1/admin/users`."""

    model_config = ConfigDict(extra="forbid")

    email: Email
    name: Name
    personal_quota: int | None = Field(default=None, ge=0, le=10**15)
    unit: Unit = "tokens"
    period: PeriodName = "none"
    team_id: str | None = None
    role: Literal["admin", "user"] = "user"


class CreateTeamBody(BaseModel):
    """`POST /v1/admin/teams`."""

    model_config = ConfigDict(extra="forbid")

    name: Name
    pool: int | None = Field(default=None, ge=0, le=10**15)


class AddMemberBody(BaseModel):
    """Optional body of `POST /v1/admin/teams/{team_id}/members/{user_id}`."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["member", "manager"] = "member"


class CreateKeyBody(BaseModel):
    """Optional body of `POST /v1/users/me/keys`: name, expiry, allowed models (globs) and priorities, and
    the key's own caps (a tokens and/or micro-dollar pool owned by the key, optionally per period)."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)] = ""
    expires_in_days: int | None = Field(default=None, ge=1, le=3650)
    allowed_models: list[Pattern] | None = Field(default=None, max_length=100)
    allowed_priorities: list[Priority] | None = None
    max_tokens: Amount | None = None
    max_usd_micros: Amount | None = None
    cap_period: PeriodName = "none"
    # The key's own leaky-bucket sizes per period (an owner stays within the org's key size).
    rate_limit_requests_per_period: RequestsPerPeriod | None = None
    rate_limit_tokens_per_period: TokensPerPeriod | None = None


class UpdateKeyBody(BaseModel):
    """`PATCH /v1/users/me/keys/{id}` and `PATCH /v1/admin/users/{user}/keys/{id}`: the key's own bucket
    sizes; null removes one (the key then takes the org's size)."""

    model_config = ConfigDict(extra="forbid")

    rate_limit_requests_per_period: RequestsPerPeriod | None = None
    rate_limit_tokens_per_period: TokensPerPeriod | None = None


class UpdateUserBody(BaseModel):
    """`PATCH /v1/admin/users/{user_id}`."""

    model_config = ConfigDict(extra="forbid")

    name: Name | None = None
    status: Literal["active", "on_vacation", "suspended"] | None = None
    role: Literal["admin", "user"] | None = None
    default_priority: Priority | None = None
    allow_priority_bypass: bool | None = None
    privacy_default: Literal["standard", "strict"] | None = None
    tier: Annotated[str, StringConstraints(min_length=1, max_length=50)] | None = None


class StatusBody(BaseModel):
    """`PUT /v1/users/me/status`."""

    model_config = ConfigDict(extra="forbid")

    status: Literal["active", "on_vacation"]
    # When the vacation ends (at most LT_VACATION_MAX_DAYS ahead, which is also the default); only with
    # `on_vacation`.
    until: datetime | None = None


class PasswordBody(BaseModel):
    """`PUT /v1/users/me/password`: the new password, and the current one when changing it over a sign-in
    access token (an API key is proof enough by itself)."""

    model_config = ConfigDict(extra="forbid")

    password: str = Field(min_length=1, max_length=1024)
    current_password: str | None = Field(default=None, min_length=1, max_length=1024)


class PrivacyBody(BaseModel):
    """`PUT /v1/users/me/privacy`."""

    model_config = ConfigDict(extra="forbid")

    privacy: Literal["standard", "strict"]


def _known_zone(value: str | None) -> str | None:
    """An IANA time zone name (or None)."""
    if value is not None:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r} (use an IANA name like Europe/Berlin)") from exc
    return value


TimeZone = Annotated[str, StringConstraints(min_length=1, max_length=64), AfterValidator(_known_zone)]


class CreateOrgBody(BaseModel):
    """`POST /v1/admin/orgs` (platform admins): the org and its first admin."""

    model_config = ConfigDict(extra="forbid")

    name: Name
    timezone: TimeZone = "UTC"
    admin_email: Email
    admin_name: Name = "Administrator"
    personal_quota: Amount | None = None


class OrgBody(BaseModel):
    """`PATCH /v1/admin/org`."""

    model_config = ConfigDict(extra="forbid")

    timezone: TimeZone | None = None
    vacation_share_percent: int | None = Field(default=None, ge=0, le=100)
    allow_vacation_sharing: bool | None = None
    default_session_budget_usd_micros: Amount | None = None
    strict_sessions: bool | None = None
    privacy_strict: bool | None = None
    # Leaky-bucket sizes per period for the org's keys and users; null goes back to the service's setting.
    key_requests_per_period: RequestsPerPeriod | None = None
    key_tokens_per_period: TokensPerPeriod | None = None
    user_requests_per_period: RequestsPerPeriod | None = None
    user_tokens_per_period: TokensPerPeriod | None = None
    # The most a manager (not an admin) may approve per request; null: up to what was requested.
    manager_approval_limit: Annotated[int, Field(ge=1, le=10**15)] | None = None

    def changes(self) -> dict[str, object]:
        """The fields given: settings without null, bucket sizes and the manager limit with null (= back to
        the default)."""
        given = self.model_dump(exclude_unset=True)
        nullable = {*BUCKET_FIELDS, "manager_approval_limit"}
        return {k: v for k, v in given.items() if v is not None or k in nullable}


BUCKET_FIELDS = frozenset(
    {"key_requests_per_period", "key_tokens_per_period", "user_requests_per_period", "user_tokens_per_period"}
)


class TeamBucketsBody(BaseModel):
    """`PATCH /v1/admin/teams/{team_id}/buckets`: the team's bucket sizes per period; null goes back to the
    org's (fields not given stay as they are)."""

    model_config = ConfigDict(extra="forbid")

    key_requests_per_period: RequestsPerPeriod | None = None
    key_tokens_per_period: TokensPerPeriod | None = None
    user_requests_per_period: RequestsPerPeriod | None = None
    user_tokens_per_period: TokensPerPeriod | None = None


class PrimaryTeamBody(BaseModel):
    """`PUT /v1/admin/users/{user_id}/primary-team`: one of the user's teams, or null (the team joined first)."""

    model_config = ConfigDict(extra="forbid")

    team_id: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None


class CreatePoolBody(BaseModel):
    """`POST /v1/admin/pools`: owner (org pools belong to the admin's org), unit, limit, period, scope."""

    model_config = ConfigDict(extra="forbid")

    owner_type: Literal["user", "team", "org", "key"]
    owner_id: str | None = None
    unit: Unit = "tokens"
    limit: Amount
    period: PeriodName = "none"
    provider: Annotated[str, StringConstraints(strip_whitespace=True, max_length=100)] | None = None
    model: Pattern | None = None


class UpdatePoolBody(BaseModel):
    """`PATCH /v1/admin/pools/{pool_id}`."""

    model_config = ConfigDict(extra="forbid")

    limit: Amount | None = None
    period: PeriodName | None = None


class ApprovalBody(BaseModel):
    """`POST /v1/approvals` (`requested_credits` or `amount`: tokens for the personal pool)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    requested_credits: int = Field(
        ge=1, le=10**15, validation_alias=AliasChoices("requested_credits", "amount")
    )
    reason: Text = ""
    priority: Literal["low", "normal", "high", "critical"] = "high"


class ApproveBody(BaseModel):
    """Optional body of `POST /v1/approvals/{id}/approve`."""

    model_config = ConfigDict(extra="forbid")

    approved_credits: int | None = Field(default=None, ge=1, le=10**15)


class RejectBody(BaseModel):
    """Optional body of `POST /v1/approvals/{id}/reject`."""

    model_config = ConfigDict(extra="forbid")

    reason: Text = ""


class SessionBudgetBody(BaseModel):
    """`PUT /v1/admin/sessions/{session_id}/budget`."""

    model_config = ConfigDict(extra="forbid")

    budget_usd_micros: Amount


class ConsumeBody(BaseModel):
    """`POST /api/v1/tokens/consume` (Leaky Tokens)."""

    model_config = ConfigDict(extra="ignore")

    provider: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)] = "mock"
    tokens: int = Field(ge=1, le=10**9)


FreezeTarget = Literal["session", "key", "user"]


class FreezeBody(BaseModel):
    """`POST /v1/admin/freezes`."""

    model_config = ConfigDict(extra="forbid")

    target_type: FreezeTarget
    target_id: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]
    # None: frozen until unfrozen. At most a year.
    duration_s: int | None = Field(default=None, ge=1, le=366 * 86400)


def given_fields(body: BaseModel) -> dict[str, Any]:
    """The fields a PATCH/POST body set explicitly (not None), for partial updates."""
    return dict(body.model_dump(exclude_unset=True, exclude_none=True))
