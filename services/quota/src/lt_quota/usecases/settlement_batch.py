"""Settlement of many usage events at once: what `Settlement.settle_usage` does for one event, for a whole
batch in one Postgres transaction (one statement each for the inbox, the ledger rows and the running totals)
and one Redis call. Each event is still handled once: the inbox is claimed per event id (duplicates in the
batch or from an earlier delivery charge nothing), and each reservation is charged once."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from leaky_common.events import UsageRecorded
from lt_quota.adapters import repository as repo
from lt_quota.adapters.metrics import RESERVATIONS_SETTLED, observe_settled
from lt_quota.adapters.repository import Conn, LedgerRow
from lt_quota.domain import Leg, legs_of_reservation
from lt_quota.usecases.settlement import Charge, Settlement

__all__ = ["BatchSettlement"]

PoolPeriod = tuple[str, str]


def _usage_charge(event: UsageRecorded, reservation: dict[str, str] | None, rebuilt: list[Leg]) -> Charge:
    """The charge of one usage event: its reservation's legs (or those rebuilt when Redis lost it)."""
    source = reservation.get("src", "personal") if reservation else event.quota_source or "personal"
    legs = legs_of_reservation(reservation) if reservation else rebuilt
    return Charge(
        event.reservation_id or "",
        legs,
        [event.total_tokens if leg.unit == "t" else event.cost_usd_micros for leg in legs],
        event.total_tokens,
        kind="usage",
        source=source,
        request_id=event.request_id,
        inbox_event_id=event.event_id,
        from_redis=reservation is not None,
    )


class BatchSettlement:
    """Charges the reservations of a batch of `UsageRecorded` events at their actual usage."""

    def __init__(self, settlement: Settlement) -> None:
        self.settlement = settlement
        self.ctx = settlement.ctx

    async def settle(self, events: Sequence[UsageRecorded]) -> None:
        """Settle a batch (idempotent per event id and per reservation)."""
        unique: dict[str, UsageRecorded] = {}
        for event in events:
            unique.setdefault(event.event_id, event)
        firsts: dict[str, UsageRecorded] = {}
        for event in unique.values():
            if event.reservation_id:
                firsts.setdefault(event.reservation_id, event)
        charges = await self._charges(list(firsts.values()))
        async with self.ctx.db.acquire() as conn, conn.transaction():
            claimed = await repo.claim_many(conn, list(unique))
            todo = [c for c in charges if c.inbox_event_id in claimed and c.legs]
            if todo:
                await self._apply(conn, todo)
        # After the commit: what is counted was charged.
        RESERVATIONS_SETTLED.inc(len(todo))
        observe_settled([e for e in unique.values() if e.event_id in claimed])

    async def _charges(self, events: list[UsageRecorded]) -> list[Charge]:
        """What to charge per event: the legs of its reservation in Redis, or rebuilt when Redis lost it."""
        ids = [e.reservation_id or "" for e in events]
        held = await self.ctx.state.reservations(ids)
        if any(h is None for h in held) and await self.settlement.durable.recover():
            held = await self.ctx.state.reservations(ids)
        charges: list[Charge] = []
        for event, found in zip(events, held, strict=True):
            reservation = found
            if found is not None and "n" not in found:  # made before legs existed
                reservation = await self.ctx.state.reservation(event.reservation_id or "")
            legs = await self.settlement.legs_for_event(event) if reservation is None else []
            charges.append(_usage_charge(event, reservation, legs))
        return charges

    async def _apply(self, conn: Conn, todo: list[Charge]) -> None:
        """Ledger rows, running totals, Redis counters and thresholds of the charges, under the pools' locks."""
        pools = await repo.lock_pools(conn, [leg.pool_id for c in todo for leg in c.legs])
        await repo.delete_open_reservations(conn, [c.reservation_id for c in todo])
        self.settlement.durable.forget([c.reservation_id for c in todo])
        rows = [
            LedgerRow(
                leg.pool_id,
                amount,
                c.kind,
                f"reservation:{c.reservation_id}:{leg.pool_id}",
                c.request_id,
                leg.period_key,
                c.source,
            )
            for c in todo
            for leg, amount in zip(c.legs, c.amounts, strict=True)
            if not leg.vacation
        ]
        recorded = await repo.insert_ledger_many(conn, rows)
        increments: dict[tuple[str, str, str], int] = defaultdict(int)
        charged: dict[PoolPeriod, int] = defaultdict(int)
        seen: set[str] = set()
        for row in rows:
            value, inserted = recorded[row.idempotency_key]
            if not inserted or row.idempotency_key in seen:
                continue
            seen.add(row.idempotency_key)
            for total in ("", row.source) if row.source == "vacation_share" else ("",):
                increments[(row.pool_id, row.period_key, total)] += value
            charged[(row.pool_id, row.period_key)] += value
        totals = await repo.add_pool_usage(conn, dict(increments))
        await self._settle_redis(conn, todo, recorded)
        for (pool_id, period_key), amount in charged.items():
            if pool_id in pools and (pool_id, period_key) in totals:
                await self.settlement.thresholds.announce(
                    conn, pools[pool_id], period_key, totals[(pool_id, period_key)], amount
                )

    async def _settle_redis(
        self, conn: Conn, todo: list[Charge], recorded: dict[str, tuple[int, bool]]
    ) -> None:
        """One Redis call settles the reservations Redis holds; counters of the others are rebuilt from the
        ledger (as one settlement does)."""
        plans: list[tuple[str, int, list[int]]] = []
        for c in todo:
            amounts: list[int] = []
            for leg, amount in zip(c.legs, c.amounts, strict=True):
                if leg.vacation:  # the team pool's row (the leg before) is the truth of the vacation share
                    amounts.append(amounts[-1] if amounts else amount)
                else:
                    amounts.append(recorded[f"reservation:{c.reservation_id}:{leg.pool_id}"][0])
            plans.append((c.reservation_id, c.tokens, amounts))
        held = [(c, p) for c, p in zip(todo, plans, strict=True) if c.from_redis]
        settled = await self.ctx.state.settle_many([p for _, p in held])
        done = {c.reservation_id for (c, _), ok in zip(held, settled, strict=True) if ok}
        resync = {
            (leg.key, leg.pool_id, leg.period_key, leg.vacation)
            for c in todo
            if c.reservation_id not in done
            for leg in c.legs
        }
        for key, pool_id, period_key, vacation in sorted(resync):
            used = await repo.ledger_sum(conn, pool_id, period_key, "vacation_share" if vacation else None)
            await self.ctx.state.resync_used(key, used)
