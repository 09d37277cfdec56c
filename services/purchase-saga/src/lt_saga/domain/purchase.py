"""Purchases without I/O: the request, the persisted purchase and its step log, prices and fingerprints."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import orjson

from lt_saga.domain.saga import SagaState, Status

__all__ = [
    "NewPurchase",
    "Purchase",
    "PurchaseRequest",
    "Step",
    "payment_amount_minor",
    "price_usd_micros",
    "request_hash",
    "unit_of",
]


@dataclass(frozen=True)
class PurchaseRequest:
    """A validated purchase: what to credit, to which pool, paid with which method."""

    amount: int
    unit: Literal["tokens", "usd"]
    pool_id: str | None
    payment_method: str


def price_usd_micros(amount: int, unit: str, micros_per_1k_tokens: int) -> int:
    """Price in micro-dollars; token prices round up to the next micro-dollar."""
    if unit == "usd":
        return amount
    return -(-amount * micros_per_1k_tokens // 1000)


def payment_amount_minor(price_micros: int) -> int:
    """Amount to charge in cents (the provider's minor unit), rounded up; at least 1."""
    return max(1, -(-price_micros // 10_000))


def request_hash(request: PurchaseRequest) -> str:
    """Fingerprint of a request, to tell a replay from a different body under the same idempotency key."""
    body = {
        "amount": request.amount,
        "unit": request.unit,
        "pool_id": request.pool_id,
        "pm": request.payment_method,
    }
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


@dataclass(frozen=True)
class NewPurchase:
    """A purchase to record: the request, what it costs, and what identifies a replay of it."""

    id: str
    user_id: str
    org_id: str | None
    request: PurchaseRequest
    price_usd_micros: int
    payment_amount_minor: int
    currency: str
    idempotency_key: str
    request_hash: str
    trace_context: dict[str, str]


@dataclass(frozen=True)
class Purchase:
    """A purchase as persisted: the request, the saga's position, the payment and the lease bookkeeping."""

    id: str
    user_id: str
    org_id: str | None
    amount: int
    unit: str
    pool_id: str | None
    price_usd_micros: int
    payment_amount_minor: int
    currency: str
    status: Status
    compensations: tuple[str, ...]
    deadline_at: datetime | None
    reason: str | None
    idempotency_key: str
    request_hash: str
    payment_method: str
    payment_intent_id: str | None
    version: int
    created_at: datetime
    updated_at: datetime
    command_id: str | None
    resend_at: datetime | None
    resends: int
    trace_context: dict[str, str]

    @property
    def state(self) -> SagaState:
        """The saga position of this purchase."""
        return SagaState(self.status, self.compensations, self.deadline_at)


@dataclass(frozen=True)
class Step:
    """One entry of a purchase's step log."""

    step: str
    status: str
    detail: str | None
    at: datetime


def unit_of(purchase: Purchase) -> Literal["tokens", "usd"]:
    """The purchase's unit, typed for the message contracts."""
    return "usd" if purchase.unit == "usd" else "tokens"
