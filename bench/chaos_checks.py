"""The chaos run's invariants, read from the stores of record after the run.

- `ledger`: per request the metered provider billed, every token pool charged for it (quota's `ledger` rows
  with that request id, usage or expiry) was charged exactly the provider's total; nothing is charged for a
  request the provider never billed. A stream that did not reach its client's end is the exception (the
  client cut it, or the gateway relaying it was killed): the gateway never sees the provider's usage and
  charges its own count (its prompt estimate plus the tokens relayed, taken from a killed gateway's crash
  journal by the next one); for those the check is that they are charged that count, a usage row, never
  free and never the whole reservation at expiry, and the totals billed and charged are printed.
- `reservations`: no reservation is still open in Redis past its expiry (plus the sweep interval).
- `counted_once`: every request the provider billed has exactly one ledger row per pool charged (quota) and
  exactly one row in analytics' request log, with the provider's tokens (cut streams: the ledger's); no
  tokens in analytics for a request the provider never billed; the analytics daily rollups add up to the
  request log.
- `purchases`: every purchase is COMPLETED, COMPENSATED or FAILED; per purchase the tokens credited (quota's
  applied adjustments) and the money captured (the fake provider's intents less refunds) are both what was
  bought when COMPLETED and both zero otherwise; no purchase is charged twice or left with a hold.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import asyncpg
import orjson
import redis.asyncio as aioredis

from leaky_common.db import database_url_for

__all__ = ["Invariants", "Stores", "check_all"]

TERMINAL = ("COMPLETED", "COMPENSATED", "FAILED")
RID_PREFIX = "chaos-"


@dataclass(frozen=True)
class Stores:
    """Where the truth lives."""

    postgres: str
    redis: str
    fakepay: str
    provider_log: str
    reservation_grace_s: float = 3.0


@dataclass
class Invariants:
    """Per invariant, the violations found (empty = holds), and figures for the report."""

    violations: dict[str, list[str]] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)

    def failed(self) -> list[str]:
        return [name for name, found in self.violations.items() if found]

    def lines(self) -> list[str]:
        out = []
        for name, found in self.violations.items():
            verdict = "holds" if not found else f"FAILS ({len(found)})"
            out.append(f"  {name:14} {verdict}")
            out += [f"      - {v}" for v in found[:8]]
            if len(found) > 8:
                out.append(f"      ... and {len(found) - 8} more")
        out += [f"  {k}: {v}" for k, v in self.figures.items()]
        return out


def _provider_bills(path: str) -> dict[str, list[dict[str, Any]]]:
    bills: dict[str, list[dict[str, Any]]] = defaultdict(list)
    with open(path, "rb") as log:
        for line in log:
            if line.strip():
                record = orjson.loads(line)
                if str(record["rid"]).startswith(RID_PREFIX):
                    bills[record["rid"]].append(record)
    return bills


async def _fetch(url: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


async def _ledger(stores: Stores) -> list[asyncpg.Record]:
    return await _fetch(
        database_url_for(stores.postgres, "lt_quota"),
        "SELECT l.request_id, l.pool_id, l.kind, l.amount, p.unit, extract(epoch FROM l.created_at) AS at "
        "FROM ledger l JOIN pools p ON p.id = l.pool_id "
        "WHERE l.request_id LIKE $1 AND l.kind IN ('usage', 'expiry')",
        RID_PREFIX + "%",
    )


def check_ledger(
    bills: dict[str, list[dict[str, Any]]],
    ledger: list[asyncpg.Record],
    cut: set[str],
    inv: Invariants,
    in_transit: frozenset[str] = frozenset(),
) -> None:
    """Ledger == provider usage, per request (token pools); cut streams charged something; a request the
    provider never billed charged nothing (a reservation whose answer was lost is released at zero).

    `in_transit`: requests whose connection broke before any answer, a gateway killed with them on their way to
    or from the provider (a stream is journalled from its first chunk on). Only the provider knows what it billed
    for those: their reservation is charged at expiry, never less than the provider billed. A known gap,
    counted in a figure, not hidden."""
    found = inv.violations.setdefault("ledger", [])
    legs: dict[str, list[asyncpg.Record]] = defaultdict(list)
    for row in ledger:
        if row["unit"] == "tokens":
            legs[row["request_id"]].append(row)
    billed = charged = 0
    cut_billed = cut_charged = 0
    transit: list[str] = []
    for rid, records in bills.items():
        total = sum(r["total"] for r in records)
        complete = rid not in cut
        rows = legs.get(rid, [])
        if not rows:
            found.append(f"{rid}: provider billed {total} tokens, ledger charged nothing")
            continue
        if rid in in_transit and all(r["kind"] == "expiry" and r["amount"] >= total for r in rows):
            transit.append(f"{rid} {rows[0]['amount']} for {total}")
            continue
        for row in rows:
            if complete and row["amount"] != total:
                found.append(f"{rid}: provider billed {total}, pool {row['pool_id']} charged {row['amount']} "
                             f"({row['kind']})")  # fmt: skip
            elif not complete and (row["amount"] <= 0 or row["kind"] != "usage"):
                found.append(f"{rid}: unfinished stream charged {row['amount']} ({row['kind']})")
        first = rows[0]["amount"]
        if complete:
            billed, charged = billed + total, charged + first
        else:
            cut_billed, cut_charged = cut_billed + total, cut_charged + first
    released = 0
    for rid, rows in legs.items():
        if rid in bills:
            continue
        kinds = ",".join(sorted({r["kind"] for r in rows}))
        if all(r["amount"] == 0 for r in rows):
            released += 1  # its answer was lost before anything went to the provider: released at zero
        elif rid in in_transit and kinds == "expiry":
            transit.append(f"{rid} {rows[0]['amount']} for 0")
        else:
            found.append(f"{rid}: charged {rows[0]['amount']} ({kinds}) but the provider billed nothing")
    if transit:
        inv.figures[
            "in transit when a gateway died: charged its reservation at expiry, no analytics row (known gap)"
        ] = ", ".join(transit)
    inv.figures["lost admission answers released at zero"] = released
    inv.figures["tokens billed / charged (complete)"] = f"{billed} / {charged}"
    inv.figures["tokens billed / charged (cut streams)"] = f"{cut_billed} / {cut_charged}"


async def check_reservations(stores: Stores, inv: Invariants) -> None:
    """No reservation open past its TTL (in every org's expiry set: `lt:{<org tag>}:res:by_expiry`)."""
    found = inv.violations.setdefault("reservations", [])
    client = aioredis.from_url(stores.redis, decode_responses=True)
    late: list[tuple[str, float]] = []
    open_now = 0
    try:
        now_ms = int(time.time() * 1000)
        async for key in client.scan_iter(match="lt:*res:by_expiry", count=500):
            late += await client.zrangebyscore(
                key, "-inf", now_ms - int(stores.reservation_grace_s * 1000), withscores=True
            )
            open_now += await client.zcard(key)
    finally:
        await client.aclose()  # type: ignore[attr-defined]  # stubs predate aclose
    for rid, score in late[:50]:
        found.append(f"reservation {rid} open {(now_ms - score) / 1000:.1f}s past its expiry")
    inv.figures["reservations open now"] = open_now


async def check_counted_once(
    stores: Stores,
    bills: dict[str, list[dict[str, Any]]],
    ledger: list[asyncpg.Record],
    cut: set[str],
    inv: Invariants,
    in_transit: frozenset[str] = frozenset(),
) -> None:
    """Every usage event counted exactly once, by quota and by analytics. A request in transit when its gateway
    died (see `check_ledger`) has no usage event, so no analytics row: only its expiry charge."""
    found = inv.violations.setdefault("counted_once", [])
    expired = {row["request_id"] for row in ledger if row["kind"] == "expiry"}
    expired -= {row["request_id"] for row in ledger if row["kind"] != "expiry"}
    per_leg = Counter((row["request_id"], row["pool_id"]) for row in ledger)
    found += [f"{rid}: {n} ledger rows for pool {pool}" for (rid, pool), n in per_leg.items() if n != 1]
    url = database_url_for(stores.postgres, "lt_analytics")
    logged = await _fetch(
        url, "SELECT request_id, total_tokens FROM request_log WHERE request_id LIKE $1", RID_PREFIX + "%"
    )
    seen = Counter(row["request_id"] for row in logged)
    tokens = {row["request_id"]: int(row["total_tokens"]) for row in logged}
    charged = {row["request_id"]: int(row["amount"]) for row in ledger if row["unit"] == "tokens"}
    for rid, records in bills.items():
        expected = charged.get(rid) if rid in cut else sum(r["total"] for r in records)
        if seen[rid] == 0 and rid in in_transit and rid in expired:
            continue
        if seen[rid] != 1:
            found.append(f"{rid}: {seen[rid]} rows in analytics' request log")
        elif expected is not None and tokens[rid] != expected:
            found.append(f"{rid}: analytics counted {tokens[rid]} tokens, expected {expected}")
    for rid in set(seen) - set(bills):
        if tokens[rid] or seen[rid] != 1:
            found.append(
                f"{rid}: {tokens[rid]} tokens in {seen[rid]} analytics rows, never billed by the provider"
            )
    sums = await _fetch(
        url,
        "SELECT (SELECT coalesce(sum(total_tokens), 0) FROM request_log) AS log, "
        "(SELECT coalesce(sum(total_tokens), 0) FROM usage_daily) AS daily",
    )
    if sums[0]["log"] != sums[0]["daily"]:
        found.append(f"analytics daily rollups {sums[0]['daily']} tokens != request log {sums[0]['log']}")
    inv.figures["requests billed by the provider"] = len(bills)
    inv.figures["analytics request-log rows (chaos)"] = len(logged)


async def _captures(fakepay: str) -> tuple[Counter[str], Counter[str], list[str]]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{fakepay}/v1/payment_intents", headers={"Authorization": "Bearer sk_test_chaos"}) as r,
    ):
        body = await r.json()
    captured: Counter[str] = Counter()
    charges: Counter[str] = Counter()
    holds: list[str] = []
    purchase_of = {}
    for intent in body["data"]:
        pid = intent["metadata"].get("purchase_id", "")
        purchase_of[intent["id"]] = pid
        captured[pid] += intent["amount_received"]
        charges[pid] += intent["amount_received"] > 0
        if intent["status"] == "requires_capture":
            holds.append(pid)
    for refund in body["refunds"]:
        captured[purchase_of[refund["payment_intent"]]] -= refund["amount"]
    return captured, charges, holds


async def check_purchases(stores: Stores, inv: Invariants) -> None:
    """Every purchase terminal; tokens credited == payment captured, per purchase."""
    found = inv.violations.setdefault("purchases", [])
    purchases = await _fetch(
        database_url_for(stores.postgres, "lt_saga"),
        "SELECT id, status, amount, payment_amount_minor FROM purchases",
    )
    credited = {
        r["purchase_id"]: int(r["net"])
        for r in await _fetch(
            database_url_for(stores.postgres, "lt_quota"),
            "SELECT purchase_id, sum(CASE kind WHEN 'credit' THEN amount ELSE -amount END) AS net "
            "FROM adjustments WHERE applied GROUP BY purchase_id",
        )
    }
    captured, charges, holds = await _captures(stores.fakepay)
    found += [f"{pid}: authorization left uncaptured and unreleased" for pid in holds]
    statuses: Counter[str] = Counter()
    tokens_total = cents_total = 0
    for row in purchases:
        pid, status = row["id"], row["status"]
        statuses[status] += 1
        tokens, cents = credited.get(pid, 0), captured[pid]
        tokens_total, cents_total = tokens_total + tokens, cents_total + cents
        if charges[pid] > 1:
            found.append(f"{pid}: charged {charges[pid]} times")
        if status == "COMPLETED":
            if (tokens, cents) != (row["amount"], row["payment_amount_minor"]):
                found.append(f"{pid}: COMPLETED but credited {tokens} tokens, captured {cents}")
        elif status in TERMINAL:
            if (tokens, cents) != (0, 0):
                found.append(f"{pid}: {status} but credited {tokens} tokens, captured {cents}")
        else:
            found.append(f"{pid}: still {status}")
    inv.figures["purchases"] = dict(statuses)
    inv.figures["tokens credited / cents captured"] = f"{tokens_total} / {cents_total}"


def settlement_lag(ledger: list[asyncpg.Record], answered: dict[str, float], inv: Invariants) -> None:
    """How long after the client had its answer the ledger row was written (a figure, not an invariant):
    a lag past the reservation TTL turns into an expiry charge at the reserved amount."""
    lags = sorted(
        float(row["at"]) - answered[row["request_id"]]
        for row in ledger
        if row["request_id"] in answered and row["kind"] == "usage"
    )
    expired = sum(1 for row in ledger if row["kind"] == "expiry")
    if lags:
        pick = [lags[min(len(lags) - 1, int(q * len(lags)))] for q in (0.5, 0.99)]
        inv.figures["settlement lag p50 / p99 / max"] = f"{pick[0]:.1f}s / {pick[1]:.1f}s / {lags[-1]:.1f}s"
    inv.figures["ledger rows charged at expiry"] = expired


async def check_all(
    stores: Stores,
    cut: set[str],
    answered: dict[str, float] | None = None,
    in_transit: frozenset[str] = frozenset(),
) -> Invariants:
    """Every invariant, once; `cut` are the request ids of the streams that did not reach their client's end
    (cut by the client, or broken by a gateway killed mid-stream), `answered` when each
    request's answer ended (wall clock), for the settlement-lag figure; `in_transit` see `check_ledger`."""
    inv = Invariants()
    bills = _provider_bills(stores.provider_log)
    ledger = await _ledger(stores)
    check_ledger(bills, ledger, cut, inv, in_transit)
    await check_reservations(stores, inv)
    await check_counted_once(stores, bills, ledger, cut, inv, in_transit)
    await check_purchases(stores, inv)
    settlement_lag(ledger, answered or {}, inv)
    return inv
