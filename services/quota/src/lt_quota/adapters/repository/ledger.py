"""SQL of the ledger: idempotent charges, running totals per period and threshold announcements."""

from __future__ import annotations

from lt_quota.adapters.repository.records import Conn

__all__ = ["claim_threshold", "insert_ledger", "ledger_sum", "period_totals"]


async def period_totals(conn: Conn, pairs: list[tuple[str, str]]) -> dict[str, int]:
    """Running totals (every source) of many pools, each for its own period: pool id -> used."""
    rows = await conn.fetch(
        """SELECT u.pool_id, u.used FROM pool_usage u
             JOIN unnest($1::text[], $2::text[]) AS w (pool_id, period_key)
               ON u.pool_id = w.pool_id AND u.period_key = w.period_key
            WHERE u.source = ''""",
        [p for p, _ in pairs],
        [k for _, k in pairs],
    )
    return {r["pool_id"]: int(r["used"]) for r in rows}


async def ledger_sum(conn: Conn, pool_id: str, period_key: str, source: str | None = None) -> int:
    """What the ledger holds for a pool in one period (only rows of `source`, if given), from the running
    totals kept with every ledger row."""
    value = await conn.fetchval(
        "SELECT used FROM pool_usage WHERE pool_id = $1 AND period_key = $2 AND source = $3",
        pool_id,
        period_key,
        source or "",
    )
    return int(value or 0)


async def insert_ledger(
    conn: Conn,
    pool_id: str,
    amount: int,
    kind: str,
    idempotency_key: str,
    request_id: str | None,
    *,
    period_key: str = "",
    source: str | None = None,
) -> tuple[int, int | None]:
    """Append a ledger row unless its idempotency key exists, and add it to the running totals, in one
    statement. Returns (amount recorded under that key, the period's running total if this call inserted
    it, else None)."""
    totals = ["", source] if source == "vacation_share" else [""]
    row = await conn.fetchrow(
        """WITH ins AS (
               INSERT INTO ledger (pool_id, amount, kind, idempotency_key, request_id, period_key, source)
               VALUES ($1, $2, $3, $4, $5, $6, $7)
               ON CONFLICT (idempotency_key) DO NOTHING RETURNING amount
           ), tot AS (
               INSERT INTO pool_usage (pool_id, period_key, source, used)
               SELECT $1, $6, t, ins.amount FROM ins, unnest($8::text[]) AS t
               ON CONFLICT (pool_id, period_key, source) DO UPDATE SET used = pool_usage.used + EXCLUDED.used
               RETURNING source, used
           )
           SELECT (SELECT amount FROM ins) AS inserted, (SELECT used FROM tot WHERE source = '') AS used""",
        pool_id,
        amount,
        kind,
        idempotency_key,
        request_id,
        period_key,
        source,
        totals,
    )
    if row["inserted"] is not None:
        return int(row["inserted"]), int(row["used"])
    value = await conn.fetchval("SELECT amount FROM ledger WHERE idempotency_key = $1", idempotency_key)
    return int(value), None


async def claim_threshold(conn: Conn, pool_id: str, period_key: str, percent: int) -> bool:
    """Record that a pool reached `percent` in a period; False if it was announced before."""
    value = await conn.fetchval(
        """INSERT INTO threshold_events (pool_id, period_key, percent) VALUES ($1, $2, $3)
           ON CONFLICT DO NOTHING RETURNING percent""",
        pool_id,
        period_key,
        percent,
    )
    return value is not None
