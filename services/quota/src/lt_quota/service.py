"""Use cases of the quota service's hot path: authentication, admission (the balancer over every cap),
settlement, expiry, limit commands and freezes. Management use cases live in `governance`. SQL lives in the
repository, Redis scripts in `adapters.redis_state`.

Postgres is the truth. A settlement writes its ledger rows and changes the Redis counters while it holds the
row locks of the pools it charges, so a counter rebuilt from the ledger (after Redis lost it) never misses
nor double-counts a charge."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from prometheus_client import Counter as PromCounter

from leaky_common import inbox
from leaky_common.auth import Principal
from leaky_common.contracts import AdmitRequest, AdmitResponse, RateLimitState
from leaky_common.errors import (
    Forbidden,
    InvalidRequest,
    NotFound,
    QuotaExceeded,
    RateLimited,
    Unauthorized,
)
from leaky_common.events import (
    CreditTokens,
    DebitTokens,
    FreezeChanged,
    QuotaThresholdReached,
    RequestFreeze,
    TokensCredited,
    TokensDebited,
    Topics,
    UsageRecorded,
)
from leaky_common.outbox import write_outbox
from lt_quota.adapters import repository as repo
from lt_quota.adapters.redis_state import AdmitArgs, Counter, RedisState
from lt_quota.domain import (
    AdmitDenied,
    hash_api_key,
    key_prefix,
    model_matches,
    new_id,
    parse_admit_result,
    period_of,
    retry_after_seconds,
    thresholds_crossed,
)
from lt_quota.settings import QuotaSettings

__all__ = ["BucketSizes", "Clock", "Leg", "QuotaService", "system_clock"]

logger = logging.getLogger(__name__)

ADMISSIONS = PromCounter("lt_quota_admissions_total", "Admission decisions", ["decision"])

Clock = Callable[[], int]
"""Milliseconds since the epoch."""

APPROVAL_GUIDE = {
    "message": "Your personal token pool cannot cover this request. Ask a manager of your team for more "
    "tokens with POST /v1/approvals, or buy a top-up with POST /v1/purchases.",
    "endpoint": "POST /v1/approvals",
    "steps": [
        "POST /v1/approvals {requested_credits, reason}",
        "a manager of your team approves or rejects it",
        "approved credits raise your personal pool",
    ],
    "required_fields": ["requested_credits", "reason"],
}
# Which cap a 402 names (the admission script's counter labels).
_EXHAUSTED = {
    "personal": ("personal_pool_exhausted", "personal token pool exhausted"),
    "team": ("team_pool_exhausted", "team pool exhausted"),
    "vacation_share": ("vacation_share_exhausted", "the vacation share of your team pool is used up"),
    "org": ("org_pool_exhausted", "organisation pool exhausted"),
    "key_cap": ("key_cap_exhausted", "this API key's own cap is exhausted"),
    "session": ("session_budget_exhausted", "session budget exhausted"),
}
_UNIT_NAMES = {"tokens": "tokens", "usd": "micro-dollars (usd)"}
_CACHE_MAX = 10_000
_SESSION_ID_MAX = 200
_PRIORITIES = ("low", "normal", "high", "critical")


def system_clock() -> int:
    """Wall-clock milliseconds."""
    return int(time.time() * 1000)


@dataclass
class _Cached:
    until: float
    record: repo.KeyRecord | None


@dataclass
class _Context:
    """What governs a key's requests besides the key itself: its pools and the team's vacation state."""

    until: float
    pools: list[repo.PoolRecord]
    vacation: bool


@dataclass(frozen=True)
class BucketSizes:
    """Leaky-bucket capacities per period (requests and tokens, per key and per user)."""

    key_requests: int
    key_tokens: int
    user_requests: int
    user_tokens: int


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
        pool_id, period_key, kind = descriptor.split("|")
        return Leg(key, pool_id, period_key, kind == "v", unit, reserved)


class QuotaService:
    """The quota service's hot-path use cases over Postgres (truth) and Redis (hot state)."""

    def __init__(self, settings: QuotaSettings, db: asyncpg.Pool, state: RedisState, clock: Clock) -> None:
        self.settings = settings
        self.db = db
        self.state = state
        self.clock = clock
        self._keys: dict[str, _Cached] = {}
        self._contexts: dict[str, _Context] = {}
        self._sessions: dict[tuple[str, str], repo.PoolRecord | None] = {}

    def invalidate(self) -> None:
        """Forget cached keys and contexts (after a management change that affects admission)."""
        self._keys.clear()
        self._contexts.clear()

    # --- start-up -------------------------------------------------------------------------------------------

    async def bootstrap_admin(self, api_key: str) -> None:
        """Ensure the default org (the platform org, whose admins manage orgs), an admin user holding
        `api_key` and its personal pool (idempotent)."""
        async with self.db.acquire() as conn, conn.transaction():
            org_id = await repo.upsert_org(conn, new_id(), "default", "UTC")
            await repo.mark_platform_org(conn, org_id)
            await repo.insert_user(conn, new_id(), org_id, "admin@localhost", "Administrator", "admin")
            user_id = await repo.user_id_by_email(conn, org_id, "admin@localhost")
            assert user_id is not None
            await repo.insert_key(
                conn, new_id(), user_id, org_id, key_prefix(api_key), hash_api_key(api_key), "bootstrap"
            )
            await repo.ensure_pool(
                conn, new_id(), "user", user_id, org_id, "tokens", self.settings.bootstrap_admin_quota
            )

    async def load_pools(self, pool_ids: list[str] | None = None) -> int:
        """Load the current-period counters of pools missing from Redis (used = ledger); returns how many.
        One transaction holds the pools' share locks, so no settlement is between its ledger write and its
        counter update while the totals are read."""
        now = self.clock()
        loaded = 0
        async with self.db.acquire() as conn, conn.transaction():
            pools = await (repo.pools_by_ids(conn, pool_ids) if pool_ids else repo.pools_to_load(conn))
            await repo.lock_pools(conn, [p.id for p in pools], share=True)
            zones = {o: await self._timezone(conn, o) for o in {p.org_id for p in pools}}
            periods = {p.id: period_of(p.period, now, zones[p.org_id]) for p in pools}
            used = await repo.period_totals(conn, [(p.id, periods[p.id].key) for p in pools])
            for pool in pools:
                per = periods[pool.id]
                loaded += await self.state.load_counter(
                    self.state.pool_key(pool.id, per.key),
                    pool.limit,
                    used.get(pool.id, 0),
                    self._counter_ttl_ms(per.end),
                )
        return loaded

    def _counter_ttl_ms(self, period_end: datetime | None) -> int:
        """Periodic counters expire a day after their period ends; others never."""
        if period_end is None:
            return 0
        return max(int(period_end.timestamp() * 1000) - self.clock() + 86_400_000, 0)

    async def _timezone(self, conn: asyncpg.Connection, org_id: str) -> str:
        org = await repo.org_settings(conn, org_id)
        return org.timezone if org else "UTC"

    async def load_counter(self, key: str, pool_id: str, period_key: str, vacation: bool) -> bool:
        """Create a counter from the ledger if Redis lacks it (under the pool's share lock, so no settlement
        is between its ledger write and its counter update)."""
        async with self.db.acquire() as conn, conn.transaction():
            pool = (await repo.lock_pools(conn, [pool_id], share=True)).get(pool_id)
            if pool is None:
                return False
            used = await repo.ledger_sum(conn, pool_id, period_key, "vacation_share" if vacation else None)
            per = period_of(pool.period, self.clock(), await self._timezone(conn, pool.org_id))
            ttl_ms = self._counter_ttl_ms(per.end) if period_key else 0
            return await self.state.load_counter(key, 0 if vacation else pool.limit, used, ttl_ms)

    # --- authentication and admission (hot path) ------------------------------------------------------------

    async def _key_record(self, api_key: str) -> repo.KeyRecord:
        key_hash = hash_api_key(api_key)
        now = time.monotonic()
        cached = self._keys.get(key_hash)
        if cached is None or cached.until < now:
            async with self.db.acquire() as conn:
                record = await repo.key_by_hash(conn, key_hash)
            if len(self._keys) >= _CACHE_MAX:
                self._keys.clear()
            cached = _Cached(now + self.settings.key_cache_ttl_s, record)
            self._keys[key_hash] = cached
        record = cached.record
        if record is None or record.revoked:
            raise Unauthorized("invalid API key", code="invalid_api_key")
        if record.expires_at is not None and record.expires_at.timestamp() * 1000 <= self.clock():
            raise Unauthorized("API key expired", code="invalid_api_key")
        return record

    async def _context(self, record: repo.KeyRecord) -> _Context:
        now = time.monotonic()
        ctx = self._contexts.get(record.key_id)
        if ctx is None or ctx.until < now:
            async with self.db.acquire() as conn:
                pools = await repo.governing_pools(
                    conn, record.org_id, record.user_id, record.team_id, record.key_id
                )
                vacation = record.team_id is not None and await repo.teammate_on_vacation(
                    conn, record.team_id, record.user_id
                )
            if len(self._contexts) >= _CACHE_MAX:
                self._contexts.clear()
            ctx = _Context(now + self.settings.key_cache_ttl_s, pools, vacation)
            self._contexts[record.key_id] = ctx
        return ctx

    async def session_pool(self, org: repo.OrgSettings, session_id: str) -> repo.PoolRecord:
        """The session's budget (a usd pool), created at the org's default on first use."""
        cached = self._sessions.get((org.id, session_id))
        if cached is not None:
            return cached
        async with self.db.acquire() as conn:
            pool_id = await repo.ensure_pool(
                conn,
                new_id(),
                "session",
                f"{org.id}/{session_id}",
                org.id,
                "usd",
                org.default_session_budget_usd_micros,
            )
            pool = await repo.pool_by_id(conn, pool_id)
        assert pool is not None
        if len(self._sessions) >= _CACHE_MAX:
            self._sessions.clear()
        self._sessions[(org.id, session_id)] = pool
        return pool

    async def session_budget(self, org: repo.OrgSettings, session_id: str) -> repo.PoolRecord | None:
        """The budget a session's requests must fit: created at the org's default on first use, or, when the
        org's default is 0 (no session budgets), only a budget an admin set for this session."""
        key = (org.id, session_id)
        if key in self._sessions:
            return self._sessions[key]
        if org.default_session_budget_usd_micros > 0:
            return await self.session_pool(org, session_id)
        async with self.db.acquire() as conn:
            pool = await repo.session_pool(conn, org.id, session_id)
        if len(self._sessions) >= _CACHE_MAX:
            self._sessions.clear()
        self._sessions[key] = pool
        return pool

    def forget_session(self, org_id: str, session_id: str) -> None:
        """Drop a cached session budget (its limit changed)."""
        self._sessions.pop((org_id, session_id), None)

    @staticmethod
    def _principal(record: repo.KeyRecord) -> Principal:
        return Principal(
            user_id=record.user_id,
            org_id=record.org_id,
            key_id=record.key_id,
            team_id=record.team_id,
            role="admin" if record.role == "admin" else "user",
            email=record.email,
            allowed_models=record.allowed_models,
            managed_team_ids=record.managed_team_ids,
            platform_admin=record.role == "admin" and record.platform,
        )

    async def authenticate(self, api_key: str) -> Principal:
        """Resolve a key to its principal; 401 if unknown, revoked or expired."""
        return self._principal(await self._key_record(api_key))

    def counters(
        self,
        record: repo.KeyRecord,
        pools: list[repo.PoolRecord],
        *,
        provider: str,
        model: str,
        critical: bool,
        vacation: bool,
        session: repo.PoolRecord | None,
    ) -> tuple[list[Counter], list[str]]:
        """The caps of one request and the balancer's alternatives, in order:
        personal -> priority_bypass (critical) -> vacation_share; org pools, key caps and the session budget
        must fit whichever provides the tokens."""
        org = record.org
        tz = org.timezone if org else "UTC"
        now = self.clock()

        def counter(pool: repo.PoolRecord, label: str, group: int, pct: int = 0) -> Counter:
            per = period_of(pool.period, now, tz)
            key = (
                self.state.vacation_key(pool.id, per.key or "-")
                if pct
                else self.state.pool_key(pool.id, per.key)
            )
            unit = "t" if pool.unit == "tokens" else "u"
            return Counter(key, label, unit, group, f"{pool.id}|{per.key}|{'v' if pct else 'p'}", pct)

        applicable = [p for p in pools if p.provider in ("", provider) and model_matches(p.model, model)]
        counters: list[Counter] = []
        for pool in applicable:
            if pool.owner_type == "org":
                counters.append(counter(pool, "org", 0))
            elif pool.owner_type == "key":
                counters.append(counter(pool, "key_cap", 0))
        if session is not None:
            counters.append(counter(session, "session", 0))
        sources: list[str] = []
        personal = [p for p in applicable if p.owner_type == "user"]
        team = [p for p in applicable if p.owner_type == "team"]
        if personal:
            sources.append("personal")
            counters.extend(counter(p, "personal", len(sources)) for p in personal)
        if critical and team:
            sources.append("priority_bypass")
            counters.extend(counter(p, "team", len(sources)) for p in team)
        share = org.vacation_share_percent if org and org.allow_vacation_sharing else 0
        if vacation and team and share > 0:
            sources.append("vacation_share")
            for p in team:
                counters.append(counter(p, "team", len(sources)))
                counters.append(counter(p, "vacation_share", len(sources), pct=share))
        return counters, sources

    def default_bucket_sizes(self, org: repo.OrgSettings | None, tier: str, role: str) -> BucketSizes:
        """The bucket sizes per period of a key without its own: the org's overrides, else the service's
        settings, scaled by the user's tier and (for admins) the admin multiplier."""
        s = self.settings
        mult = s.bucket_tiers.get(tier, 1.0) * (s.admin_bucket_multiplier if role == "admin" else 1.0)

        def scaled(field: str) -> int:
            override: int | None = getattr(org, field) if org is not None else None
            return max(1, int((getattr(s, field) if override is None else override) * mult))

        return BucketSizes(
            key_requests=scaled("key_requests_per_period"),
            key_tokens=scaled("key_tokens_per_period"),
            user_requests=scaled("user_requests_per_period"),
            user_tokens=scaled("user_tokens_per_period"),
        )

    def bucket_sizes(self, record: repo.KeyRecord) -> BucketSizes:
        """The sizes one admission uses: the key's own sizes exactly as set (no scaling), else the defaults."""
        sizes = self.default_bucket_sizes(record.org, record.tier, record.role)
        return replace(
            sizes,
            key_requests=record.rate_limit_requests or sizes.key_requests,
            key_tokens=record.rate_limit_tokens or sizes.key_tokens,
        )

    def _policy(self, record: repo.KeyRecord, req: AdmitRequest) -> bool:
        """Check the key's model and priority rules; True if the request may draw on the team pool."""
        if record.allowed_models is not None and not any(
            model_matches(p, req.model) for p in record.allowed_models
        ):
            raise Forbidden(
                f"this API key may not use model {req.model}", code="model_not_allowed", param="model"
            )
        asked = (req.priority or "").strip().lower() or None
        if asked is not None and asked not in _PRIORITIES:
            raise InvalidRequest(
                f"unknown priority {req.priority!r}; use one of {', '.join(_PRIORITIES)}",
                code="invalid_priority",
                param="priority",
            )
        priority = asked or record.default_priority
        may_bypass = record.allow_priority_bypass or (
            record.allowed_priorities is not None and "critical" in record.allowed_priorities
        )
        if (
            asked is not None
            and record.allowed_priorities is not None
            and asked not in record.allowed_priorities
        ):
            raise Forbidden(f"this API key may not use priority {asked}", code="priority_not_allowed")
        if priority == "critical" and not may_bypass:
            if asked == "critical":
                raise Forbidden(
                    "critical priority is not allowed for this user or key", code="priority_not_allowed"
                )
            return False
        return priority == "critical"

    async def admit(self, req: AdmitRequest) -> AdmitResponse:
        """Authenticate, check policy, freezes and buckets, and reserve against every cap in one Redis call."""
        try:
            record = await self._key_record(req.api_key)
        except Unauthorized:
            ADMISSIONS.labels("unauthorized").inc()
            raise
        return await self.admit_record(record, req)

    async def record_for(self, principal: Principal) -> repo.KeyRecord:
        """The key record behind an authenticated principal (401 if the key is gone or revoked)."""
        record = None
        if principal.key_id:
            async with self.db.acquire() as conn:
                record = await repo.key_by_id(conn, principal.key_id)
        if record is None or record.revoked or record.user_id != principal.user_id:
            raise Unauthorized("invalid API key", code="invalid_api_key")
        return record

    async def admit_record(self, record: repo.KeyRecord, req: AdmitRequest) -> AdmitResponse:
        """Admission for an authenticated key (`req.api_key` is not used)."""
        if record.status == "suspended":
            ADMISSIONS.labels("suspended").inc()
            raise Forbidden("this user is suspended", code="user_suspended")
        try:
            critical = self._policy(record, req)
        except Forbidden:
            ADMISSIONS.labels("forbidden").inc()
            raise
        org = record.org
        session_id = req.session_id
        if session_id is not None and not 0 < len(session_id) <= _SESSION_ID_MAX:
            raise InvalidRequest(
                f"a session id has 1 to {_SESSION_ID_MAX} characters",
                code="invalid_session_id",
                param="session_id",
            )
        if org is not None and org.strict_sessions and not session_id:
            raise InvalidRequest(
                "this organisation requires a session id (X-Session-ID header or ?session_id=)",
                code="session_required",
                param="session_id",
            )
        ctx = await self._context(record)
        session = await self.session_budget(org, session_id) if org is not None and session_id else None
        counters, sources = self.counters(
            record,
            ctx.pools,
            provider=req.provider,
            model=req.model,
            critical=critical,
            vacation=ctx.vacation,
            session=session,
        )
        if not sources:
            ADMISSIONS.labels("insufficient_quota").inc()
            raise QuotaExceeded(
                "you have no token pool for this model",
                code="personal_pool_exhausted",
                approval=APPROVAL_GUIDE,
            )
        now = self.clock()
        s = self.settings
        max_out = req.max_output_tokens or req.model_max_output_tokens
        sizes = self.bucket_sizes(record)
        args = AdmitArgs(
            now_ms=now,
            user_id=record.user_id,
            key_id=record.key_id,
            # Session ids are the client's: a session's freeze is kept per org.
            session_id=_session_target(record.org_id, session_id) if session_id else None,
            reservation_id=new_id(),
            request_id=req.request_id,
            expires_ms=now + s.reservation_ttl_s * 1000,
            prompt_tokens=req.prompt_tokens,
            max_output_tokens=max_out,
            # A client asking for fewer tokens than the minimum gets what it asked for, not a denial.
            min_output_tokens=min(req.min_output_tokens, max_out),
            # With max_tokens the bucket is charged the grant; without it, an expected answer length.
            bucket_output_tokens=-1 if req.max_output_tokens else s.bucket_output_estimate_tokens,
            input_price=req.input_usd_micros_per_mtok,
            output_price=req.output_usd_micros_per_mtok,
            key_requests=sizes.key_requests,
            key_tokens=sizes.key_tokens,
            user_requests=sizes.user_requests,
            user_tokens=sizes.user_tokens,
            period_ms=int(s.bucket_period_s * 1000),
            strategy=s.bucket_strategy,
            burst=s.bucket_burst,
            sources=tuple(sources),
            counters=tuple(counters),
        )
        outcome = parse_admit_result(await self.state.admit(args))
        if isinstance(outcome, AdmitDenied) and outcome.reason == "no_pool":
            # A counter is missing: a new period or session, or Redis lost its state. Rebuild from Postgres.
            await self._ensure_counters(counters)
            outcome = parse_admit_result(await self.state.admit(args))
        if isinstance(outcome, AdmitDenied):
            raise self._denial(outcome, session)
        ADMISSIONS.labels("admitted").inc()
        chosen = next((c for c in counters if c.group == sources.index(outcome.source) + 1), None)
        return AdmitResponse(
            reservation_id=args.reservation_id,
            principal=self._principal(record),
            pool_id=chosen.leg.split("|")[0] if chosen else None,
            quota_source=outcome.source,
            reserved_tokens=outcome.reserved,
            granted_output_tokens=outcome.granted_output,
            reserved_usd_micros=outcome.reserved_usd,
            privacy_strict=req.privacy == "strict"
            or record.privacy_default == "strict"
            or bool(org and org.privacy_strict),
            ratelimit=RateLimitState(
                limit_requests=outcome.limit_requests,
                remaining_requests=outcome.remaining_requests,
                reset_requests_s=outcome.reset_requests_ms / 1000,
                limit_tokens=outcome.limit_tokens,
                remaining_tokens=outcome.remaining_tokens,
                reset_tokens_s=outcome.reset_tokens_ms / 1000,
            ),
        )

    async def _ensure_counters(self, counters: list[Counter]) -> None:
        states = await self.state.counter_states([c.key for c in counters])
        for c in counters:
            if states[c.key] is None:
                leg = Leg.parse(c.key, c.leg, c.unit)
                await self.load_counter(c.key, leg.pool_id, leg.period_key, leg.vacation)
        if await self.state.was_lost():
            # Redis lost its data (flushed or restarted empty): the freezes went with it.
            await self.restore_freezes()

    @staticmethod
    def _denial(outcome: AdmitDenied, session: repo.PoolRecord | None) -> Exception:
        if outcome.reason == "frozen":
            ADMISSIONS.labels("frozen").inc()
            return Forbidden(
                f"this {outcome.detail} is frozen: {outcome.reason_text}",
                code="frozen",
                frozen=outcome.detail,
                reason=outcome.reason_text,
            )
        if outcome.reason == "rate_limited":
            ADMISSIONS.labels("rate_limited").inc()
            seconds = retry_after_seconds(outcome.retry_ms)
            return RateLimited(
                f"rate limit reached ({outcome.detail}); retry in {seconds} s",
                code="rate_limited",
                headers={"Retry-After": str(seconds)},
                limit=outcome.detail,
            )
        ADMISSIONS.labels("insufficient_quota").inc()
        code, what = _EXHAUSTED.get(outcome.detail, _EXHAUSTED["personal"])
        unit = "micro-dollars" if outcome.detail == "session" else "left"
        extra: dict[str, Any] = {"approval": APPROVAL_GUIDE}
        if outcome.detail == "personal":
            extra["approval"] = {**APPROVAL_GUIDE, "personal_quota_remaining": outcome.remaining}
        if outcome.detail == "session" and session is not None:
            extra["budget"] = {
                "budget_usd_micros": session.limit,
                "remaining_usd_micros": outcome.remaining,
                "spent_usd_micros": None,
            }
        return QuotaExceeded(
            f"{what}: {outcome.remaining} {unit}, not enough for this request", code=code, **extra
        )

    # --- settlement -----------------------------------------------------------------------------------------

    @staticmethod
    def _legs(reservation: dict[str, str]) -> list[Leg]:
        return [
            Leg.parse(
                reservation[f"k{i}"], reservation[f"d{i}"], reservation[f"u{i}"], int(reservation[f"a{i}"])
            )
            for i in range(1, int(reservation.get("n", "0")) + 1)
        ]

    async def _legs_for_event(self, event: UsageRecorded) -> list[Leg]:
        """The legs of a reservation Redis no longer holds, rebuilt from the usage event and the pools."""
        if not event.user_id:
            return []
        async with self.db.acquire() as conn:
            user = await repo.get_user(conn, event.user_id)
            org = await repo.org_settings(conn, user.org_id) if user else None
            if user is None or org is None:
                return []
            pools = await repo.governing_pools(
                conn, org.id, user.id, event.team_id or user.team_id, event.key_id or ""
            )
        session = await self.session_budget(org, event.session_id) if event.session_id else None
        record = repo.KeyRecord(
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
        counters, sources = self.counters(
            record,
            pools,
            provider=event.provider,
            model=event.model,
            critical=source == "priority_bypass",
            vacation=source == "vacation_share",
            session=session,
        )
        group = sources.index(source) + 1 if source in sources else 1
        legs = [Leg.parse(c.key, c.leg, c.unit) for c in counters if c.group in (0, group)]
        if event.pool_id and not any(leg.pool_id == event.pool_id for leg in legs):
            pool = next((p for p in pools if p.id == event.pool_id), None)
            if pool is not None:
                per = period_of(pool.period, self.clock(), org.timezone)
                unit = "t" if pool.unit == "tokens" else "u"
                legs.append(Leg(self.state.pool_key(pool.id, per.key), pool.id, per.key, False, unit))
        return legs

    async def settle_usage(self, event: UsageRecorded) -> None:
        """Charge a reservation at the actual usage, per leg (idempotent on the reservation id)."""
        if not event.reservation_id:
            return
        reservation = await self.state.reservation(event.reservation_id)
        if reservation is not None:
            legs, source = self._legs(reservation), reservation.get("src", "personal")
        else:
            legs, source = await self._legs_for_event(event), event.quota_source or "personal"
            if not legs:
                logger.warning("usage for reservation %s has no known pool; ignored", event.reservation_id)
        actual = [event.total_tokens if leg.unit == "t" else event.cost_usd_micros for leg in legs]
        await self._charge(
            event.reservation_id,
            legs,
            actual,
            event.total_tokens,
            kind="usage",
            source=source,
            request_id=event.request_id,
            inbox_event_id=event.event_id,
            from_redis=reservation is not None,
        )

    async def sweep_expired(self) -> int:
        """Charge reservations past their TTL at their reserved amount; returns how many were charged."""
        charged = 0
        for reservation_id in await self.state.expired_reservations(self.clock()):
            reservation = await self.state.reservation(reservation_id)
            if reservation is None:
                await self.state.forget_reservation(reservation_id)
                continue
            legs = self._legs(reservation)
            charged += await self._charge(
                reservation_id,
                legs,
                [leg.reserved for leg in legs],
                int(reservation.get("amount", "0")),
                kind="expiry",
                source=reservation.get("src", "personal"),
                request_id=reservation.get("request"),
                inbox_event_id=None,
                from_redis=True,
            )
        return charged

    async def _charge(
        self,
        reservation_id: str,
        legs: list[Leg],
        actual: list[int],
        actual_tokens: int,
        *,
        kind: str,
        source: str,
        request_id: str | None,
        inbox_event_id: str | None,
        from_redis: bool,
    ) -> int:
        """Write one ledger row per pool leg and apply the settlement to Redis, under the pools' row locks;
        then announce the thresholds the charge made a pool reach. Returns 1 if Redis was settled."""
        settled = 0
        async with self.db.acquire() as conn, conn.transaction():
            if inbox_event_id is not None and not await inbox.claim(conn, inbox_event_id):
                return 0
            pools = await repo.lock_pools(conn, [leg.pool_id for leg in legs])
            recorded: list[int] = []
            charged: list[tuple[repo.PoolRecord, str, int, int]] = []  # pool, period, total, this charge
            for leg, amount in zip(legs, actual, strict=True):
                if leg.vacation:  # the team pool's row (the leg before) is the truth of the vacation share
                    recorded.append(recorded[-1] if recorded else amount)
                    continue
                value, used = await repo.insert_ledger(
                    conn,
                    leg.pool_id,
                    amount,
                    kind,
                    f"reservation:{reservation_id}:{leg.pool_id}",
                    request_id,
                    period_key=leg.period_key,
                    source=source,
                )
                recorded.append(value)
                if used is not None and leg.pool_id in pools:
                    charged.append((pools[leg.pool_id], leg.period_key, used, value))
            if from_redis:
                settled = int(await self.state.settle(reservation_id, actual_tokens, recorded))
            if not settled:
                # Redis no longer held the reservation: rebuild the counters' `used` from the ledger.
                for leg in legs:
                    used = await repo.ledger_sum(
                        conn, leg.pool_id, leg.period_key, "vacation_share" if leg.vacation else None
                    )
                    await self.state.resync_used(leg.key, used)
            for pool, period_key, used, amount in charged:
                await self._announce_thresholds(conn, pool, period_key, used, amount)
        return settled

    async def _announce_thresholds(
        self, conn: asyncpg.Connection, pool: repo.PoolRecord, period_key: str, used: int, amount: int
    ) -> None:
        """QuotaThresholdReached once per user/team/org pool, period and percentage (80/90/100) that this
        charge reached."""
        if pool.owner_type not in ("user", "team", "org"):
            return
        before = set(thresholds_crossed(used - amount, pool.limit))
        for percent in thresholds_crossed(used, pool.limit):
            if percent in before:
                continue
            if not await repo.claim_threshold(conn, pool.id, period_key, percent):
                continue
            per = period_of(pool.period, self.clock(), await self._timezone(conn, pool.org_id))
            event = QuotaThresholdReached(
                producer="quota",
                pool_id=pool.id,
                owner_type=pool.owner_type,
                owner_id=pool.owner_id,
                org_id=pool.org_id,
                percent=percent,
                limit=pool.limit,
                used=used,
                unit=pool.unit,
                period_start=per.start if per.key == period_key else None,
            )
            await write_outbox(conn, Topics.QUOTA_EVENTS, event, key=pool.id)

    # --- commands -------------------------------------------------------------------------------------------

    async def adjust_limit(self, cmd: CreditTokens | DebitTokens) -> None:
        """Raise (credit) or lower (debit) a pool's limit once per (purchase, step); reply via the outbox."""
        kind = "credit" if isinstance(cmd, CreditTokens) else "debit"
        reply_cls = TokensCredited if kind == "credit" else TokensDebited
        changed_pool: str | None = None
        async with self.db.acquire() as conn, conn.transaction():
            await inbox.claim(conn, cmd.event_id)
            existing = await repo.find_adjustment(conn, cmd.purchase_id, cmd.step, kind)
            reply: TokensCredited | TokensDebited
            if existing is not None:
                # The same reply again (same event id), so the saga can dedupe it.
                reply = reply_cls(
                    event_id=existing["reply_event_id"],
                    producer="quota",
                    correlation_id=cmd.correlation_id or cmd.saga_id,
                    causation_id=cmd.event_id,
                    saga_id=cmd.saga_id,
                    step=cmd.step,
                    purchase_id=cmd.purchase_id,
                    success=existing["applied"],
                    pool_id=existing["pool_id"],
                    new_limit=existing["new_limit"] if existing["applied"] else None,
                    reason=existing["reason"],
                )
                changed_pool = existing["pool_id"] if existing["applied"] else None
            else:
                # Without a pool id, the buyer's own unscoped pool of the purchase's unit.
                pool = await (
                    repo.pool_by_id(conn, cmd.pool_id, for_update=True)
                    if cmd.pool_id
                    else repo.personal_pool(conn, cmd.user_id, unit=cmd.unit, for_update=True)
                )
                reason: str | None = None
                # A refusal that must stick for this purchase (recorded, unlike a malformed command).
                tombstone = False
                new_limit = 0
                if pool is None:
                    reason = await self._missing_pool_reason(conn, cmd)
                elif pool.unit != cmd.unit:
                    reason = (
                        f"pool {pool.id} is counted in {_UNIT_NAMES.get(pool.unit, pool.unit)}, "
                        f"but this {kind} is in {_UNIT_NAMES[cmd.unit]}"
                    )
                elif cmd.amount <= 0:
                    reason = "amount must be positive"
                elif kind == "credit" and not await self._may_top_up(conn, cmd.user_id, pool):
                    reason = f"user {cmd.user_id} may not top up pool {pool.id}"
                # Checked under the pool's row lock, which credit and debit both take: a compensation
                # undoes only a credit that was applied, and a credit arriving after its purchase was
                # compensated is refused, so tokens are never lost nor given away.
                elif kind == "credit" and await repo.adjustment_for_purchase(conn, cmd.purchase_id, "debit"):
                    reason, tombstone = "purchase already compensated; credit refused", True
                elif kind == "debit" and not await repo.adjustment_for_purchase(
                    conn, cmd.purchase_id, "credit", applied_only=True
                ):
                    reason, tombstone = "no applied credit for this purchase; nothing taken back", True
                else:
                    new_limit = pool.limit + cmd.amount if kind == "credit" else pool.limit - cmd.amount
                    if new_limit < 0:
                        reason = f"debit of {cmd.amount} exceeds the pool limit {pool.limit}"
                common: dict[str, Any] = {
                    "producer": "quota",
                    "correlation_id": cmd.correlation_id or cmd.saga_id,
                    "causation_id": cmd.event_id,
                    "saga_id": cmd.saga_id,
                    "step": cmd.step,
                    "purchase_id": cmd.purchase_id,
                }
                if reason is not None or pool is None:
                    reply = reply_cls(
                        **common, success=False, pool_id=pool.id if pool else None, reason=reason
                    )
                    if tombstone and pool is not None:
                        await repo.insert_adjustment(
                            conn,
                            adjustment_id=new_id(),
                            pool_id=pool.id,
                            kind=kind,
                            amount=cmd.amount,
                            purchase_id=cmd.purchase_id,
                            step=cmd.step,
                            saga_id=cmd.saga_id,
                            new_limit=pool.limit,
                            reply_event_id=reply.event_id,
                            applied=False,
                            reason=reason,
                        )
                else:
                    reply = reply_cls(**common, success=True, pool_id=pool.id, new_limit=new_limit)
                    await repo.set_pool_limit(conn, pool.id, new_limit)
                    await repo.insert_adjustment(
                        conn,
                        adjustment_id=new_id(),
                        pool_id=pool.id,
                        kind=kind,
                        amount=cmd.amount,
                        purchase_id=cmd.purchase_id,
                        step=cmd.step,
                        saga_id=cmd.saga_id,
                        new_limit=new_limit,
                        reply_event_id=reply.event_id,
                    )
                    changed_pool = pool.id
            await write_outbox(conn, Topics.SAGA_REPLIES, reply, key=cmd.saga_id)
        if changed_pool is not None:
            await self._sync_limit(changed_pool)

    @staticmethod
    async def _missing_pool_reason(conn: asyncpg.Connection, cmd: CreditTokens | DebitTokens) -> str:
        """Why a command found no pool: an unknown pool or user, or a user without a pool of that unit."""
        if cmd.pool_id:
            return f"unknown pool {cmd.pool_id}"
        if await repo.get_user(conn, cmd.user_id) is None:
            return f"unknown user {cmd.user_id}"
        return (
            f"user {cmd.user_id} has no {cmd.unit} pool ({_UNIT_NAMES[cmd.unit]}); "
            "an admin creates one with POST /v1/admin/pools"
        )

    @staticmethod
    async def _may_top_up(conn: asyncpg.Connection, user_id: str, pool: repo.PoolRecord) -> bool:
        """A purchase may credit the buyer's own pool, their team's pool or their organisation's pool."""
        if pool.owner_type == "user":
            return pool.owner_id == user_id
        user = await repo.get_user(conn, user_id)
        if user is None:
            return False
        if pool.owner_type == "team":
            return pool.owner_id == user.team_id
        return pool.owner_type == "org" and pool.owner_id == user.org_id

    async def _sync_limit(self, pool_id: str) -> None:
        """Make Redis hold a pool's limit from Postgres (after a credit, debit, approval or admin change)."""
        async with self.db.acquire() as conn:
            pool = await repo.pool_by_id(conn, pool_id)
            tz = await self._timezone(conn, pool.org_id) if pool else "UTC"
        self._contexts.clear()
        if pool is None:
            return
        key = self.state.pool_key(pool.id, period_of(pool.period, self.clock(), tz).key)
        if not await self.state.set_limit(key, pool.limit):
            await self.load_pools([pool_id])

    # --- freezes -------------------------------------------------------------------------------------------

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock() / 1000, UTC)

    async def freeze(self, cmd: RequestFreeze) -> None:
        """Apply a `RequestFreeze` command once; a duration of 0 or less freezes until lifted."""
        async with self.db.acquire() as conn, conn.transaction():
            if not await inbox.claim(conn, cmd.event_id):
                return
            await self._record_freeze(
                conn,
                cmd.target_type,
                cmd.target_id,
                cmd.reason,
                cmd.duration_s if cmd.duration_s > 0 else None,
                source="anomaly",
                org_id=cmd.org_id,
                causation_id=cmd.event_id,
            )
        await self._sync_freeze(cmd.target_type, cmd.target_id, cmd.org_id)

    async def admin_freeze(
        self, admin: Principal, target_type: str, target_id: str, reason: str, duration_s: int | None
    ) -> dict[str, Any]:
        """Freeze a session, key or user of the admin's org (`duration_s` None: until unfrozen)."""
        async with self.db.acquire() as conn, conn.transaction():
            record = await self._record_freeze(
                conn, target_type, target_id, reason, duration_s, source="admin", org_id=admin.org_id
            )
        await self._sync_freeze(target_type, target_id, admin.org_id)
        return _freeze_view(record)

    async def list_freezes(self, admin: Principal) -> list[dict[str, Any]]:
        """Live freezes of the admin's org."""
        async with self.db.acquire() as conn:
            records = await repo.live_freezes(conn, self._now(), org_id=admin.org_id)
        return [_freeze_view(r) for r in records]

    async def unfreeze(self, admin: Principal, target_type: str, target_id: str) -> dict[str, Any]:
        """Lift every live freeze of a target (idempotent); announces the change if one was lifted."""
        now = self._now()
        async with self.db.acquire() as conn, conn.transaction():
            user_id, org_id = await self._freeze_owner(conn, target_type, target_id, admin.org_id)
            lifted = await repo.lift_freezes(conn, target_type, target_id, now, admin.org_id)
            if lifted:
                event = FreezeChanged(
                    producer="quota",
                    target_type=target_type,
                    target_id=target_id,
                    org_id=org_id,
                    user_id=user_id,
                    frozen=False,
                    reason="unfrozen by an admin",
                    source="admin",
                )
                await write_outbox(conn, Topics.QUOTA_EVENTS, event, key=target_id)
        await self._sync_freeze(target_type, target_id, admin.org_id)
        return {"target_type": target_type, "target_id": target_id, "frozen": False, "lifted": len(lifted)}

    async def restore_freezes(self) -> int:
        """Write every live freeze from Postgres into Redis (start-up, or after Redis lost its state)."""
        async with self.db.acquire() as conn:
            records = await repo.live_freezes(conn, self._now())
        targets = {(r.target_type, r.target_id, r.org_id) for r in records}
        for target_type, target_id, org_id in targets:
            await self._sync_freeze(target_type, target_id, org_id)
        await self.state.mark_restored()
        return len(targets)

    async def _freeze_owner(
        self, conn: asyncpg.Connection, target_type: str, target_id: str, org_id: str | None
    ) -> tuple[str | None, str | None]:
        """(user id, org id) behind a key or user target; 404 if it is not in `org_id` (when given)."""
        owner: tuple[str, str] | None = None
        if target_type == "key":
            owner = await repo.key_owner(conn, target_id)
        elif target_type == "user":
            user = await repo.get_user(conn, target_id)
            owner = (user.id, user.org_id) if user else None
        else:
            return None, org_id
        if owner is None or (org_id is not None and owner[1] != org_id):
            raise NotFound(f"{target_type} {target_id} not found", code=f"{target_type}_not_found")
        return owner

    async def _record_freeze(
        self,
        conn: asyncpg.Connection,
        target_type: str,
        target_id: str,
        reason: str,
        duration_s: int | None,
        *,
        source: str,
        org_id: str | None,
        causation_id: str | None = None,
    ) -> repo.FreezeRecord:
        """Insert a freeze and its `FreezeChanged` announcement in the caller's transaction."""
        try:
            user_id, owner_org = await self._freeze_owner(
                conn, target_type, target_id, org_id if source == "admin" else None
            )
        except NotFound:
            if source == "admin":
                raise
            user_id, owner_org = None, org_id  # a detector may name a key we do not know: freeze it anyway
        now = self._now()
        expires_at = None if duration_s is None else now + timedelta(seconds=duration_s)
        freeze_id = new_id()
        await repo.insert_freeze(
            conn,
            freeze_id,
            target_type,
            target_id,
            reason,
            expires_at,
            source=source,
            org_id=owner_org,
            user_id=user_id,
        )
        event = FreezeChanged(
            producer="quota",
            causation_id=causation_id,
            target_type=target_type,
            target_id=target_id,
            org_id=owner_org,
            user_id=user_id,
            frozen=True,
            reason=reason,
            expires_at=expires_at,
            source="admin" if source == "admin" else "anomaly",
        )
        await write_outbox(conn, Topics.QUOTA_EVENTS, event, key=target_id)
        return repo.FreezeRecord(
            freeze_id, target_type, target_id, reason, expires_at, source, owner_org, user_id, now
        )

    async def _sync_freeze(self, target_type: str, target_id: str, org_id: str | None) -> None:
        """Make Redis hold the target's longest live freeze (or none). Keys and users have global ids; a
        session id is the client's, so a session's freezes are those of its org (`org_id`)."""
        session = target_type == "session"
        async with self.db.acquire() as conn:
            live = await repo.live_freezes(
                conn, self._now(), target=(target_type, target_id), org_id=org_id if session else None
            )
        if session:
            target_id = _session_target(org_id, target_id)
        if not live:
            await self.state.unfreeze(target_type, target_id)
            return
        forever = [f for f in live if f.expires_at is None]
        longest = forever[-1] if forever else max(live, key=lambda f: f.expires_at or datetime.max)
        ttl_ms = (
            None if longest.expires_at is None else int(longest.expires_at.timestamp() * 1000) - self.clock()
        )
        await self.state.freeze(target_type, target_id, longest.reason, ttl_ms)


def _session_target(org_id: str | None, session_id: str) -> str:
    """A session's id in Redis: `<org>/<session>` (`-/<session>` for a freeze that names no org)."""
    return f"{org_id or '-'}/{session_id}"


def _freeze_view(f: repo.FreezeRecord) -> dict[str, Any]:
    return {
        "id": f.id,
        "target_type": f.target_type,
        "target_id": f.target_id,
        "reason": f.reason,
        "source": f.source,
        "user_id": f.user_id,
        "expires_at": f.expires_at.isoformat() if f.expires_at else None,
        "created_at": f.created_at.isoformat(),
    }
