"""HTTP routes: create, read and list purchases (the gateway forwards the principal)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import uuid4

import asyncpg
from fastapi import APIRouter, Depends, Header, Query, Request, Response
from opentelemetry import propagate
from pydantic import BaseModel, ConfigDict, Field, model_validator

from leaky_common.auth import Principal, principal_from_headers
from leaky_common.errors import Conflict, InvalidRequest, NotFound, ServiceUnavailable
from lt_saga import repository as repo
from lt_saga.domain import PurchaseRequest, Status, payment_amount_minor, price_usd_micros, request_hash
from lt_saga.repository import Purchase, Step
from lt_saga.saga import SagaRunner
from lt_saga.settings import SagaSettings

__all__ = ["MAX_AMOUNT", "PurchaseBody", "router"]

# A trillion tokens (or a million dollars in micro-dollars): far beyond any real top-up, well inside BIGINT.
MAX_AMOUNT = 10**12
MAX_IDEMPOTENCY_KEY = 100

router = APIRouter()


class PurchaseBody(BaseModel):
    """`{tokens}` or `{amount, unit, pool_id?}`, optionally with a test `payment_method`."""

    model_config = ConfigDict(extra="forbid")

    tokens: int | None = Field(default=None, gt=0, le=MAX_AMOUNT, strict=True)
    amount: int | None = Field(default=None, gt=0, le=MAX_AMOUNT, strict=True)
    unit: Literal["tokens", "usd"] | None = None
    pool_id: str | None = Field(default=None, min_length=1, max_length=100)
    payment_method: str = Field(
        default="pm_card_visa", min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_]+$"
    )

    @model_validator(mode="after")
    def _one_amount(self) -> PurchaseBody:
        if (self.tokens is None) == (self.amount is None):
            raise ValueError("give either tokens or amount (with unit), not both")
        if self.tokens is not None and self.unit not in (None, "tokens"):
            raise ValueError("tokens purchases have unit tokens; use amount with unit usd instead")
        return self

    def to_request(self) -> PurchaseRequest:
        """The domain request."""
        if self.tokens is not None:
            return PurchaseRequest(self.tokens, "tokens", self.pool_id, self.payment_method)
        assert self.amount is not None
        return PurchaseRequest(self.amount, self.unit or "tokens", self.pool_id, self.payment_method)


def _settings(request: Request) -> SagaSettings:
    settings: SagaSettings = request.app.state.settings
    return settings


async def _pool(request: Request) -> asyncpg.Pool:
    pool: asyncpg.Pool = request.app.state.pool
    return pool


def _runner(request: Request) -> SagaRunner:
    runner: SagaRunner = request.app.state.runner
    return runner


async def current_principal(
    request: Request,
    x_lt_principal: Annotated[str | None, Header()] = None,
    x_lt_internal_token: Annotated[str | None, Header()] = None,
) -> Principal:
    """The caller, from the gateway's internal headers."""
    return principal_from_headers(x_lt_principal, x_lt_internal_token, _settings(request).internal_token)


async def admin_principal(
    request: Request,
    x_lt_principal: Annotated[str | None, Header()] = None,
    x_lt_internal_token: Annotated[str | None, Header()] = None,
) -> Principal:
    """The caller, who must be an admin."""
    return principal_from_headers(
        x_lt_principal, x_lt_internal_token, _settings(request).internal_token, admin=True
    )


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]
AdminPrincipal = Annotated[Principal, Depends(admin_principal)]
PoolDep = Annotated[asyncpg.Pool, Depends(_pool)]


def _trace_context(request: Request) -> dict[str, str]:
    """The W3C trace context to continue in every step: the current span's, else the caller's headers."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    if "traceparent" not in carrier:
        # Tracing is off in this process: keep the caller's context so the saga still joins its trace.
        carrier = {k: v for k in ("traceparent", "tracestate") if (v := request.headers.get(k))}
    return carrier


def _iso(value: datetime) -> str:
    return value.isoformat()


def _summary(p: Purchase) -> dict[str, Any]:
    return {
        "id": p.id,
        "object": "purchase",
        "status": p.status.value,
        "user_id": p.user_id,
        "org_id": p.org_id,
        "amount": p.amount,
        "unit": p.unit,
        "pool_id": p.pool_id,
        "price_usd_micros": p.price_usd_micros,
        "payment_intent_id": p.payment_intent_id,
        "reason": p.reason,
        "created_at": _iso(p.created_at),
        "updated_at": _iso(p.updated_at),
    }


def _detail(p: Purchase, steps: list[Step]) -> dict[str, Any]:
    return {
        **_summary(p),
        "steps": [{"step": s.step, "status": s.status, "at": _iso(s.at), "detail": s.detail} for s in steps],
    }


@router.post("/v1/purchases", status_code=202, tags=["purchases"])
async def create_purchase(
    body: PurchaseBody,
    request: Request,
    response: Response,
    principal: CurrentPrincipal,
    pool: PoolDep,
    idempotency_key: Annotated[str | None, Header()] = None,
) -> dict[str, Any]:
    """Start a purchase saga (202); the same Idempotency-Key and body return the same purchase (200)."""
    purchase = await _start_purchase(body, request, response, principal, pool, idempotency_key)
    return {"id": purchase.id, "status": purchase.status.value, "price_usd_micros": purchase.price_usd_micros}


@router.post("/api/v1/tokens/purchase", status_code=202, tags=["purchases"])
async def create_purchase_alias(
    body: PurchaseBody,
    request: Request,
    response: Response,
    principal: CurrentPrincipal,
    pool: PoolDep,
    idempotency_key: Annotated[str | None, Header()] = None,
) -> dict[str, Any]:
    """Leaky Tokens' original path: the same purchase, answered with its `{sagaId, status, createdAt}` too."""
    purchase = await _start_purchase(body, request, response, principal, pool, idempotency_key)
    return {
        "id": purchase.id,
        "sagaId": purchase.id,
        "status": purchase.status.value,
        "createdAt": _iso(purchase.created_at),
        "price_usd_micros": purchase.price_usd_micros,
    }


async def _start_purchase(
    body: PurchaseBody,
    request: Request,
    response: Response,
    principal: Principal,
    pool: asyncpg.Pool,
    idempotency_key: str | None,
) -> Purchase:
    settings = _settings(request)
    if not settings.purchases_enabled:
        raise ServiceUnavailable("purchases are switched off on this gateway", code="purchases_disabled")
    if not idempotency_key or not idempotency_key.strip():
        raise InvalidRequest("the Idempotency-Key header is required", code="missing_idempotency_key")
    if len(idempotency_key) > MAX_IDEMPOTENCY_KEY:
        raise InvalidRequest(
            f"Idempotency-Key is longer than {MAX_IDEMPOTENCY_KEY} characters", code="invalid_idempotency_key"
        )
    purchase_request = body.to_request()
    price = price_usd_micros(
        purchase_request.amount, purchase_request.unit, settings.price_usd_micros_per_1k_tokens
    )
    fingerprint = request_hash(purchase_request)
    async with pool.acquire() as conn, conn.transaction():
        purchase, created = await repo.insert_purchase(
            conn,
            purchase_id=f"pur_{uuid4().hex}",
            user_id=principal.user_id,
            org_id=principal.org_id,
            request=purchase_request,
            price_usd_micros=price,
            payment_amount_minor=payment_amount_minor(price),
            currency=settings.payment_currency,
            idempotency_key=idempotency_key,
            request_hash=fingerprint,
            trace_context=_trace_context(request),
            owner=_runner(request).owner,
            lease_s=settings.lease_s,
        )
        if created:
            await repo.add_step(conn, purchase.id, "saga", "pending", None)
    if not created:
        if purchase.request_hash != fingerprint:
            raise Conflict(
                "this Idempotency-Key was already used with a different request",
                code="idempotency_key_reused",
            )
        response.status_code = 200
        response.headers["Idempotent-Replayed"] = "true"
    else:
        _runner(request).start(purchase.id, claimed=True)
    return purchase


@router.get("/v1/purchases/{purchase_id}", tags=["purchases"])
@router.get("/api/v1/tokens/purchase/{purchase_id}", tags=["purchases"], operation_id="get_purchase_alias")
async def get_purchase(purchase_id: str, principal: CurrentPrincipal, pool: PoolDep) -> dict[str, Any]:
    """One purchase with its step log; only its owner or an admin of its org may see it."""
    async with pool.acquire() as conn:
        purchase = await repo.get_purchase(conn, purchase_id)
        if purchase is None or (
            purchase.user_id != principal.user_id
            and not (principal.is_admin and purchase.org_id == principal.org_id)
        ):
            raise NotFound(f"no purchase {purchase_id}", code="purchase_not_found")
        steps = await repo.list_steps(conn, purchase_id)
    return _detail(purchase, steps)


Limit = Annotated[int, Query(ge=1, le=500)]
StatusFilter = Annotated[Status | None, Query(description="only purchases in this status")]


@router.get("/v1/purchases", tags=["purchases"])
async def list_own_purchases(
    principal: CurrentPrincipal, pool: PoolDep, limit: Limit = 100, status: StatusFilter = None
) -> dict[str, Any]:
    """The caller's purchases, newest first."""
    async with pool.acquire() as conn:
        purchases = await repo.list_purchases(conn, user_id=principal.user_id, status=status, limit=limit)
    return {"object": "list", "data": [_summary(p) for p in purchases]}


@router.get("/v1/admin/purchases", tags=["admin"])
async def list_all_purchases(
    admin: AdminPrincipal,
    pool: PoolDep,
    limit: Limit = 100,
    status: StatusFilter = None,
    user_id: Annotated[str | None, Query(max_length=100)] = None,
) -> dict[str, Any]:
    """Every purchase of the admin's org, newest first, optionally of one user or in one status."""
    async with pool.acquire() as conn:
        purchases = await repo.list_purchases(
            conn, user_id=user_id, status=status, limit=limit, org_id=admin.org_id
        )
    return {"object": "list", "data": [_summary(p) for p in purchases]}
