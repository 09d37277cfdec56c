"""The consumer inbox: event ids already handled, recorded in the transaction that handles them.

A consumer commits its Kafka offset only after handling (at-least-once); claiming the event id in the same
database transaction as the state change turns redeliveries into no-ops (effectively-once). Each service
creates the table in one of its own migrations (they stay frozen; `INBOX_DDL` is the shape they share).
"""

from __future__ import annotations

import asyncpg

__all__ = ["INBOX_DDL", "claim"]

INBOX_DDL = """
CREATE TABLE IF NOT EXISTS inbox (
    event_id TEXT PRIMARY KEY,
    handled_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
"""


async def claim(conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy, event_id: str) -> bool:
    """Record `event_id` as handled; False if it was handled before (call inside the handling transaction)."""
    inserted = await conn.fetchval(
        "INSERT INTO inbox (event_id) VALUES ($1) ON CONFLICT DO NOTHING RETURNING true", event_id
    )
    return inserted is not None
