"""Leaky Tokens' `/api/v1/tokens/*` aliases: the caller's quota in TokenPool's shape, and `consume`, which
charges tokens through the same admission and settlement as a chat request."""

from __future__ import annotations

from typing import Any

from leaky_common.auth import Principal
from leaky_common.contracts import AdmitRequest
from leaky_common.errors import NotFound
from leaky_common.events import UsageRecorded
from lt_quota.adapters import repository as repo
from lt_quota.domain import new_id
from lt_quota.usecases.admission import Admission
from lt_quota.usecases.context import QuotaContext
from lt_quota.usecases.management.views import PoolViews, require_org
from lt_quota.usecases.settlement import Settlement

__all__ = ["TokenAliases"]


def _consume_request(request_id: str, provider: str, tokens: int) -> AdmitRequest:
    # No output: the reservation is exactly `tokens` (bypassing the contract's minimum of 1).
    return AdmitRequest.model_construct(
        api_key="",
        request_id=request_id,
        model="*",
        provider=provider,
        prompt_tokens=tokens,
        max_output_tokens=None,
        model_max_output_tokens=0,
        min_output_tokens=0,
        input_usd_micros_per_mtok=0,
        output_usd_micros_per_mtok=0,
        session_id=None,
        priority=None,
        privacy=None,
    )


class TokenAliases:
    """TokenPool-compatible views and consumption."""

    def __init__(
        self, ctx: QuotaContext, views: PoolViews, admission: Admission, settlement: Settlement
    ) -> None:
        self.ctx = ctx
        self.views = views
        self.admission = admission
        self.settlement = settlement

    async def tokens_status(self, principal: Principal) -> dict[str, Any]:
        """`GET /api/v1/tokens/status`: the caller's flat quota summary."""
        quota = await self.views.my_quota(principal)
        return {k: v for k, v in quota.items() if k != "pools"} | {"user_id": principal.user_id}

    async def tokens_quota(self, principal: Principal, provider: str | None) -> dict[str, Any]:
        """`GET /api/v1/tokens/quota`: the caller's own pools (404 'quota not found' when there is none)."""
        quota = await self.views.my_quota(principal)
        pools = [
            p
            for p in quota["pools"]
            if p["owner_type"] == "user" and (provider is None or p["provider"] in (None, provider))
        ]
        if not pools:
            raise NotFound("quota not found", code="quota_not_found")
        return {"user_id": principal.user_id, "pools": pools}

    async def tokens_org_quota(self, principal: Principal) -> dict[str, Any]:
        """`GET /api/v1/tokens/quota/org`: the org's pools as the caller's org member sees them."""
        async with self.ctx.db.acquire() as conn:
            pools = await repo.list_pools(conn, principal.org_id, "org")
            org = await require_org(conn, principal.org_id)
        if not pools:
            raise NotFound("quota not found", code="quota_not_found")
        return {"org_id": principal.org_id, "pools": await self.views.pool_views(pools, org.timezone)}

    async def consume(self, principal: Principal, provider: str, tokens: int) -> dict[str, Any]:
        """`POST /api/v1/tokens/consume`: charge `tokens` through the same admission and settlement as a chat
        request (buckets, freezes, every cap, the balancer), settled at once."""
        request_id = new_id()
        record = await self.admission.record_for(principal)
        admitted = await self.admission.admit_record(record, _consume_request(request_id, provider, tokens))
        event = UsageRecorded(
            producer="quota",
            request_id=request_id,
            reservation_id=admitted.reservation_id,
            user_id=admitted.principal.user_id,
            key_id=admitted.principal.key_id,
            pool_id=admitted.pool_id,
            quota_source=admitted.quota_source,
            model="*",
            provider=provider,
            prompt_tokens=tokens,
            total_tokens=tokens,
        )
        await self.settlement.settle_usage(event)
        quota = await self.views.my_quota(admitted.principal)
        return {
            "allowed": True,
            "tokens": tokens,
            "provider": provider,
            "quota_source": admitted.quota_source,
            "remaining": quota["available_quota"],
            "ratelimit": admitted.ratelimit.model_dump(),
        }
