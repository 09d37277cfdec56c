"""Use cases of the quota service. HTTP routes and Kafka handlers call these; SQL lives in the repository,
Redis scripts in `adapters.redis_state`. Redis is changed only after the Postgres transaction committed."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
from prometheus_client import Counter

from leaky_common.auth import Principal
from leaky_common.contracts import AdmitRequest, AdmitResponse, RateLimitState
from leaky_common.errors import Conflict, Forbidden, NotFound, QuotaExceeded, RateLimited, Unauthorized
from leaky_common.events import (
    CreditTokens,
    DebitTokens,
    RequestFreeze,
    TokensCredited,
    TokensDebited,
    Topics,
    UsageRecorded,
)
from leaky_common.outbox import write_outbox
from lt_quota.adapters import repository as repo
from lt_quota.adapters.redis_state import AdmitArgs, PoolState, RedisState
from lt_quota.domain import (
    AdmitDenied,
    generate_api_key,
    hash_api_key,
    key_prefix,
    new_id,
    parse_admit_result,
    retry_after_seconds,
)
from lt_quota.settings import QuotaSettings

__all__ = ["Clock", "QuotaService", "system_clock"]

logger = logging.getLogger(__name__)

ADMISSIONS = Counter("lt_quota_admissions_total", "Admission decisions", ["decision"])

Clock = Callable[[], int]
"""Milliseconds since the epoch."""

APPROVAL_GUIDE = {
    "message": "Your personal token pool cannot cover this request. Ask a manager of your team for more "
    "tokens with POST /v1/approvals, or buy a top-up with POST /v1/purchases.",
    "endpoint": "POST /v1/approvals",
}
_KEY_CACHE_MAX = 10_000


def system_clock() -> int:
    """Wall-clock milliseconds."""
    return int(time.time() * 1000)


@dataclass
class _Cached:
    until: float
    record: repo.KeyRecord | None


class QuotaService:
    """The quota service's use cases over Postgres (truth) and Redis (hot state)."""

    def __init__(self, settings: QuotaSettings, db: asyncpg.Pool, state: RedisState, clock: Clock) -> None:
        self.settings = settings
        self.db = db
        self.state = state
        self.clock = clock
        self._keys: dict[str, _Cached] = {}

    # --- start-up -------------------------------------------------------------------------------------------

    async def bootstrap_admin(self, api_key: str) -> None:
        """Ensure the default org, an admin user holding `api_key` and its personal pool (idempotent)."""
        async with self.db.acquire() as conn, conn.transaction():
            org_id = await repo.upsert_org(conn, new_id(), "default", "UTC")
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
        """Load pools missing from Redis (limit from Postgres, used = ledger sum); returns how many."""
        async with self.db.acquire() as conn:
            rows = await repo.pools_with_usage(conn, pool_ids)
        loaded = 0
        for pool_id, limit, used in rows:
            loaded += await self.state.load_pool(pool_id, limit, used)
        return loaded

    # --- authentication and admission (hot path) ------------------------------------------------------------

    async def _key_record(self, api_key: str) -> repo.KeyRecord:
        key_hash = hash_api_key(api_key)
        now = time.monotonic()
        cached = self._keys.get(key_hash)
        if cached is None or cached.until < now:
            async with self.db.acquire() as conn:
                record = await repo.key_by_hash(conn, key_hash)
            if len(self._keys) >= _KEY_CACHE_MAX:
                self._keys.clear()
            cached = _Cached(now + self.settings.key_cache_ttl_s, record)
            self._keys[key_hash] = cached
        record = cached.record
        if record is None or record.revoked:
            raise Unauthorized("invalid API key", code="invalid_api_key")
        if record.expires_at is not None and record.expires_at.timestamp() * 1000 <= self.clock():
            raise Unauthorized("API key expired", code="invalid_api_key")
        return record

    @staticmethod
    def _principal(record: repo.KeyRecord) -> Principal:
        return Principal(
            user_id=record.user_id,
            org_id=record.org_id,
            key_id=record.key_id,
            team_id=record.team_id,
            role="admin" if record.role == "admin" else "user",
            email=record.email,
        )

    async def authenticate(self, api_key: str) -> Principal:
        """Resolve a key to its principal; 401 if unknown, revoked or expired."""
        return self._principal(await self._key_record(api_key))

    async def admit(self, req: AdmitRequest) -> AdmitResponse:
        """Authenticate, check freezes and buckets, and reserve the request's tokens in one Redis call."""
        try:
            record = await self._key_record(req.api_key)
        except Unauthorized:
            ADMISSIONS.labels("unauthorized").inc()
            raise
        if record.status == "suspended":
            ADMISSIONS.labels("suspended").inc()
            raise Forbidden("this user is suspended", code="user_suspended")
        if record.pool_id is None:
            ADMISSIONS.labels("insufficient_quota").inc()
            raise QuotaExceeded(
                "you have no personal token pool", code="personal_pool_exhausted", approval=APPROVAL_GUIDE
            )
        now = self.clock()
        s = self.settings
        args = AdmitArgs(
            now_ms=now,
            user_id=record.user_id,
            key_id=record.key_id,
            session_id=req.session_id,
            pool_id=record.pool_id,
            reservation_id=new_id(),
            request_id=req.request_id,
            expires_ms=now + s.reservation_ttl_s * 1000,
            prompt_tokens=req.prompt_tokens,
            max_output_tokens=req.max_output_tokens or req.model_max_output_tokens,
            # A client asking for fewer tokens than the minimum gets what it asked for, not a denial.
            min_output_tokens=min(
                req.min_output_tokens, req.max_output_tokens or req.model_max_output_tokens
            ),
            key_requests=s.key_requests_per_period,
            key_tokens=s.key_tokens_per_period,
            user_requests=s.user_requests_per_period,
            user_tokens=s.user_tokens_per_period,
            period_ms=int(s.bucket_period_s * 1000),
        )
        outcome = parse_admit_result(await self.state.admit(args))
        if isinstance(outcome, AdmitDenied) and outcome.reason == "no_pool":
            # Redis lost the pool (flushed): rebuild it from the ledger once, then retry.
            await self.load_pools([record.pool_id])
            outcome = parse_admit_result(await self.state.admit(args))
        if isinstance(outcome, AdmitDenied):
            raise self._denial(outcome)
        ADMISSIONS.labels("admitted").inc()
        return AdmitResponse(
            reservation_id=args.reservation_id,
            principal=self._principal(record),
            pool_id=record.pool_id,
            quota_source="personal",
            reserved_tokens=outcome.reserved,
            granted_output_tokens=outcome.granted_output,
            privacy_strict=req.privacy == "strict",
            ratelimit=RateLimitState(
                limit_requests=outcome.limit_requests,
                remaining_requests=outcome.remaining_requests,
                reset_requests_s=outcome.reset_requests_ms / 1000,
                limit_tokens=outcome.limit_tokens,
                remaining_tokens=outcome.remaining_tokens,
                reset_tokens_s=outcome.reset_tokens_ms / 1000,
            ),
        )

    @staticmethod
    def _denial(outcome: AdmitDenied) -> Exception:
        if outcome.reason == "frozen":
            ADMISSIONS.labels("frozen").inc()
            return Forbidden(f"this {outcome.detail} is frozen", code="frozen", frozen=outcome.detail)
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
        return QuotaExceeded(
            f"personal token pool exhausted: {outcome.remaining} tokens left, not enough for this request",
            code="personal_pool_exhausted",
            approval=APPROVAL_GUIDE,
        )

    # --- settlement -----------------------------------------------------------------------------------------

    async def settle_usage(self, event: UsageRecorded) -> None:
        """Charge a reservation at the actual usage (idempotent on the reservation id)."""
        if not event.reservation_id:
            return
        reservation = await self.state.reservation(event.reservation_id)
        pool_id = reservation["pool"] if reservation else event.pool_id
        idem = f"reservation:{event.reservation_id}"
        async with self.db.acquire() as conn:
            pool = await repo.pool_by_id(conn, pool_id) if pool_id else None
            if pool is None and event.user_id:
                pool = await repo.personal_pool(conn, event.user_id)
            async with conn.transaction():
                await repo.claim_inbox(conn, event.event_id)
                if pool is None:
                    logger.warning(
                        "usage for reservation %s has no known pool; ignored", event.reservation_id
                    )
                    return
                amount = await repo.insert_ledger(
                    conn, pool.id, event.total_tokens, "usage", idem, event.request_id
                )
        # Applied with the amount the ledger holds, so a racing sweeper and a late event agree.
        await self.state.settle(event.reservation_id, pool.id, amount)

    async def sweep_expired(self) -> int:
        """Charge reservations past their TTL at their reserved amount; returns how many were charged."""
        charged = 0
        for reservation_id in await self.state.expired_reservations(self.clock()):
            reservation = await self.state.reservation(reservation_id)
            if reservation is None:
                await self.state.forget_reservation(reservation_id)
                continue
            async with self.db.acquire() as conn, conn.transaction():
                amount = await repo.insert_ledger(
                    conn,
                    reservation["pool"],
                    int(reservation["amount"]),
                    "expiry",
                    f"reservation:{reservation_id}",
                    reservation.get("request"),
                )
            charged += await self.state.settle(reservation_id, reservation["pool"], amount)
        return charged

    # --- commands -------------------------------------------------------------------------------------------

    async def adjust_limit(self, cmd: CreditTokens | DebitTokens) -> None:
        """Raise (credit) or lower (debit) a pool's limit once per (purchase, step); reply via the outbox."""
        kind = "credit" if isinstance(cmd, CreditTokens) else "debit"
        reply_cls = TokensCredited if kind == "credit" else TokensDebited
        changed_pool: str | None = None
        async with self.db.acquire() as conn, conn.transaction():
            await repo.claim_inbox(conn, cmd.event_id)
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
                pool = await (
                    repo.pool_by_id(conn, cmd.pool_id, for_update=True)
                    if cmd.pool_id
                    else repo.personal_pool(conn, cmd.user_id, for_update=True)
                )
                reason: str | None = None
                # A refusal that must stick for this purchase (recorded, unlike a malformed command).
                tombstone = False
                new_limit = 0
                if pool is None:
                    reason = f"unknown pool {cmd.pool_id}" if cmd.pool_id else f"unknown user {cmd.user_id}"
                elif pool.unit != cmd.unit:
                    reason = f"pool unit is {pool.unit}, command unit is {cmd.unit}"
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
        async with self.db.acquire() as conn:
            pool = await repo.pool_by_id(conn, pool_id)
        if pool is not None and not await self.state.set_limit(pool_id, pool.limit):
            await self.load_pools([pool_id])

    async def freeze(self, cmd: RequestFreeze) -> None:
        """Freeze a user, key or session for the command's duration."""
        expires_ms = int(cmd.occurred_at.timestamp() * 1000) + cmd.duration_s * 1000
        async with self.db.acquire() as conn, conn.transaction():
            if not await repo.claim_inbox(conn, cmd.event_id):
                return
            await repo.insert_freeze(
                conn,
                new_id(),
                cmd.target_type,
                cmd.target_id,
                cmd.reason,
                datetime.fromtimestamp(expires_ms / 1000, UTC),
            )
        ttl_ms = expires_ms - self.clock()
        if ttl_ms > 0:
            await self.state.freeze(cmd.target_type, cmd.target_id, cmd.reason, ttl_ms)

    # --- management -----------------------------------------------------------------------------------------

    async def create_user(
        self,
        admin: Principal,
        *,
        email: str,
        name: str,
        personal_quota: int | None,
        team_id: str | None,
        role: str,
    ) -> dict[str, Any]:
        """Create a user with a personal pool and a first API key (returned once)."""
        limit = self.settings.default_personal_quota if personal_quota is None else personal_quota
        user_id = new_id()
        api_key = generate_api_key()
        async with self.db.acquire() as conn, conn.transaction():
            if team_id is not None and not await repo.team_exists(conn, team_id, admin.org_id):
                raise NotFound(f"team {team_id} not found", code="team_not_found", param="team_id")
            if not await repo.insert_user(conn, user_id, admin.org_id, email, name, role):
                raise Conflict(f"a user with email {email} exists", code="email_taken", param="email")
            pool_id = await repo.ensure_pool(conn, new_id(), "user", user_id, admin.org_id, "tokens", limit)
            await repo.insert_key(
                conn, new_id(), user_id, admin.org_id, key_prefix(api_key), hash_api_key(api_key), "default"
            )
            if team_id is not None:
                await repo.upsert_member(conn, team_id, user_id, "member")
        await self.state.load_pool(pool_id, limit, 0)
        return {
            "id": user_id,
            "email": email,
            "name": name,
            "org_id": admin.org_id,
            "team_id": team_id,
            "role": role,
            "api_key": api_key,
            "key_prefix": key_prefix(api_key),
            "pool_id": pool_id,
        }

    async def create_team(self, admin: Principal, *, name: str, pool: int | None) -> dict[str, Any]:
        """Create a team, with a tokens pool if `pool` is given."""
        team_id = new_id()
        pool_id: str | None = None
        async with self.db.acquire() as conn, conn.transaction():
            if not await repo.insert_team(conn, team_id, admin.org_id, name):
                raise Conflict(f"a team named {name} exists", code="team_exists", param="name")
            if pool is not None:
                pool_id = await repo.ensure_pool(
                    conn, new_id(), "team", team_id, admin.org_id, "tokens", pool
                )
        if pool_id is not None and pool is not None:
            await self.state.load_pool(pool_id, pool, 0)
        return {"id": team_id, "name": name, "org_id": admin.org_id, "pool_id": pool_id}

    async def add_member(
        self, admin: Principal, team_id: str, user_id: str, role: str
    ) -> tuple[dict[str, Any], bool]:
        """Add a user to a team (or change their role); returns (membership, created)."""
        async with self.db.acquire() as conn, conn.transaction():
            if not await repo.team_exists(conn, team_id, admin.org_id):
                raise NotFound(f"team {team_id} not found", code="team_not_found")
            if await repo.get_user(conn, user_id, admin.org_id) is None:
                raise NotFound(f"user {user_id} not found", code="user_not_found")
            created = await repo.upsert_member(conn, team_id, user_id, role)
        self._keys.clear()  # principals carry the team id
        return {"team_id": team_id, "user_id": user_id, "role": role}, created

    async def list_users(self, admin: Principal) -> list[repo.UserRecord]:
        """Users of the admin's org."""
        async with self.db.acquire() as conn:
            return await repo.list_users(conn, admin.org_id)

    async def me(self, principal: Principal) -> repo.UserRecord:
        """The caller's own user."""
        async with self.db.acquire() as conn:
            user = await repo.get_user(conn, principal.user_id, principal.org_id)
        if user is None:
            raise NotFound("user not found", code="user_not_found")
        return user

    async def my_quota(self, principal: Principal) -> dict[str, Any]:
        """The caller's pools with live used/reserved from Redis, plus TokenPool's flat fields."""
        user = await self.me(principal)
        async with self.db.acquire() as conn:
            pools = await repo.user_pools(conn, user.id)
        ids = [p.id for p in pools]
        states = await self.state.pool_states(ids)
        if any(s is None for s in states.values()):
            await self.load_pools([i for i, s in states.items() if s is None])
            states = await self.state.pool_states(ids)
        out = []
        for pool in pools:
            st = states.get(pool.id) or PoolState(pool.limit, 0, 0)
            out.append(
                {
                    "id": pool.id,
                    "owner_type": pool.owner_type,
                    "owner_id": pool.owner_id,
                    "unit": pool.unit,
                    "limit": st.limit,
                    "used": st.used,
                    "reserved": st.reserved,
                    "remaining": max(st.limit - st.used - st.reserved, 0),
                    "resets_at": None,
                }
            )
        personal = next((p for p in out if p["unit"] == "tokens"), None)
        return {
            "pools": out,
            "personal_quota": personal["limit"] if personal else 0,
            "used_tokens": personal["used"] if personal else 0,
            "reserved_tokens": personal["reserved"] if personal else 0,
            "available_quota": personal["remaining"] if personal else 0,
            "team_pool_available": 0,
            "vacation_share_available": 0,
            "status": user.status,
        }

    async def create_key(self, principal: Principal, name: str) -> dict[str, Any]:
        """A new API key for the caller (returned once)."""
        api_key = generate_api_key()
        key_id = new_id()
        async with self.db.acquire() as conn:
            await repo.insert_key(
                conn,
                key_id,
                principal.user_id,
                principal.org_id,
                key_prefix(api_key),
                hash_api_key(api_key),
                name,
            )
        self._keys.pop(hash_api_key(api_key), None)
        return {"id": key_id, "name": name, "api_key": api_key, "key_prefix": key_prefix(api_key)}

    async def list_keys(self, principal: Principal) -> list[dict[str, Any]]:
        """The caller's keys, without secrets."""
        async with self.db.acquire() as conn:
            rows = await repo.list_keys(conn, principal.user_id)
        return [
            {
                "id": r["id"],
                "name": r["name"],
                "key_prefix": r["prefix"],
                "created_at": r["created_at"].isoformat(),
                "revoked_at": r["revoked_at"].isoformat() if r["revoked_at"] else None,
                "expires_at": r["expires_at"].isoformat() if r["expires_at"] else None,
            }
            for r in rows
        ]

    async def revoke_key(self, principal: Principal, key_id: str) -> dict[str, Any]:
        """Revoke one of the caller's keys; takes effect at once in this process."""
        async with self.db.acquire() as conn:
            key_hash = await repo.revoke_key(conn, key_id, principal.user_id)
        if key_hash is None:
            raise NotFound(f"key {key_id} not found", code="key_not_found")
        self._keys.pop(key_hash, None)
        return {"id": key_id, "revoked": True}
