"""HTTP contracts between services (the gateway's one call to quota on the hot path)."""

from __future__ import annotations

import hashlib
import uuid

from pydantic import BaseModel, ConfigDict, Field

from leaky_common.auth import Principal

__all__ = [
    "QUOTA_LINK_ADMIT",
    "QUOTA_LINK_RELEASE",
    "AccessTokenRequest",
    "AdmitRequest",
    "AdmitResponse",
    "AuthenticateRequest",
    "Jwk",
    "JwkSet",
    "LoginBody",
    "LoginRequest",
    "ProbeResponse",
    "RateLimitState",
    "RefreshBody",
    "ReleaseRequest",
    "ReleaseResponse",
    "TokenResponse",
    "new_reservation_id",
    "org_tag",
]

_TAG_LEN = 8
# A reservation id: its org's tag, then 32 hex digits.
RESERVATION_ID_PATTERN = r"^[0-9a-f]{40}$"


def org_tag(org_id: str | None) -> str:
    """The hash tag of an org's Redis keys (8 hex digits of its id's SHA-1, short whatever the id): every key
    of one admission, its reservation included, lives in the org's hash slot."""
    return hashlib.sha1((org_id or "").encode()).hexdigest()[:_TAG_LEN]  # noqa: S324 - a slot, not a secret


def new_reservation_id(org_id: str | None) -> str:
    """A fresh reservation id for an org: its tag, then 32 random hex digits. The gateway names the reservation
    before it asks quota for it, so that it can release a reservation whose admission it never saw answered."""
    return org_tag(org_id) + uuid.uuid4().hex


class AuthenticateRequest(BaseModel):
    """`POST /internal/authenticate`: resolve an API key to its principal (401 if unknown, revoked or expired)."""

    api_key: str


class AccessTokenRequest(BaseModel):
    """`POST /internal/authenticate-token`: resolve a sign-in access token (JWT) to its principal (401 if invalid,
    expired, signed with an unknown key or its sign-in session has ended)."""

    access_token: str = Field(min_length=1, max_length=4096)


class LoginBody(BaseModel):
    """`POST /v1/auth/login`: the email and password of an account that has set one."""

    model_config = ConfigDict(extra="forbid")

    email: str = Field(min_length=3, max_length=320)
    password: str = Field(min_length=1, max_length=1024)


class LoginRequest(LoginBody):
    """`POST /internal/auth/login`: the login and the client's address (attempts are counted per address)."""

    client_address: str = Field(min_length=1, max_length=64)


class RefreshBody(BaseModel):
    """`POST /v1/auth/refresh` and `POST /v1/auth/logout`: the refresh token of a sign-in session."""

    model_config = ConfigDict(extra="forbid")

    refresh_token: str = Field(min_length=1, max_length=512)


class TokenResponse(BaseModel):
    """A login's or a refresh's answer: a short-lived access token (EdDSA JWT) and a single-use refresh token."""

    access_token: str
    token_type: str = "bearer"
    expires_in: int = Field(description="Seconds until the access token expires")
    refresh_token: str


class Jwk(BaseModel):
    """One public key access tokens are verified with (RFC 8037: an Ed25519 OKP key)."""

    kty: str = "OKP"
    crv: str = "Ed25519"
    alg: str = "EdDSA"
    use: str = "sig"
    kid: str
    x: str = Field(description="The raw public key, unpadded base64url")


class JwkSet(BaseModel):
    """`GET /.well-known/jwks.json`: every key an access token may be signed with (the newest signs)."""

    keys: list[Jwk]


# At most this many releases ride on one admission (`AdmitRequest.releases`); the gateway keeps the rest.
MAX_RELEASES_PER_ADMISSION = 64
# Quota's operations on the internal link (leaky_common.link): the same bodies as the HTTP routes.
QUOTA_LINK_ADMIT = 1  # POST /internal/admit
QUOTA_LINK_RELEASE = 2  # POST /internal/release


class ReleaseRequest(BaseModel):
    """`POST /internal/release`: the answer is complete; shrink its reservation to what it used.

    On a snug budget (`AdmitResponse.release_wait`) sent before the last bytes reach the client, so the next
    request sees the unused part free again; otherwise it rides on the gateway's next admission
    (`AdmitRequest.releases`) or goes out on its own a few milliseconds later. The `UsageRecorded` event stays
    the durable settlement; a reservation released and never settled is charged at its expiry what it used,
    not what it reserved."""

    model_config = ConfigDict(frozen=True)

    reservation_id: str = Field(min_length=1, max_length=64)
    total_tokens: int = Field(ge=0)
    cost_usd_micros: int = Field(ge=0)


class AdmitRequest(BaseModel):
    """`POST /internal/admit`: authenticate, check freezes and buckets, and reserve the estimate atomically."""

    model_config = ConfigDict(frozen=True)

    api_key: str
    request_id: str
    model: str
    provider: str
    # Estimated prompt tokens (offline tokenizer); always reserved in full.
    prompt_tokens: int = Field(ge=0)
    # The client's max_tokens, if any. Quota grants up to this (or the model's maximum) as far as the
    # remaining budget allows, and the gateway caps the upstream request at the grant: spend never
    # exceeds what was reserved.
    max_output_tokens: int | None = Field(default=None, ge=1)
    model_max_output_tokens: int = Field(default=4096, ge=1)
    # Fewer output tokens than this left in budget -> deny instead of admitting a uselessly short answer.
    min_output_tokens: int = Field(default=16, ge=1)
    # Prices in micro-dollars per million tokens, for usd pools and session budgets.
    input_usd_micros_per_mtok: int = Field(default=0, ge=0)
    output_usd_micros_per_mtok: int = Field(default=0, ge=0)
    session_id: str | None = None
    priority: str | None = None
    privacy: str | None = None
    # The id the reservation is to have (`new_reservation_id` of the key's org), chosen by the gateway and
    # journalled before it asks: a reservation whose answer never arrived (quota or the gateway died meanwhile)
    # is released at zero by its id. None, or the tag of another org: quota names it.
    reservation_id: str | None = Field(default=None, pattern=RESERVATION_ID_PATTERN)
    # Releases of earlier answers that did not need to wait (`AdmitResponse.release_wait` false), applied
    # before this admission: the gateway sends them with its next admission rather than in calls of their own.
    releases: list[ReleaseRequest] = Field(default_factory=list, max_length=MAX_RELEASES_PER_ADMISSION)


class RateLimitState(BaseModel):
    """Leaky-bucket state after the admission, for `x-ratelimit-*` and `RateLimit` headers."""

    limit_requests: int
    remaining_requests: int
    reset_requests_s: float
    limit_tokens: int
    remaining_tokens: int
    reset_tokens_s: float


class AdmitResponse(BaseModel):
    """200 from `/internal/admit`. Denials come back as OpenAI-shaped error bodies with their status."""

    reservation_id: str
    principal: Principal
    pool_id: str | None = None
    quota_source: str
    reserved_tokens: int
    granted_output_tokens: int
    reserved_usd_micros: int = 0
    privacy_strict: bool = False
    ratelimit: RateLimitState
    # The gateway waits for the release of the unused part before the answer's last bytes only when this is
    # true: some cap or token bucket keeps less than twice this reservation free, so the next request (up to
    # twice this one) could be refused or shortened for tokens this one will not use. Otherwise the release
    # goes out without the answer waiting for it (it lands within a round trip).
    release_wait: bool = True


class ProbeResponse(BaseModel):
    """200 from `POST /internal/probe`: quota could admit now (its Postgres answers and Redis holds the admission
    script). A zero-cost check: no key is authenticated, nothing is reserved, counted or recorded; 503 when a
    store fails."""

    postgres: bool
    redis: bool


class ReleaseResponse(BaseModel):
    """200 from `/internal/release`: `released` is false when it was released or settled before (or unknown)."""

    released: bool
