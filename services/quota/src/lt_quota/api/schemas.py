"""HTTP request and response bodies of the quota service."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

__all__ = [
    "AddMemberBody",
    "CreateKeyBody",
    "CreateTeamBody",
    "CreateUserBody",
    "FreezeBody",
    "FreezeTarget",
    "UserView",
]

Email = Annotated[
    str, StringConstraints(strip_whitespace=True, to_lower=True, max_length=254, pattern=r"^[^@\s]+@[^@\s]+$")
]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


class CreateUserBody(BaseModel):
    """`POST /v1/admin/users`."""

    model_config = ConfigDict(extra="forbid")

    email: Email
    name: Name
    personal_quota: int | None = Field(default=None, ge=0, le=10**15)
    unit: Literal["tokens"] = "tokens"
    period: Literal["none"] = "none"
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
    """Optional body of `POST /v1/users/me/keys`."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)] = ""


class UserView(BaseModel):
    """A user as the API shows it."""

    id: str
    email: str
    name: str
    org_id: str
    team_id: str | None
    role: str
    status: str


FreezeTarget = Literal["session", "key", "user"]


class FreezeBody(BaseModel):
    """`POST /v1/admin/freezes`."""

    model_config = ConfigDict(extra="forbid")

    target_type: FreezeTarget
    target_id: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]
    # None: frozen until unfrozen. At most a year.
    duration_s: int | None = Field(default=None, ge=1, le=366 * 86400)
