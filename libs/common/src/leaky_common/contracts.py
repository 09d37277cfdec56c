"""HTTP contracts between services (the gateway's one call to quota on the hot path)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from leaky_common.auth import Principal

__all__ = ["AdmitRequest", "AdmitResponse", "AuthenticateRequest", "RateLimitState"]


class AuthenticateRequest(BaseModel):
    """`POST /internal/authenticate`: resolve an API key to its principal (401 if unknown, revoked or expired)."""

    api_key: str


class AdmitRequest(BaseModel):
    """`POST /internal/admit`: authenticate, check freezes and buckets, and reserve the estimate atomically."""

    model_config = ConfigDict(frozen=True)

    api_key: str
    request_id: str
    model: str
    provider: str
    estimated_tokens: int
    estimated_cost_usd_micros: int
    session_id: str | None = None
    priority: str | None = None
    privacy: str | None = None


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
    reserved_usd_micros: int = 0
    privacy_strict: bool = False
    ratelimit: RateLimitState
