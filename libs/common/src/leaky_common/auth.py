"""Internal identity: the authenticated principal, carried between services in a signed, short-lived assertion.

The gateway authenticates every public request once (through quota) and calls the owning service with an
`X-LT-Assertion` header: a JWT signed with the gateway's Ed25519 key (EdDSA), its audience the target service,
its lifetime at most 60 s, its `kid` naming the key so keys can rotate (services accept every public key in
`LT_INTERNAL_PUBLIC_KEYS`). An assertion for a user's call carries the principal (`lt_principal`); a caller
assertion (the gateway calling quota's `/internal/*` routes) carries none. A service reached without a valid
assertion answers 401. See docs/security.md ("Internal identity").
"""

from __future__ import annotations

import base64
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat
from pydantic import BaseModel, ConfigDict, ValidationError

from leaky_common.errors import Forbidden, Unauthorized

__all__ = [
    "ASSERTION_HEADER",
    "MAX_ASSERTION_TTL_S",
    "Assertion",
    "AssertionSigner",
    "AssertionVerifier",
    "Principal",
    "generate_signing_key",
    "looks_like_access_token",
    "public_key_of",
    "refuse_if_blocked",
]

ASSERTION_HEADER = "x-lt-assertion"
MAX_ASSERTION_TTL_S = 60
_ALGORITHM = "EdDSA"
_PRINCIPAL_CLAIM = "lt_principal"


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


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


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


def looks_like_access_token(credential: str) -> bool:
    """True for a sign-in access token (a compact JWS: three dot-separated parts, a JSON header first), which
    no API key is; the gateway sends those to quota's `/internal/authenticate-token` (docs/security.md)."""
    return credential.startswith("eyJ") and credential.count(".") == 2


def generate_signing_key() -> tuple[str, str]:
    """A new Ed25519 key pair as `(private, public)`, each the raw key in unpadded base64url."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return _b64(private), _b64(public)


def public_key_of(private: str) -> str:
    """The public half of a base64url private key (for settings that derive it)."""
    key = Ed25519PrivateKey.from_private_bytes(_unb64(private))
    return _b64(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))


@dataclass(frozen=True, slots=True)
class Assertion:
    """A verified assertion: who signed it, for whom, until when, and the principal if it carries one."""

    issuer: str
    audience: str
    expires_at: int
    principal: Principal | None


class AssertionSigner:
    """Signs assertions with one Ed25519 key; caller assertions (no principal) are reused for half their life."""

    def __init__(self, private_key: str, kid: str, *, issuer: str, ttl_s: int = 30) -> None:
        if not 1 <= ttl_s <= MAX_ASSERTION_TTL_S:
            raise ValueError(f"assertion lifetime must be 1..{MAX_ASSERTION_TTL_S} s")
        self._key = Ed25519PrivateKey.from_private_bytes(_unb64(private_key))
        self._kid = kid
        self._issuer = issuer
        self._ttl_s = ttl_s
        self._callers: dict[str, tuple[float, str]] = {}

    def sign(self, audience: str, principal: Principal | None = None) -> str:
        """A fresh assertion for `audience`, carrying `principal` if given."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self._issuer,
            "aud": audience,
            "iat": now,
            "exp": now + self._ttl_s,
            "jti": secrets.token_urlsafe(12),
        }
        if principal is not None:
            claims[_PRINCIPAL_CLAIM] = principal.model_dump(mode="json")
        return jwt.encode(claims, self._key, algorithm=_ALGORITHM, headers={"kid": self._kid})

    def caller(self, audience: str) -> str:
        """A caller assertion for `audience` (no principal), cached and renewed when half its life is gone."""
        now = time.monotonic()
        cached = self._callers.get(audience)
        if cached is not None and cached[0] > now:
            return cached[1]
        token = self.sign(audience)
        self._callers[audience] = (now + self._ttl_s / 2, token)
        return token

    def headers(self, audience: str, principal: Principal | None = None) -> dict[str, str]:
        """`{X-LT-Assertion: ...}`: the principal's assertion, or the cached caller assertion without one."""
        token = self.sign(audience, principal) if principal is not None else self.caller(audience)
        return {ASSERTION_HEADER: token}


class AssertionVerifier:
    """Verifies assertions addressed to one audience against a set of public keys (by `kid`).

    Verified tokens are remembered until they expire (the gateway reuses its caller assertion, so quota's hot
    path checks a signature about once per half-lifetime instead of per request); expiry is checked on every use.
    """

    _CACHE_MAX = 4096

    def __init__(self, public_keys: Mapping[str, str], audience: str, *, leeway_s: int = 2) -> None:
        self._keys = {
            kid: Ed25519PublicKey.from_public_bytes(_unb64(key)) for kid, key in public_keys.items()
        }
        self._audience = audience
        self._leeway_s = leeway_s
        self._verified: dict[str, Assertion] = {}

    def verify(self, token: str | None) -> Assertion:
        """The assertion in `token`, or 401 (missing, forged, expired, for another service, unknown key)."""
        if not token:
            raise Unauthorized("missing internal assertion", code="invalid_internal_assertion")
        now = time.time()
        cached = self._verified.get(token)
        if cached is not None:
            if cached.expires_at + self._leeway_s >= now:
                return cached
            del self._verified[token]
        assertion = self._decode(token)
        if len(self._verified) >= self._CACHE_MAX:
            self._verified.clear()
        self._verified[token] = assertion
        return assertion

    def _decode(self, token: str) -> Assertion:
        try:
            kid = jwt.get_unverified_header(token).get("kid")
            key = self._keys.get(kid) if isinstance(kid, str) else None
            if key is None:
                raise Unauthorized("unknown internal signing key", code="invalid_internal_assertion")
            claims = jwt.decode(
                token,
                key,
                algorithms=[_ALGORITHM],
                audience=self._audience,
                leeway=self._leeway_s,
                options={"require": ["exp", "iat", "aud", "iss"]},
            )
            if int(claims["exp"]) - int(claims["iat"]) > MAX_ASSERTION_TTL_S:
                raise Unauthorized("internal assertion lives too long", code="invalid_internal_assertion")
            raw = claims.get(_PRINCIPAL_CLAIM)
            principal = Principal.model_validate(raw) if raw is not None else None
        except (jwt.PyJWTError, ValidationError, ValueError, TypeError) as exc:
            raise Unauthorized("invalid internal assertion", code="invalid_internal_assertion") from exc
        return Assertion(str(claims["iss"]), self._audience, int(claims["exp"]), principal)

    def principal(self, token: str | None, *, admin: bool = False) -> Principal:
        """The principal of a user's assertion: 401 without one, 403 for a non-admin where `admin`."""
        principal = self.verify(token).principal
        if principal is None:
            raise Unauthorized("the internal assertion names no caller", code="invalid_internal_assertion")
        if admin and not principal.is_admin:
            raise Forbidden("this endpoint needs an admin key", code="admin_required")
        return principal

    def caller(self, token: str | None) -> Assertion:
        """A service-to-service assertion (no principal): the only kind `/internal/*` routes accept."""
        assertion = self.verify(token)
        if assertion.principal is not None:
            raise Unauthorized("internal routes take a caller assertion", code="invalid_internal_assertion")
        return assertion
