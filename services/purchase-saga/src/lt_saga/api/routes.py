"""HTTP routes: create, read and list purchases (the gateway forwards the principal)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Response

from leaky_common.api import AdminPrincipal, CurrentPrincipal, error_responses
from lt_saga.api.deps import PurchasesDep, TraceContext
from lt_saga.api.schemas import (
    PurchaseAccepted,
    PurchaseAcceptedAlias,
    PurchaseBody,
    PurchaseDetail,
    PurchaseList,
    PurchaseSummary,
)
from lt_saga.domain.purchase import Purchase
from lt_saga.domain.saga import Status

__all__ = ["router"]

router = APIRouter()

IdempotencyKey = Annotated[str | None, Header()]
Limit = Annotated[int, Query(ge=1, le=500)]
StatusFilter = Annotated[Status | None, Query(description="only purchases in this status")]
_START_ERRORS = error_responses(400, 409, 503)


async def _start(
    body: PurchaseBody,
    response: Response,
    principal: CurrentPrincipal,
    purchases: PurchasesDep,
    trace_context: TraceContext,
    idempotency_key: str | None,
) -> Purchase:
    purchase, created = await purchases.start(principal, body.to_request(), idempotency_key, trace_context)
    if not created:
        response.status_code = 200
        response.headers["Idempotent-Replayed"] = "true"
    return purchase


@router.post("/v1/purchases", status_code=202, tags=["purchases"], responses=_START_ERRORS)
async def create_purchase(
    body: PurchaseBody,
    response: Response,
    principal: CurrentPrincipal,
    purchases: PurchasesDep,
    trace_context: TraceContext,
    idempotency_key: IdempotencyKey = None,
) -> PurchaseAccepted:
    """Start a purchase saga (202); the same Idempotency-Key and body return the same purchase (200)."""
    purchase = await _start(body, response, principal, purchases, trace_context, idempotency_key)
    return PurchaseAccepted.of(purchase)


@router.post("/api/v1/tokens/purchase", status_code=202, tags=["purchases"], responses=_START_ERRORS)
async def create_purchase_alias(
    body: PurchaseBody,
    response: Response,
    principal: CurrentPrincipal,
    purchases: PurchasesDep,
    trace_context: TraceContext,
    idempotency_key: IdempotencyKey = None,
) -> PurchaseAcceptedAlias:
    """Leaky Tokens' original path: the same purchase, answered with its `{sagaId, status, createdAt}` too."""
    purchase = await _start(body, response, principal, purchases, trace_context, idempotency_key)
    return PurchaseAcceptedAlias.of(purchase)


@router.get("/v1/purchases/{purchase_id}", tags=["purchases"], responses=error_responses(404))
@router.get(
    "/api/v1/tokens/purchase/{purchase_id}",
    tags=["purchases"],
    operation_id="get_purchase_alias",
    responses=error_responses(404),
)
async def get_purchase(
    purchase_id: str, principal: CurrentPrincipal, purchases: PurchasesDep
) -> PurchaseDetail:
    """One purchase with its step log; only its owner or an admin of its org may see it."""
    purchase, steps = await purchases.get(principal, purchase_id)
    return PurchaseDetail.with_steps(purchase, steps)


@router.get("/v1/purchases", tags=["purchases"])
async def list_own_purchases(
    principal: CurrentPrincipal, purchases: PurchasesDep, limit: Limit = 100, status: StatusFilter = None
) -> PurchaseList:
    """The caller's purchases, newest first."""
    found = await purchases.find(user_id=principal.user_id, status=status, limit=limit)
    return PurchaseList(data=[PurchaseSummary.of(p) for p in found])


@router.get("/v1/admin/purchases", tags=["admin"], responses=error_responses(403))
async def list_all_purchases(
    admin: AdminPrincipal,
    purchases: PurchasesDep,
    limit: Limit = 100,
    status: StatusFilter = None,
    user_id: Annotated[str | None, Query(max_length=100)] = None,
) -> PurchaseList:
    """Every purchase of the admin's org, newest first, optionally of one user or in one status."""
    found = await purchases.find(user_id=user_id, status=status, limit=limit, org_id=admin.org_id)
    return PurchaseList(data=[PurchaseSummary.of(p) for p in found])
