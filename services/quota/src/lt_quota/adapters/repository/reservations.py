"""SQL of the durable open reservations and of batched settlement (the inbox, ledger rows and running totals
of many usage events in one statement each)."""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from lt_quota.adapters.repository.records import Conn

__all__ = [
    "UPSERT_OPEN_RESERVATIONS",
    "LedgerRow",
    "OpenReservation",
    "add_pool_usage",
    "claim_many",
    "delete_open_reservations",
    "expired_open_reservations",
    "insert_ledger_many",
    "open_reservations",
    "open_reserved",
    "upsert_open_reservations",
]


@dataclass(frozen=True)
class OpenReservation:
    """A reservation as the durable record holds it."""

    reservation_id: str
    expires_ms: int
    pool_id: str
    keys: list[str]
    amounts: list[int]
    fields: dict[str, str]


@dataclass(frozen=True)
class LedgerRow:
    """One ledger row of a batch."""

    pool_id: str
    amount: int
    kind: str
    idempotency_key: str
    request_id: str | None
    period_key: str
    source: str


# Whether a record's reservation is charged: its first leg's ledger row exists. A LATERAL with LIMIT 1, one
# index probe per record whatever the planner believes (see below).
_CHARGED = """LEFT JOIN LATERAL (SELECT true AS charged FROM ledger g
                      WHERE g.idempotency_key = 'reservation:' || o.reservation_id || ':' || o.pool_id LIMIT 1) c
       ON true"""

# A reservation whose first leg is already in the ledger is skipped. The look-up is a LATERAL with LIMIT 1 so
# that it stays one index probe per reservation whatever the planner believes about the ledger: as a NOT
# EXISTS it became a hash anti-join over a sequential scan of the whole ledger in the generic plan a
# connection caches while the ledger is new (planned as empty), and stayed so until the next ANALYZE, making
# every flush slower as the ledger grew.
UPSERT_OPEN_RESERVATIONS = """
INSERT INTO open_reservations (reservation_id, expires_ms, pool_id, keys, amounts, fields)
SELECT r.id, r.exp, r.pool, ARRAY(SELECT jsonb_array_elements_text(r.k)),
       ARRAY(SELECT jsonb_array_elements_text(r.a)::bigint), r.f
  FROM unnest($1::text[], $2::bigint[], $3::text[], $4::jsonb[], $5::jsonb[], $6::jsonb[]) AS r (id, exp, pool, k, a, f)
  LEFT JOIN LATERAL (SELECT true AS charged FROM ledger l
                      WHERE l.idempotency_key = 'reservation:' || r.id || ':' || r.pool LIMIT 1) c ON true
 WHERE c.charged IS NULL
ON CONFLICT (reservation_id) DO UPDATE
   SET amounts = EXCLUDED.amounts, fields = EXCLUDED.fields, expires_ms = EXCLUDED.expires_ms"""


async def upsert_open_reservations(conn: Conn, rows: list[OpenReservation]) -> None:
    """Record (or update, after a release) open reservations, skipping those already charged (their first
    leg's ledger row exists: the settlement was faster than this write)."""
    await conn.execute(
        UPSERT_OPEN_RESERVATIONS,
        [r.reservation_id for r in rows],
        [r.expires_ms for r in rows],
        [r.pool_id for r in rows],
        [orjson.dumps(r.keys).decode() for r in rows],
        [orjson.dumps(r.amounts).decode() for r in rows],
        [orjson.dumps(r.fields).decode() for r in rows],
    )


def _open_from_row(row: object) -> OpenReservation:
    r = dict(row)  # type: ignore[call-overload]
    return OpenReservation(
        r["reservation_id"],
        int(r["expires_ms"]),
        r["pool_id"],
        list(r["keys"]),
        [int(a) for a in r["amounts"]],
        orjson.loads(r["fields"]),
    )


async def _drop_charged(conn: Conn, expired_by_ms: int | None = None) -> None:
    """Delete the records of reservations already charged (those that expired by `expired_by_ms`, if given)."""
    await conn.execute(
        f"""DELETE FROM open_reservations d
             USING (SELECT o.reservation_id FROM open_reservations o {_CHARGED}
                     WHERE c.charged AND ($1::bigint IS NULL OR o.expires_ms <= $1)) AS x
             WHERE d.reservation_id = x.reservation_id""",
        expired_by_ms,
    )


async def open_reservations(conn: Conn) -> list[OpenReservation]:
    """Every open reservation (to put back into a Redis that lost them). Records of reservations already charged
    are deleted, not returned: the upsert's ledger check cannot see a settlement's uncommitted charge, so a record
    written while its reservation was being charged outlives the transaction that deleted it."""
    await _drop_charged(conn)
    rows = await conn.fetch("SELECT * FROM open_reservations ORDER BY expires_ms")
    return [_open_from_row(r) for r in rows]


async def seen_redis_prefix(conn: Conn, prefix: str) -> bool:
    """Whether quota kept state under this Redis prefix before (and note that it does now)."""
    inserted = await conn.fetchval(
        "INSERT INTO redis_prefixes (prefix) VALUES ($1) ON CONFLICT DO NOTHING RETURNING true", prefix
    )
    return inserted is None


async def charged_within(conn: Conn, seconds: float) -> bool:
    """Whether the ledger's latest row is younger than `seconds` (by PostgreSQL's clock)."""
    return bool(
        await conn.fetchval(
            "SELECT coalesce((SELECT created_at FROM ledger ORDER BY id DESC LIMIT 1)"
            " > now() - make_interval(secs => $1), false)",
            float(seconds),
        )
    )


async def expired_open_reservations(conn: Conn, now_ms: int, limit: int = 100) -> list[OpenReservation]:
    """Open reservations whose TTL ended at or before `now_ms`, oldest first (records of those already charged
    are deleted, not returned: see `open_reservations`)."""
    await _drop_charged(conn, now_ms)
    rows = await conn.fetch(
        "SELECT * FROM open_reservations WHERE expires_ms <= $1 ORDER BY expires_ms LIMIT $2", now_ms, limit
    )
    return [_open_from_row(r) for r in rows]


async def delete_open_reservations(conn: Conn, reservation_ids: list[str]) -> None:
    """Forget reservations charged in this transaction."""
    await conn.execute(
        "DELETE FROM open_reservations WHERE reservation_id = ANY($1::text[])", reservation_ids
    )


async def open_reserved(conn: Conn, keys: list[str]) -> dict[str, int]:
    """What the open reservations hold on each counter (a counter rebuilt from the ledger starts with it); a
    record that outlived its reservation's charge (see `open_reservations`) holds nothing."""
    rows = await conn.fetch(
        f"""SELECT l.k, sum(l.a) AS reserved FROM open_reservations o {_CHARGED}
                   CROSS JOIN LATERAL unnest(o.keys, o.amounts) AS l (k, a)
             WHERE c.charged IS NULL AND o.keys && $1::text[] AND l.k = ANY($1::text[]) GROUP BY l.k""",
        keys,
    )
    return {r["k"]: int(r["reserved"]) for r in rows}


async def claim_many(conn: Conn, event_ids: list[str]) -> set[str]:
    """Record many event ids as handled (the inbox); returns those not handled before."""
    rows = await conn.fetch(
        """INSERT INTO inbox (event_id) SELECT DISTINCT unnest($1::text[])
           ON CONFLICT DO NOTHING RETURNING event_id""",
        event_ids,
    )
    return {r["event_id"] for r in rows}


async def insert_ledger_many(conn: Conn, rows: list[LedgerRow]) -> dict[str, tuple[int, bool]]:
    """Append ledger rows unless their idempotency key exists. Returns, per idempotency key, the amount
    recorded under it and whether this call inserted it. Running totals: `add_pool_usage`."""
    if not rows:
        return {}
    inserted = await conn.fetch(
        """INSERT INTO ledger (pool_id, amount, kind, idempotency_key, request_id, period_key, source)
           SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[],
                                $7::text[])
           ON CONFLICT (idempotency_key) DO NOTHING RETURNING idempotency_key, amount""",
        [r.pool_id for r in rows],
        [r.amount for r in rows],
        [r.kind for r in rows],
        [r.idempotency_key for r in rows],
        [r.request_id for r in rows],
        [r.period_key for r in rows],
        [r.source for r in rows],
    )
    out = {r["idempotency_key"]: (int(r["amount"]), True) for r in inserted}
    missing = [r.idempotency_key for r in rows if r.idempotency_key not in out]
    if missing:
        existing = await conn.fetch(
            "SELECT idempotency_key, amount FROM ledger WHERE idempotency_key = ANY($1::text[])", missing
        )
        out.update({r["idempotency_key"]: (int(r["amount"]), False) for r in existing})
    return out


async def add_pool_usage(
    conn: Conn, increments: dict[tuple[str, str, str], int]
) -> dict[tuple[str, str], int]:
    """Add to the running totals (pool, period, source) -> amount; returns the new `used` of every source ''
    total touched, by (pool, period)."""
    if not increments:
        return {}
    items = sorted(increments.items())
    rows = await conn.fetch(
        """INSERT INTO pool_usage (pool_id, period_key, source, used)
           SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[])
           ON CONFLICT (pool_id, period_key, source) DO UPDATE SET used = pool_usage.used + EXCLUDED.used
           RETURNING pool_id, period_key, source, used""",
        [k[0] for k, _ in items],
        [k[1] for k, _ in items],
        [k[2] for k, _ in items],
        [v for _, v in items],
    )
    return {(r["pool_id"], r["period_key"]): int(r["used"]) for r in rows if r["source"] == ""}
