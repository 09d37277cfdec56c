"""Purchases as the API sees them: start one (idempotently, per Idempotency-Key), read one, list them."""

from __future__ import annotations

from uuid import uuid4

import asyncpg

from leaky_common.auth import Principal
from leaky_common.errors import Conflict, InvalidRequest, NotFound, ServiceUnavailable
from lt_saga.adapters import repository as repo
from lt_saga.domain.purchase import (
    NewPurchase,
    Purchase,
    PurchaseRequest,
    Step,
    payment_amount_minor,
    price_usd_micros,
    request_hash,
)
from lt_saga.domain.saga import Status
from lt_saga.settings import SagaSettings
from lt_saga.usecases.runner import SagaRunner

__all__ = ["MAX_IDEMPOTENCY_KEY", "Purchases"]

MAX_IDEMPOTENCY_KEY = 100


def _check_idempotency_key(idempotency_key: str | None) -> str:
    if not idempotency_key or not idempotency_key.strip():
        raise InvalidRequest("the Idempotency-Key header is required", code="missing_idempotency_key")
    if len(idempotency_key) > MAX_IDEMPOTENCY_KEY:
        raise InvalidRequest(
            f"Idempotency-Key is longer than {MAX_IDEMPOTENCY_KEY} characters", code="invalid_idempotency_key"
        )
    return idempotency_key


class Purchases:
    """Starts purchase sagas (handing each to the runner) and reads them back for their owners and admins."""

    def __init__(self, pool: asyncpg.Pool, runner: SagaRunner, settings: SagaSettings) -> None:
        self._pool = pool
        self._runner = runner
        self._settings = settings

    async def start(
        self,
        principal: Principal,
        request: PurchaseRequest,
        idempotency_key: str | None,
        trace_context: dict[str, str],
    ) -> tuple[Purchase, bool]:
        """Record a purchase and start its saga; a replay of the same key and request returns the first
        purchase and False (the same key with another request is a 409)."""
        settings = self._settings
        if not settings.purchases_enabled:
            raise ServiceUnavailable("purchases are switched off on this gateway", code="purchases_disabled")
        key = _check_idempotency_key(idempotency_key)
        price = price_usd_micros(request.amount, request.unit, settings.price_usd_micros_per_1k_tokens)
        new = NewPurchase(
            id=f"pur_{uuid4().hex}",
            user_id=principal.user_id,
            org_id=principal.org_id,
            request=request,
            price_usd_micros=price,
            payment_amount_minor=payment_amount_minor(price),
            currency=settings.payment_currency,
            idempotency_key=key,
            request_hash=request_hash(request),
            trace_context=trace_context,
        )
        async with self._pool.acquire() as conn, conn.transaction():
            purchase, created = await repo.insert_purchase(
                conn, new, owner=self._runner.owner, lease_s=settings.lease_s
            )
            if created:
                await repo.add_step(conn, purchase.id, "saga", "pending", None)
        if not created and purchase.request_hash != new.request_hash:
            raise Conflict(
                "this Idempotency-Key was already used with a different request",
                code="idempotency_key_reused",
            )
        if created:
            self._runner.start(purchase.id, claimed=True)
        return purchase, created

    async def get(self, principal: Principal, purchase_id: str) -> tuple[Purchase, list[Step]]:
        """One purchase with its step log; only its owner or an admin of its org may see it (else 404)."""
        async with self._pool.acquire() as conn:
            purchase = await repo.get_purchase(conn, purchase_id)
            if purchase is None or (
                purchase.user_id != principal.user_id
                and not (principal.is_admin and purchase.org_id == principal.org_id)
            ):
                raise NotFound(f"no purchase {purchase_id}", code="purchase_not_found")
            steps = await repo.list_steps(conn, purchase_id)
        return purchase, steps

    async def find(
        self, *, user_id: str | None, status: Status | None, limit: int, org_id: str | None = None
    ) -> list[Purchase]:
        """Newest first, of one user (or all) of one org (or all), optionally in one status."""
        async with self._pool.acquire() as conn:
            return await repo.list_purchases(conn, user_id=user_id, status=status, limit=limit, org_id=org_id)
