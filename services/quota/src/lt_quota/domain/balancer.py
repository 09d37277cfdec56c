"""The balancer: which pools one request must fit and which pool pays.

Caps of group 0 must always fit (org pools, the key's own caps, the session budget). Groups 1.. are the
alternatives in order: the personal pool, then the team pool for a critical request (priority bypass), then
the vacation share of the team pool while a teammate is on vacation. The admission script takes the first
alternative that fits; a charge is then written per leg (one counter of one pool in one period)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from leaky_common.model_access import model_in_scope
from lt_quota.domain.periods import period_of
from lt_quota.domain.records import OrgSettings, PoolRecord

__all__ = ["Cap", "Leg", "legs_of_reservation", "plan", "source_group"]


@dataclass(frozen=True)
class Cap:
    """One cap of a request: a pool's counter in the current period (or the vacation share of a team pool,
    `pct` > 0: that percentage of the team pool's limit)."""

    pool_id: str
    period_key: str
    label: str  # personal, team, vacation_share, org, key_cap, session: what a denial names
    unit: str  # 't' tokens, 'u' micro-dollars
    group: int
    pct: int = 0

    @property
    def vacation(self) -> bool:
        """True for the vacation share of a team pool."""
        return self.pct > 0

    @property
    def leg(self) -> str:
        """`pool_id|period_key|p` (or `|v` for a vacation share): what settlement needs to charge it."""
        return f"{self.pool_id}|{self.period_key}|{'v' if self.vacation else 'p'}"


def _cap(pool: PoolRecord, label: str, group: int, now_ms: int, timezone: str, pct: int = 0) -> Cap:
    period_key = period_of(pool.period, now_ms, timezone).key
    return Cap(pool.id, period_key, label, "t" if pool.unit == "tokens" else "u", group, pct)


def plan(
    org: OrgSettings | None,
    pools: Sequence[PoolRecord],
    session: PoolRecord | None,
    *,
    provider: str,
    model: str,
    critical: bool,
    vacation: bool,
    now_ms: int,
) -> tuple[list[Cap], list[str]]:
    """The caps of one request and the balancer's alternatives (sources), in order:
    personal -> priority_bypass (critical) -> vacation_share."""
    tz = org.timezone if org else "UTC"
    applicable = [p for p in pools if p.provider in ("", provider) and model_in_scope(p.model, model)]
    caps = [
        _cap(p, "org" if p.owner_type == "org" else "key_cap", 0, now_ms, tz)
        for p in applicable
        if p.owner_type in ("org", "key")
    ]
    if session is not None:
        caps.append(_cap(session, "session", 0, now_ms, tz))
    sources: list[str] = []
    personal = [p for p in applicable if p.owner_type == "user"]
    team = [p for p in applicable if p.owner_type == "team"]
    if personal:
        sources.append("personal")
        caps.extend(_cap(p, "personal", len(sources), now_ms, tz) for p in personal)
    if critical and team:
        sources.append("priority_bypass")
        caps.extend(_cap(p, "team", len(sources), now_ms, tz) for p in team)
    share = org.vacation_share_percent if org and org.allow_vacation_sharing else 0
    if vacation and team and share > 0:
        sources.append("vacation_share")
        for p in team:
            caps.append(_cap(p, "team", len(sources), now_ms, tz))
            caps.append(_cap(p, "vacation_share", len(sources), now_ms, tz, pct=share))
    return caps, sources


def source_group(sources: Sequence[str], source: str) -> int:
    """The group of the alternative `source` (the first alternative if the plan has no such source: a settled
    event may name a source its reservation's plan, rebuilt after Redis lost it, no longer has)."""
    return sources.index(source) + 1 if source in sources else 1


@dataclass(frozen=True)
class Leg:
    """One counter a reservation charges: a pool in a period, or the vacation share of a team pool."""

    key: str
    pool_id: str
    period_key: str
    vacation: bool
    unit: str  # 't' or 'u'
    reserved: int = 0

    @staticmethod
    def parse(key: str, descriptor: str, unit: str, reserved: int = 0) -> Leg:
        """A leg from its counter key and its `pool_id|period_key|p|v` descriptor."""
        pool_id, period_key, kind = descriptor.split("|")
        return Leg(key, pool_id, period_key, kind == "v", unit, reserved)


def legs_of_reservation(reservation: Mapping[str, str]) -> list[Leg]:
    """The legs a reservation (as the admission script stored it: n, k<i>, d<i>, u<i>, a<i>) charges."""
    return [
        Leg.parse(reservation[f"k{i}"], reservation[f"d{i}"], reservation[f"u{i}"], int(reservation[f"a{i}"]))
        for i in range(1, int(reservation.get("n", "0")) + 1)
    ]
