"""Persisting the saga's progress: state transitions (with their events and metrics) and the step log.

Every function takes a connection inside the caller's transaction, so a step's result, its log entry and
any message it announces commit together.
"""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import uuid4

import asyncpg
from prometheus_client import Counter, Gauge, Histogram

from leaky_common.events import PurchaseCompensated, PurchaseCompleted, PurchaseFailed
from leaky_common.outbox import write_outbox
from lt_saga.adapters import repository as repo
from lt_saga.domain.purchase import Purchase, unit_of
from lt_saga.domain.saga import Status, check_transition, outcome_of
from lt_saga.settings import SagaSettings

__all__ = [
    "PURCHASES_BY_STATUS",
    "PURCHASES_TOTAL",
    "PURCHASE_SECONDS",
    "STEPS_TOTAL",
    "finish_compensation_step",
    "log_step",
    "new_event_id",
    "now",
    "start_compensation",
    "transition",
]

PURCHASES_TOTAL = Counter("lt_saga_purchases_total", "Purchases that reached a terminal status", ["status"])
PURCHASES_BY_STATUS = Gauge(
    "lt_saga_purchases_by_status", "Purchases per status (refreshed by each recovery pass)", ["status"]
)
STEPS_TOTAL = Counter("lt_saga_steps_total", "Saga step log entries, per step and status", ["step", "status"])
PURCHASE_SECONDS = Histogram(
    "lt_saga_purchase_duration_seconds",
    "From purchase request to terminal status",
    ["status"],
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)

_EVENTS = {
    Status.COMPLETED: PurchaseCompleted,
    Status.FAILED: PurchaseFailed,
    Status.COMPENSATED: PurchaseCompensated,
}


def now() -> datetime:
    """The current time (UTC)."""
    return datetime.now(UTC)


def new_event_id() -> str:
    """A fresh message id (the envelope's format)."""
    return uuid4().hex


async def log_step(
    conn: asyncpg.Connection, purchase_id: str, step: str, status: str, detail: str | None = None
) -> None:
    """Append to the step log and count it."""
    await repo.add_step(conn, purchase_id, step, status, detail)
    STEPS_TOTAL.labels(step, status).inc()


async def transition(
    conn: asyncpg.Connection, purchase: Purchase, settings: SagaSettings, **changes: object
) -> Purchase:
    """Persist a change of saga state; on a terminal status also announce it through the outbox."""
    new_status = changes.get("status", purchase.status)
    assert isinstance(new_status, Status)
    check_transition(purchase.status, new_status)
    updated = await repo.update_purchase(conn, purchase, **changes)
    if new_status != purchase.status and new_status in _EVENTS:
        event = _EVENTS[new_status](
            purchase_id=updated.id,
            user_id=updated.user_id,
            org_id=updated.org_id,
            amount=updated.amount,
            unit=unit_of(updated),
            price_usd_micros=updated.price_usd_micros,
            reason=updated.reason,
            producer=settings.service_name,
            correlation_id=updated.id,
        )
        await write_outbox(conn, settings.purchase_events_topic, event, key=updated.id)
        await log_step(conn, updated.id, "saga", new_status.value.lower(), updated.reason)
        # Terminal transitions are the last statement of their transaction; the optimistic lock makes
        # each one happen once.
        PURCHASES_TOTAL.labels(new_status.value).inc()
        PURCHASE_SECONDS.labels(new_status.value).observe(
            (updated.updated_at - updated.created_at).total_seconds()
        )
    return updated


async def start_compensation(
    conn: asyncpg.Connection,
    purchase: Purchase,
    settings: SagaSettings,
    plan: tuple[str, ...],
    reason: str,
) -> Purchase:
    """Record the compensations before running any of them, then enter COMPENSATING (or end FAILED)."""
    for name in plan:
        await log_step(conn, purchase.id, name, "scheduled", reason)
    if not plan:
        return await transition(
            conn, purchase, settings, status=Status.FAILED, reason=reason, deadline_at=None, compensations=()
        )
    return await transition(
        conn,
        purchase,
        settings,
        status=Status.COMPENSATING,
        compensations=plan,
        deadline_at=None,
        reason=reason,
    )


async def finish_compensation_step(
    conn: asyncpg.Connection, purchase: Purchase, settings: SagaSettings
) -> Purchase:
    """Pop the finished compensation; after the last one, end COMPENSATED or FAILED."""
    remaining = purchase.compensations[1:]
    if remaining:
        return await transition(
            conn,
            purchase,
            settings,
            compensations=remaining,
            deadline_at=None,
            command_id=None,
            resend_at=None,
        )
    plan = await _original_plan(conn, purchase)
    return await transition(
        conn,
        purchase,
        settings,
        status=outcome_of(plan),
        compensations=(),
        deadline_at=None,
        command_id=None,
        resend_at=None,
    )


async def _original_plan(conn: asyncpg.Connection, purchase: Purchase) -> tuple[str, ...]:
    steps = await repo.list_steps(conn, purchase.id)
    return tuple(s.step for s in steps if s.status == "scheduled")
