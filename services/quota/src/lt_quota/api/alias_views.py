"""Response bodies of Leaky Tokens' `/api/v1/tokens/*` aliases (their own flat shapes, kept for its clients)."""

from __future__ import annotations

from pydantic import BaseModel

from leaky_common.contracts import RateLimitState
from lt_quota.api.views import PoolView

__all__ = ["ConsumeView", "OrgQuotaView", "TokensQuotaView", "TokensStatusView"]


class TokensStatusView(BaseModel):
    """`GET /api/v1/tokens/status`: the caller's flat quota figures."""

    personal_quota: int
    used_tokens: int
    reserved_tokens: int
    available_quota: int
    team_pool_available: int
    vacation_share_available: int
    status: str
    user_id: str


class TokensQuotaView(BaseModel):
    """`GET /api/v1/tokens/quota`: the caller's own pools."""

    user_id: str
    pools: list[PoolView]


class OrgQuotaView(BaseModel):
    """`GET /api/v1/tokens/quota/org`: the org's pools."""

    org_id: str
    pools: list[PoolView]


class ConsumeView(BaseModel):
    """`POST /api/v1/tokens/consume`: the charge, where it came from, what is left and the rate-limit state."""

    allowed: bool
    tokens: int
    provider: str
    quota_source: str
    remaining: int
    ratelimit: RateLimitState
