"""The authenticated principal, as the gateway hands it to internal services.

The gateway authenticates every public request once (through quota) and forwards the principal in
`X-LT-Principal` together with the shared `X-LT-Internal-Token`. Internal services trust the principal only
when the token matches (compared in constant time).
"""

from __future__ import annotations

import hmac
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from leaky_common.errors import Forbidden, Unauthorized

__all__ = [
    "INTERNAL_TOKEN_HEADER",
    "PRINCIPAL_HEADER",
    "Principal",
    "principal_from_headers",
    "refuse_if_blocked",
]

PRINCIPAL_HEADER = "x-lt-principal"
INTERNAL_TOKEN_HEADER = "x-lt-internal-token"


class Principal(BaseModel):
    """Who is calling: a user (through one of their API keys) or an admin."""

    model_config = ConfigDict(frozen=True)

    user_id: str
    org_id: str
    key_id: str | None = None
    team_id: str | None = None
    role: Literal["admin", "user"] = "user"
    email: str | None = None
    # Models this key may call (None: every model). The gateway filters `/v1/models` with it; quota enforces it.
    allowed_models: tuple[str, ...] | None = None
    # Teams this user manages (team-member role `manager`), sorted; empty for everyone else. Analytics lets a
    # manager read these teams' reports and anomalies. Quota fills it from the key cache, so a role change can
    # take up to `LT_KEY_CACHE_TTL_S` to show in other quota processes.
    managed_team_ids: tuple[str, ...] = ()
    # True for admins of the platform org (`orgs.platform` in quota): they may also change platform-wide settings
    # (the global anomaly thresholds, all-org notifier subscriptions). Every other admin stays within `org_id`.
    platform_admin: bool = False
    # Why this caller may change nothing (`user_suspended`, `key_frozen`, `user_frozen`), or None. Quota sets it
    # when it authenticates a management call; every service refuses state-changing requests with a 403 of
    # this code (`refuse_if_blocked`), so a suspension or freeze cannot be sidestepped by managing around it.
    management_block: str | None = None
    # True when the key is restricted (allowed models or priorities, own caps or bucket sizes, an expiry): it
    # may not change admin settings, and the keys it makes are at least as narrow as itself.
    key_restricted: bool = False

    @property
    def is_admin(self) -> bool:
        """True for admin keys."""
        return self.role == "admin"

    def manages(self, team_id: str) -> bool:
        """True if this user is a manager of `team_id`."""
        return team_id in self.managed_team_ids

    def header_value(self) -> str:
        """The value to send in `X-LT-Principal`."""
        return self.model_dump_json()


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def refuse_if_blocked(principal: Principal, method: str, *, admin: bool = False) -> None:
    """403 for a state-changing request by a suspended user or a frozen key (any route), or by a restricted
    key on an admin route (see docs/security.md, "Authorization and tenancy")."""
    if method.upper() in SAFE_METHODS:
        return
    if principal.management_block is not None:
        raise Forbidden(
            "a suspended user or a frozen key may not change anything", code=principal.management_block
        )
    if admin and principal.key_restricted:
        raise Forbidden(
            "a restricted key (allowed models or priorities, own caps, an expiry) may not change admin "
            "settings; use an unrestricted admin key",
            code="restricted_key",
        )


def token_matches(given: str | None, expected: str) -> bool:
    """Constant-time comparison of the internal token."""
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def principal_from_headers(
    principal_header: str | None, token_header: str | None, internal_token: str, *, admin: bool = False
) -> Principal:
    """Validate internal headers and return the principal; raise 401/403 otherwise."""
    if not token_matches(token_header, internal_token) or not principal_header:
        raise Unauthorized("missing or invalid credentials")
    try:
        principal = Principal.model_validate_json(principal_header)
    except ValidationError as exc:
        raise Unauthorized("malformed principal") from exc
    if admin and not principal.is_admin:
        raise Forbidden("this endpoint needs an admin key", code="admin_required")
    return principal
