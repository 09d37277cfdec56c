"""SQL of top-up adjustments (credit and debit of a pool for a purchase saga step)."""

from __future__ import annotations

from typing import NotRequired, TypedDict, Unpack

import asyncpg

from lt_quota.adapters.repository.records import Conn

__all__ = ["AdjustmentRow", "adjustment_for_purchase", "find_adjustment", "insert_adjustment"]


async def find_adjustment(conn: Conn, purchase_id: str, step: str, kind: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT * FROM adjustments WHERE purchase_id = $1 AND step = $2 AND kind = $3",
        purchase_id,
        step,
        kind,
    )
    return row


async def adjustment_for_purchase(
    conn: Conn, purchase_id: str, kind: str, *, applied_only: bool = False
) -> asyncpg.Record | None:
    """Any recorded adjustment of `kind` for a purchase, whatever its step."""
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT * FROM adjustments WHERE purchase_id = $1 AND kind = $2 AND (applied OR NOT $3) LIMIT 1",
        purchase_id,
        kind,
        applied_only,
    )
    return row


class AdjustmentRow(TypedDict):
    """One adjustment of a pool for a saga step; `applied` False records a refusal and its `reason`."""

    adjustment_id: str
    pool_id: str
    kind: str
    amount: int
    purchase_id: str
    step: str
    saga_id: str
    new_limit: int
    reply_event_id: str
    applied: NotRequired[bool]
    reason: NotRequired[str | None]


async def insert_adjustment(conn: Conn, **row: Unpack[AdjustmentRow]) -> None:
    """Record an adjustment (applied unless `applied=False`)."""
    await conn.execute(
        """INSERT INTO adjustments
               (id, pool_id, kind, amount, purchase_id, step, saga_id, new_limit, reply_event_id, applied, reason)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)""",
        row["adjustment_id"],
        row["pool_id"],
        row["kind"],
        row["amount"],
        row["purchase_id"],
        row["step"],
        row["saga_id"],
        row["new_limit"],
        row["reply_event_id"],
        row.get("applied", True),
        row.get("reason"),
    )
