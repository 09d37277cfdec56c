"""Settlement: charge a reservation at the actual usage (`UsageRecorded`), or at its reserved amount once it
expires unsettled (the sweep). One ledger row per pool leg, written under the pools' row locks while the
Redis counters change, then the thresholds the charge reached are announced."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from leaky_common.events import UsageRecorded
from leaky_common.inbox import claim
from lt_quota.adapters import repository as repo
from lt_quota.adapters.metrics import (
    RESERVATIONS_EXPIRED_CHARGED,
    RESERVATIONS_OPEN,
    RESERVATIONS_SETTLED,
    observe_settled,
)
from lt_quota.adapters.redis_state import org_tag
from lt_quota.domain import Leg, legs_of_reservation, period_of, source_group
from lt_quota.domain.records import KeyRecord, PoolRecord
from lt_quota.usecases.context import QuotaContext
from lt_quota.usecases.reservations import DurableReservations
from lt_quota.usecases.thresholds import Thresholds

__all__ = ["Charge", "Settlement"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Charge:
    """What to charge for one reservation, and where it was found."""

    reservation_id: str
    legs: list[Leg]
    amounts: list[int]  # per leg, in the leg's unit
    tokens: int
    kind: str  # usage or expiry
    source: str
    request_id: str | None
    inbox_event_id: str | None  # the usage event, claimed in the charge's transaction
    from_redis: bool  # Redis still holds the reservation


def _expiry(reservation_id: str, reservation: dict[str, str], *, from_redis: bool) -> Charge:
    """The charge of a reservation that expired unsettled: what each leg holds."""
    legs = legs_of_reservation(reservation)
    return Charge(
        reservation_id,
        legs,
        [leg.reserved for leg in legs],
        int(reservation.get("amount", "0")),
        kind="expiry",
        source=reservation.get("src", "personal"),
        request_id=reservation.get("request"),
        inbox_event_id=None,
        from_redis=from_redis,
    )


def nothing_used(event: UsageRecorded) -> bool:
    """Whether the event's request used nothing (the gateway releases a reservation it lost track of so)."""
    return event.total_tokens == 0 and event.cost_usd_micros == 0


class Settlement:
    """Charge reservations once, whether their usage arrives or they expire."""

    def __init__(self, ctx: QuotaContext, thresholds: Thresholds, durable: DurableReservations) -> None:
        self.ctx = ctx
        self.thresholds = thresholds
        self.durable = durable

    async def release(self, reservation_id: str, tokens: int, usd_micros: int) -> bool:
        """Shrink an open reservation to what its answer used (the gateway calls this before the client has the
        whole answer); False if it was released or settled before. The usage event charges it later."""
        fields = await self.ctx.state.release(reservation_id, tokens, usd_micros)
        if fields is None:
            return False
        self.durable.released(reservation_id, fields)
        return True

    async def settle_usage(self, event: UsageRecorded) -> None:
        """Charge a reservation at the actual usage, per leg (idempotent on the reservation id)."""
        if not event.reservation_id:
            return
        reservation = await self.ctx.state.reservation(event.reservation_id)
        if reservation is None and await self.durable.recover():
            reservation = await self.ctx.state.reservation(event.reservation_id)
        if reservation is not None:
            legs, source = legs_of_reservation(reservation), reservation.get("src", "personal")
        else:
            legs, source = await self.legs_for_event(event), event.quota_source or "personal"
            if not legs and not nothing_used(event):
                logger.warning("usage for reservation %s has no known pool; ignored", event.reservation_id)
        charge = Charge(
            event.reservation_id,
            legs,
            [event.total_tokens if leg.unit == "t" else event.cost_usd_micros for leg in legs],
            event.total_tokens,
            kind="usage",
            source=source,
            request_id=event.request_id,
            inbox_event_id=event.event_id,
            from_redis=reservation is not None,
        )
        if await self._charge(charge):
            RESERVATIONS_SETTLED.inc()
        observe_settled([event])

    async def sweep_expired(self) -> int:
        """Charge reservations past their TTL at their reserved amount (what they used, once released);
        returns how many were charged. Those Redis lost are charged from their durable records."""
        await self.durable.recover()
        now = self.ctx.clock()
        charged = 0
        # Each org's reservations expire in its own set (its hash slot): look in every org's.
        async with self.ctx.db.acquire() as conn:
            tags = sorted({org_tag(o) for o in await repo.org_ids(conn)} | {org_tag(None)})
        for reservation_id in await self.ctx.state.expired_reservations(tags, now):
            reservation = await self.ctx.state.reservation(reservation_id)
            if reservation is None:
                await self.ctx.state.forget_reservation(reservation_id)
                continue
            charged += await self._charge(_expiry(reservation_id, reservation, from_redis=True))
        async with self.ctx.db.acquire() as conn:
            records = await repo.expired_open_reservations(conn, now)
        held = await self.ctx.state.reservations([r.reservation_id for r in records])
        for record, fields in zip(records, held, strict=True):
            if (
                fields is None
            ):  # Redis lost it (or it was charged meanwhile: the ledger row makes this a no-op)
                await self._charge(_expiry(record.reservation_id, record.fields, from_redis=False))
                charged += 1
        RESERVATIONS_EXPIRED_CHARGED.inc(charged)
        RESERVATIONS_OPEN.set(await self.ctx.state.open_reservations(tags))
        return charged

    async def legs_for_event(self, event: UsageRecorded) -> list[Leg]:
        """The legs of a reservation Redis no longer holds, rebuilt from the usage event and the pools. None for
        an event that used nothing: a reservation released at zero that is held nowhere was never made (its
        admission was refused or never ran) or was charged already, and there is nothing to charge."""
        if not event.user_id or nothing_used(event):
            return []
        async with self.ctx.db.acquire() as conn:
            user = await repo.get_user(conn, event.user_id)
            org = await repo.org_settings(conn, user.org_id) if user else None
            if user is None or org is None:
                return []
            pools = await repo.governing_pools(
                conn, org.id, user.id, event.team_id or user.team_id, event.key_id or ""
            )
        session = await self.ctx.session_budget(org, event.session_id) if event.session_id else None
        record = KeyRecord(
            key_id=event.key_id or "",
            user_id=user.id,
            org_id=org.id,
            team_id=user.team_id,
            role=user.role,
            email=user.email,
            status=user.status,
            expires_at=None,
            revoked=False,
            pool_id=None,
            org=org,
        )
        source = event.quota_source or "personal"
        counters, sources = self.ctx.counters(
            record,
            pools,
            provider=event.provider,
            model=event.model,
            critical=source == "priority_bypass",
            vacation=source == "vacation_share",
            session=session,
        )
        group = source_group(sources, source)
        legs = [Leg.parse(c.key, c.leg, c.unit) for c in counters if c.group in (0, group)]
        if event.pool_id and not any(leg.pool_id == event.pool_id for leg in legs):
            pool = next((p for p in pools if p.id == event.pool_id), None)
            if pool is not None:
                per = period_of(pool.period, self.ctx.clock(), org.timezone)
                unit = "t" if pool.unit == "tokens" else "u"
                key = self.ctx.state.pool_key(pool.org_id, pool.id, per.key)
                legs.append(Leg(key, pool.id, per.key, False, unit))
        return legs

    async def _charge(self, c: Charge) -> int:
        """Write one ledger row per pool leg and apply the settlement to Redis, under the pools' row locks;
        then announce the thresholds the charge made a pool reach. Returns 1 if Redis was settled."""
        settled = 0
        async with self.ctx.db.acquire() as conn, conn.transaction():
            if c.inbox_event_id is not None and not await claim(conn, c.inbox_event_id):
                return 0
            pools = await repo.lock_pools(conn, [leg.pool_id for leg in c.legs])
            await repo.delete_open_reservations(conn, [c.reservation_id])
            self.durable.forget([c.reservation_id])
            recorded: list[int] = []
            charged: list[tuple[PoolRecord, str, int, int]] = []  # pool, period, total, this charge
            for leg, amount in zip(c.legs, c.amounts, strict=True):
                if leg.vacation:  # the team pool's row (the leg before) is the truth of the vacation share
                    recorded.append(recorded[-1] if recorded else amount)
                    continue
                value, used = await repo.insert_ledger(
                    conn,
                    leg.pool_id,
                    amount,
                    c.kind,
                    f"reservation:{c.reservation_id}:{leg.pool_id}",
                    c.request_id,
                    period_key=leg.period_key,
                    source=c.source,
                )
                recorded.append(value)
                if used is not None and leg.pool_id in pools:
                    charged.append((pools[leg.pool_id], leg.period_key, used, value))
            if c.from_redis:
                settled = int(await self.ctx.state.settle(c.reservation_id, c.tokens, recorded))
            if not settled:
                # Redis no longer held the reservation: rebuild the counters' `used` from the ledger.
                for leg in c.legs:
                    used = await repo.ledger_sum(
                        conn, leg.pool_id, leg.period_key, "vacation_share" if leg.vacation else None
                    )
                    await self.ctx.state.resync_used(leg.key, used)
            for pool, period_key, used, amount in charged:
                await self.thresholds.announce(conn, pool, period_key, used, amount)
        return settled
