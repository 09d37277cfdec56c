"""All SQL of the purchase saga. Functions take a connection; the caller owns the transaction."""

from __future__ import annotations

from typing import Any

import asyncpg
import orjson

from lt_saga.domain.purchase import NewPurchase, Purchase, Step
from lt_saga.domain.saga import TERMINAL, Status

__all__ = [
    "WAKEUP_CHANNEL",
    "StaleState",
    "add_step",
    "claim",
    "claim_unowned",
    "count_by_status",
    "get_purchase",
    "insert_purchase",
    "list_purchases",
    "list_steps",
    "notify_wakeup",
    "release_leases",
    "renew_leases",
    "update_purchase",
]

# NOTIFY channel: "re-read this purchase" (payload: its id), for whichever instance drives it.
WAKEUP_CHANNEL = "lt_saga_wakeup"

_TERMINAL = [s.value for s in TERMINAL]


class StaleState(Exception):
    """The purchase changed since it was read (optimistic lock lost): reload and decide again."""


def _purchase(r: asyncpg.Record) -> Purchase:
    data = dict(r)
    data["status"] = Status(data["status"])
    data["compensations"] = tuple(data["compensations"])
    data["trace_context"] = orjson.loads(data["trace_context"])
    return Purchase(**data)


_COLUMNS = (
    "id, user_id, org_id, amount, unit, pool_id, price_usd_micros, payment_amount_minor, currency, status, "
    "compensations, deadline_at, reason, idempotency_key, request_hash, payment_method, payment_intent_id, "
    "version, created_at, updated_at, command_id, resend_at, resends, trace_context"
)


async def insert_purchase(
    conn: asyncpg.Connection, new: NewPurchase, *, owner: str, lease_s: float
) -> tuple[Purchase, bool]:
    """Insert a PENDING purchase leased to `owner`; on an idempotency-key clash return the existing one and False."""
    row = await conn.fetchrow(
        f"""
        INSERT INTO purchases (id, user_id, org_id, amount, unit, pool_id, price_usd_micros, payment_amount_minor,
                               currency, status, idempotency_key, request_hash, payment_method, trace_context,
                               owner, lease_until)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14::jsonb,
                $15, now() + make_interval(secs => $16))
        ON CONFLICT (user_id, idempotency_key) DO NOTHING
        RETURNING {_COLUMNS}
        """,
        new.id,
        new.user_id,
        new.org_id,
        new.request.amount,
        new.request.unit,
        new.request.pool_id,
        new.price_usd_micros,
        new.payment_amount_minor,
        new.currency,
        Status.PENDING.value,
        new.idempotency_key,
        new.request_hash,
        new.request.payment_method,
        orjson.dumps(new.trace_context).decode(),
        owner,
        lease_s,
    )
    if row is not None:
        return _purchase(row), True
    existing = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM purchases WHERE user_id = $1 AND idempotency_key = $2",
        new.user_id,
        new.idempotency_key,
    )
    assert existing is not None
    return _purchase(existing), False


async def get_purchase(conn: asyncpg.Connection, purchase_id: str) -> Purchase | None:
    """One purchase by id."""
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM purchases WHERE id = $1", purchase_id)
    return _purchase(row) if row else None


async def list_purchases(
    conn: asyncpg.Connection,
    *,
    user_id: str | None,
    limit: int,
    status: Status | None = None,
    org_id: str | None = None,
) -> list[Purchase]:
    """Newest first; all users when `user_id` is None, all statuses when `status` is None, all orgs when
    `org_id` is None."""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM purchases WHERE ($1::text IS NULL OR user_id = $1) "
        "AND ($3::text IS NULL OR status = $3) AND ($4::text IS NULL OR org_id = $4) "
        "ORDER BY created_at DESC, id LIMIT $2",
        user_id,
        limit,
        status.value if status is not None else None,
        org_id,
    )
    return [_purchase(r) for r in rows]


async def claim_unowned(
    conn: asyncpg.Connection, owner: str, lease_s: float, *, exclude: list[str], limit: int
) -> list[str]:
    """Lease up to `limit` unfinished purchases that nobody holds (no lease, or an expired one), oldest first.

    `owner`'s own leases count as free (a restarted instance with the same id takes its sagas back at once);
    rows another instance is claiming right now are skipped, not waited for.
    """
    rows = await conn.fetch(
        """
        UPDATE purchases SET owner = $1, lease_until = now() + make_interval(secs => $2)
        WHERE id IN (
            SELECT id FROM purchases
            WHERE status <> ALL($3::text[])
              AND (owner IS NULL OR owner = $1 OR lease_until < now())
              AND id <> ALL($4::text[])
            ORDER BY created_at
            LIMIT $5
            FOR UPDATE SKIP LOCKED
        )
        RETURNING id
        """,
        owner,
        lease_s,
        _TERMINAL,
        exclude,
        limit,
    )
    return [r["id"] for r in rows]


async def claim(conn: asyncpg.Connection, purchase_id: str, owner: str, lease_s: float) -> bool:
    """Lease one purchase to `owner` unless another instance holds an unexpired lease on it."""
    claimed = await conn.fetchval(
        """
        UPDATE purchases SET owner = $2, lease_until = now() + make_interval(secs => $3)
        WHERE id = $1 AND (owner IS NULL OR owner = $2 OR lease_until < now())
        RETURNING true
        """,
        purchase_id,
        owner,
        lease_s,
    )
    return bool(claimed)


async def renew_leases(conn: asyncpg.Connection, owner: str, ids: list[str], lease_s: float) -> set[str]:
    """Extend `owner`'s leases on `ids`; returns the ids still held (a lost lease is missing)."""
    rows = await conn.fetch(
        """
        UPDATE purchases SET lease_until = now() + make_interval(secs => $3)
        WHERE id = ANY($2::text[]) AND owner = $1
        RETURNING id
        """,
        owner,
        ids,
        lease_s,
    )
    return {r["id"] for r in rows}


async def release_leases(conn: asyncpg.Connection, owner: str) -> None:
    """Give up every lease `owner` holds (graceful shutdown: another instance may take over at once)."""
    await conn.execute(
        "UPDATE purchases SET owner = NULL, lease_until = NULL WHERE owner = $1 AND status <> ALL($2::text[])",
        owner,
        _TERMINAL,
    )


async def count_by_status(conn: asyncpg.Connection) -> dict[str, int]:
    """How many purchases are in each status."""
    rows = await conn.fetch("SELECT status, count(*) AS n FROM purchases GROUP BY status")
    return {r["status"]: r["n"] for r in rows}


async def update_purchase(conn: asyncpg.Connection, purchase: Purchase, **changes: Any) -> Purchase:
    """Apply `changes` if the row is still at `purchase.version`; raise StaleState otherwise."""
    allowed = {
        "status",
        "compensations",
        "deadline_at",
        "reason",
        "payment_intent_id",
        "command_id",
        "resend_at",
        "resends",
    }
    unknown = set(changes) - allowed
    if unknown:
        raise ValueError(f"cannot update {sorted(unknown)}")
    values = [
        v.value if isinstance(v, Status) else list(v) if isinstance(v, tuple) else v for v in changes.values()
    ]
    sets = ", ".join(f"{name} = ${i}" for i, name in enumerate(changes, start=3))
    row = await conn.fetchrow(
        f"UPDATE purchases SET {sets}{', ' if sets else ''}version = version + 1, updated_at = now() "
        f"WHERE id = $1 AND version = $2 RETURNING {_COLUMNS}",
        purchase.id,
        purchase.version,
        *values,
    )
    if row is None:
        raise StaleState(purchase.id)
    return _purchase(row)


async def add_step(
    conn: asyncpg.Connection, purchase_id: str, step: str, status: str, detail: str | None = None
) -> None:
    """Append one entry to the saga's step log."""
    await conn.execute(
        "INSERT INTO saga_steps (purchase_id, step, status, detail) VALUES ($1, $2, $3, $4)",
        purchase_id,
        step,
        status,
        detail,
    )


async def list_steps(conn: asyncpg.Connection, purchase_id: str) -> list[Step]:
    """The step log of one purchase, in order."""
    rows = await conn.fetch(
        "SELECT step, status, detail, at FROM saga_steps WHERE purchase_id = $1 ORDER BY id", purchase_id
    )
    return [Step(r["step"], r["status"], r["detail"], r["at"]) for r in rows]


async def notify_wakeup(conn: asyncpg.Connection, purchase_id: str) -> None:
    """Tell every instance, on commit, to re-read `purchase_id` (the one driving it does)."""
    await conn.execute("SELECT pg_notify($1, $2)", WAKEUP_CHANNEL, purchase_id)
