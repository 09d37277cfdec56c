"""Management use cases: users, teams, keys, pools, org settings, quota views, vacation, approvals, session
budgets and Leaky Tokens' `/api/v1/tokens/*` aliases. Admin routes act within the admin's org; a user sees
only their own data and a manager their teams'. Changes that affect admission invalidate the hot path's
caches; announced changes go through the outbox in the same transaction."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from leaky_common.auth import Principal
from leaky_common.contracts import AdmitRequest
from leaky_common.errors import Conflict, Forbidden, InvalidRequest, NotFound
from leaky_common.events import ApprovalDecided, ApprovalRequested, Topics, UsageRecorded, VacationChanged
from leaky_common.outbox import write_outbox
from lt_quota.adapters import repository as repo
from lt_quota.adapters.redis_state import PoolState
from lt_quota.domain import generate_api_key, hash_api_key, key_prefix, new_id, period_of
from lt_quota.service import QuotaService

__all__ = ["Governance"]


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _approval_view(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": row["id"],
        "team_id": row["team_id"],
        "requester_user_id": row["requester_user_id"],
        "pool_id": row["pool_id"],
        "requested_credits": row["amount"],
        "unit": row["unit"],
        "reason": row["reason"],
        "priority": row["priority"],
        "status": row["status"],
        "approved_credits": row["approved_amount"],
        "decided_by": row["decided_by"],
        "decision_reason": row["decision_reason"],
        "decided_at": _iso(row["decided_at"]),
        "created_at": _iso(row["created_at"]),
    }


def _key_view(r: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": r["id"],
        "name": r["name"],
        "key_prefix": r["prefix"],
        "created_at": _iso(r["created_at"]),
        "revoked_at": _iso(r["revoked_at"]),
        "expires_at": _iso(r["expires_at"]),
        "allowed_models": r["allowed_models"],
        "allowed_priorities": r["allowed_priorities"],
        "rate_limit_requests_per_period": r["rate_limit_requests_per_period"],
        "rate_limit_tokens_per_period": r["rate_limit_tokens_per_period"],
    }


class Governance:
    """Management over the same Postgres and Redis as the hot path (`QuotaService`)."""

    def __init__(self, core: QuotaService) -> None:
        self.core = core
        self.db = core.db
        self.state = core.state
        self.settings = core.settings

    # --- views ----------------------------------------------------------------------------------------------

    async def pool_views(self, pools: list[repo.PoolRecord], timezone: str) -> list[dict[str, Any]]:
        """Pools with their live limit/used/reserved/remaining for the current period and `resets_at`."""
        now = self.core.clock()
        periods = [period_of(p.period, now, timezone) for p in pools]
        keys = [self.state.pool_key(p.id, per.key) for p, per in zip(pools, periods, strict=True)]
        states = await self.state.counter_states(keys)
        for pool, per, key in zip(pools, periods, keys, strict=True):
            if states[key] is None:
                await self.core.load_counter(key, pool.id, per.key, False)
        if any(s is None for s in states.values()):
            states = await self.state.counter_states(keys)
        out = []
        for pool, per, key in zip(pools, periods, keys, strict=True):
            st = states[key] or PoolState(pool.limit, 0, 0)
            out.append(
                {
                    "id": pool.id,
                    "owner_type": pool.owner_type,
                    "owner_id": pool.owner_id,
                    "unit": pool.unit,
                    "period": pool.period,
                    "provider": pool.provider or None,
                    "model": pool.model or None,
                    "limit": st.limit,
                    "used": st.used,
                    "reserved": st.reserved,
                    "remaining": max(st.limit - st.used - st.reserved, 0),
                    "resets_at": _iso(per.end),
                }
            )
        return out

    async def _org(self, conn: asyncpg.Connection, org_id: str) -> repo.OrgSettings:
        org = await repo.org_settings(conn, org_id)
        if org is None:
            raise NotFound("organisation not found", code="org_not_found")
        return org

    # --- users and teams ------------------------------------------------------------------------------------

    async def create_user(
        self,
        admin: Principal,
        *,
        email: str,
        name: str,
        personal_quota: int | None,
        unit: str,
        period: str,
        team_id: str | None,
        role: str,
    ) -> dict[str, Any]:
        """Create a user with a personal pool and a first API key (returned once)."""
        async with self.db.acquire() as conn, conn.transaction():
            if team_id is not None and not await repo.team_exists(conn, team_id, admin.org_id):
                raise NotFound(f"team {team_id} not found", code="team_not_found", param="team_id")
            user = await self._insert_user(
                conn, admin.org_id, email, name, role, personal_quota, unit=unit, period=period
            )
            if team_id is not None:
                await repo.upsert_member(conn, team_id, user["id"], "member")
        await self.core.load_pools([user["pool_id"]])
        self.core.invalidate()
        return {**user, "team_id": team_id}

    async def _insert_user(
        self,
        conn: asyncpg.Connection,
        org_id: str,
        email: str,
        name: str,
        role: str,
        personal_quota: int | None,
        *,
        unit: str = "tokens",
        period: str = "none",
    ) -> dict[str, Any]:
        """A user with a personal pool and a first key, in the caller's transaction (the key shown once)."""
        limit = self.settings.default_personal_quota if personal_quota is None else personal_quota
        user_id = new_id()
        api_key = generate_api_key()
        if not await repo.insert_user(conn, user_id, org_id, email, name, role):
            raise Conflict(f"a user with email {email} exists", code="email_taken", param="email")
        pool_id = await repo.ensure_pool(conn, new_id(), "user", user_id, org_id, unit, limit, period=period)
        await repo.insert_key(
            conn, new_id(), user_id, org_id, key_prefix(api_key), hash_api_key(api_key), "default"
        )
        return {
            "id": user_id,
            "email": email,
            "name": name,
            "org_id": org_id,
            "role": role,
            "api_key": api_key,
            "key_prefix": key_prefix(api_key),
            "pool_id": pool_id,
        }

    async def update_user(self, admin: Principal, user_id: str, fields: dict[str, Any]) -> repo.UserRecord:
        """Change a user's status, role, default priority, bypass right, privacy default or tier."""
        async with self.db.acquire() as conn, conn.transaction():
            before = await repo.get_user(conn, user_id, admin.org_id)
            if before is None or not await repo.update_user(conn, user_id, admin.org_id, fields):
                raise NotFound(f"user {user_id} not found", code="user_not_found")
            after = await repo.get_user(conn, user_id, admin.org_id)
            assert after is not None
            await self._announce_vacation(conn, before, after)
        self.core.invalidate()
        return after

    async def _announce_vacation(
        self, conn: asyncpg.Connection, before: repo.UserRecord, after: repo.UserRecord
    ) -> None:
        was, now = before.status == "on_vacation", after.status == "on_vacation"
        if was != now:
            event = VacationChanged(
                producer="quota",
                user_id=after.id,
                org_id=after.org_id,
                team_id=after.team_id,
                on_vacation=now,
            )
            await write_outbox(conn, Topics.QUOTA_EVENTS, event, key=after.id)

    async def set_my_status(self, principal: Principal, status: str) -> repo.UserRecord:
        """A user goes on vacation or comes back (a suspended user cannot lift their own suspension)."""
        async with self.db.acquire() as conn, conn.transaction():
            before = await repo.get_user(conn, principal.user_id, principal.org_id)
            if before is None:
                raise NotFound("user not found", code="user_not_found")
            if before.status == "suspended":
                raise Forbidden("this user is suspended", code="user_suspended")
            await repo.update_user(conn, before.id, before.org_id, {"status": status})
            after = await repo.get_user(conn, before.id, before.org_id)
            assert after is not None
            await self._announce_vacation(conn, before, after)
        self.core.invalidate()
        return after

    async def set_my_privacy(self, principal: Principal, privacy: str) -> dict[str, Any]:
        """Set the caller's privacy default (standard or strict)."""
        async with self.db.acquire() as conn:
            await repo.update_user(conn, principal.user_id, principal.org_id, {"privacy_default": privacy})
        self.core.invalidate()
        return {"user_id": principal.user_id, "privacy_default": privacy}

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
        if pool_id is not None:
            await self.core.load_pools([pool_id])
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
        self.core.invalidate()  # principals carry the team id
        return {"team_id": team_id, "user_id": user_id, "role": role}, created

    async def list_users(self, admin: Principal) -> list[repo.UserRecord]:
        """Users of the admin's org."""
        async with self.db.acquire() as conn:
            return await repo.list_users(conn, admin.org_id)

    async def list_teams(self, admin: Principal) -> list[dict[str, Any]]:
        """Teams of the admin's org with their member counts."""
        async with self.db.acquire() as conn:
            rows = await repo.list_teams(conn, admin.org_id)
        return [
            {
                "id": r["id"],
                "name": r["name"],
                "member_count": r["member_count"],
                "created_at": _iso(r["created_at"]),
            }
            for r in rows
        ]

    async def my_teams(self, principal: Principal) -> list[dict[str, Any]]:
        """The caller's teams; for teams they manage, the team's pools and each member with their personal
        token pool."""
        async with self.db.acquire() as conn:
            teams = await repo.user_teams(conn, principal.user_id)
            org = await self._org(conn, principal.org_id)
            out = []
            for t in teams:
                view: dict[str, Any] = {
                    "id": t["id"],
                    "name": t["name"],
                    "role": t["role"],
                    "member_count": t["member_count"],
                }
                if t["role"] == "manager":
                    members = [dict(m) for m in await repo.team_members(conn, t["id"])]
                    for m in members:
                        m["personal_pool"] = await repo.personal_pool(conn, m["id"])
                    view["members"] = members
                    pools = [
                        p
                        for p in await repo.list_pools(conn, principal.org_id, "team")
                        if p.owner_id == t["id"]
                    ]
                    view["pools"] = pools
                out.append(view)
        for view in out:
            if "pools" in view:
                view["pools"] = await self.pool_views(view["pools"], org.timezone)
                for m in view["members"]:
                    pool = m.pop("personal_pool")
                    m["personal_pool"] = (await self.pool_views([pool], org.timezone))[0] if pool else None
        return out

    async def me(self, principal: Principal) -> repo.UserRecord:
        """The caller's own user."""
        async with self.db.acquire() as conn:
            user = await repo.get_user(conn, principal.user_id, principal.org_id)
        if user is None:
            raise NotFound("user not found", code="user_not_found")
        return user

    async def my_quota(self, principal: Principal) -> dict[str, Any]:
        """Every pool that applies to the caller (personal, team, org, the key's own caps), live, plus
        TokenPool's flat fields."""
        user = await self.me(principal)
        async with self.db.acquire() as conn:
            pools = await repo.governing_pools(
                conn, user.org_id, user.id, user.team_id, principal.key_id or ""
            )
            org = await self._org(conn, user.org_id)
            vacation = user.team_id is not None and await repo.teammate_on_vacation(
                conn, user.team_id, user.id
            )
        views = await self.pool_views(pools, org.timezone)
        personal = next(
            (v for v in views if v["owner_type"] == "user" and v["unit"] == "tokens" and not v["model"]), None
        )
        team_available = sum(
            v["remaining"] for v in views if v["owner_type"] == "team" and v["unit"] == "tokens"
        )
        share = 0
        if vacation and org.allow_vacation_sharing:
            for v in views:
                if v["owner_type"] == "team" and v["unit"] == "tokens":
                    per = period_of(v["period"], self.core.clock(), org.timezone)
                    key = self.state.vacation_key(v["id"], per.key or "-")
                    st = (await self.state.counter_states([key]))[key]
                    if st is None and await self.core.load_counter(key, v["id"], per.key, True):
                        st = (await self.state.counter_states([key]))[key]
                    borrowed = (st.used + st.reserved) if st else 0
                    allowance = v["limit"] * org.vacation_share_percent // 100 - borrowed
                    share += max(0, min(allowance, v["remaining"]))
        return {
            "pools": views,
            "personal_quota": personal["limit"] if personal else 0,
            "used_tokens": personal["used"] if personal else 0,
            "reserved_tokens": personal["reserved"] if personal else 0,
            "available_quota": personal["remaining"] if personal else 0,
            "team_pool_available": team_available,
            "vacation_share_available": share,
            "status": user.status,
        }

    # --- orgs (platform admins) -----------------------------------------------------------------------------

    async def _require_platform_admin(self, conn: asyncpg.Connection, admin: Principal) -> None:
        if not await repo.is_platform_org(conn, admin.org_id):
            raise Forbidden(
                "only admins of the platform organisation manage organisations",
                code="platform_admin_required",
            )

    async def create_org(
        self,
        admin: Principal,
        *,
        name: str,
        timezone: str,
        admin_email: str,
        admin_name: str,
        personal_quota: int | None,
    ) -> dict[str, Any]:
        """A new organisation with its first admin user and key (the key is returned once)."""
        org_id = new_id()
        async with self.db.acquire() as conn, conn.transaction():
            await self._require_platform_admin(conn, admin)
            if not await repo.insert_org(conn, org_id, name, timezone):
                raise Conflict(f"an organisation named {name} exists", code="org_exists", param="name")
            first = await self._insert_user(conn, org_id, admin_email, admin_name, "admin", personal_quota)
        await self.core.load_pools([first["pool_id"]])
        return {**await self.get_org(Principal(user_id=first["id"], org_id=org_id)), "admin": first}

    async def list_orgs(self, admin: Principal) -> list[dict[str, Any]]:
        """Every organisation (platform admins only)."""
        async with self.db.acquire() as conn:
            await self._require_platform_admin(conn, admin)
            rows = await repo.list_orgs(conn)
        return [
            {
                "id": r["id"],
                "name": r["name"],
                "timezone": r["timezone"],
                "platform": r["platform"],
                "user_count": r["user_count"],
                "created_at": _iso(r["created_at"]),
            }
            for r in rows
        ]

    # --- org and pools --------------------------------------------------------------------------------------

    async def get_org(self, admin: Principal) -> dict[str, Any]:
        async with self.db.acquire() as conn:
            org = await self._org(conn, admin.org_id)
        return {
            "id": org.id,
            "name": org.name,
            "timezone": org.timezone,
            "vacation_share_percent": org.vacation_share_percent,
            "allow_vacation_sharing": org.allow_vacation_sharing,
            "default_session_budget_usd_micros": org.default_session_budget_usd_micros,
            "strict_sessions": org.strict_sessions,
            "privacy_strict": org.privacy_strict,
            "key_requests_per_period": org.key_requests_per_period,
            "key_tokens_per_period": org.key_tokens_per_period,
            "user_requests_per_period": org.user_requests_per_period,
            "user_tokens_per_period": org.user_tokens_per_period,
            "bucket_period_s": self.settings.bucket_period_s,
        }

    async def update_org(self, admin: Principal, fields: dict[str, Any]) -> dict[str, Any]:
        async with self.db.acquire() as conn:
            await repo.update_org(conn, admin.org_id, fields)
        self.core.invalidate()
        return await self.get_org(admin)

    async def create_pool(self, admin: Principal, fields: dict[str, Any]) -> dict[str, Any]:
        """A pool for a user, team, key or the org (org pools are owned by the admin's org)."""
        owner_type = fields["owner_type"]
        owner_id = admin.org_id if owner_type == "org" else fields.get("owner_id")
        if not owner_id:
            raise InvalidRequest("owner_id is required", param="owner_id")
        pool = repo.PoolRecord(
            id=new_id(),
            owner_type=owner_type,
            owner_id=owner_id,
            org_id=admin.org_id,
            unit=fields["unit"],
            limit=fields["limit"],
            period=fields["period"],
            provider=fields.get("provider") or "",
            model=fields.get("model") or "",
        )
        async with self.db.acquire() as conn, conn.transaction():
            if not await repo.owner_exists(conn, owner_type, owner_id, admin.org_id):
                raise NotFound(
                    f"{owner_type} {owner_id} not found", code=f"{owner_type}_not_found", param="owner_id"
                )
            if not await repo.insert_pool(conn, pool):
                raise Conflict("this owner already has a pool of that unit and scope", code="pool_exists")
            org = await self._org(conn, admin.org_id)
        self.core.invalidate()
        return (await self.pool_views([pool], org.timezone))[0]

    async def list_pools(self, admin: Principal, owner_type: str | None) -> list[dict[str, Any]]:
        async with self.db.acquire() as conn:
            pools = [
                p for p in await repo.list_pools(conn, admin.org_id, owner_type) if p.owner_type != "session"
            ]
            org = await self._org(conn, admin.org_id)
        return await self.pool_views(pools, org.timezone)

    async def _admin_pool(self, conn: asyncpg.Connection, admin: Principal, pool_id: str) -> repo.PoolRecord:
        pool = await repo.pool_by_id(conn, pool_id)
        if pool is None or pool.org_id != admin.org_id:
            raise NotFound(f"pool {pool_id} not found", code="pool_not_found")
        return pool

    async def get_pool(self, admin: Principal, pool_id: str) -> dict[str, Any]:
        async with self.db.acquire() as conn:
            pool = await self._admin_pool(conn, admin, pool_id)
            org = await self._org(conn, admin.org_id)
        return (await self.pool_views([pool], org.timezone))[0]

    async def update_pool(
        self, admin: Principal, pool_id: str, limit: int | None, period: str | None
    ) -> dict[str, Any]:
        """Change a pool's limit or period; the hot copy follows at once."""
        async with self.db.acquire() as conn, conn.transaction():
            await self._admin_pool(conn, admin, pool_id)
            await repo.lock_pools(conn, [pool_id])
            await repo.update_pool(conn, pool_id, limit, period)
        await self.core._sync_limit(pool_id)
        return await self.get_pool(admin, pool_id)

    async def delete_pool(self, admin: Principal, pool_id: str) -> dict[str, Any]:
        """Delete a pool that was never charged (the ledger is append-only: a charged pool stays)."""
        async with self.db.acquire() as conn, conn.transaction():
            await self._admin_pool(conn, admin, pool_id)
            if not await repo.delete_pool(conn, pool_id):
                raise Conflict("this pool has ledger entries; set its limit instead", code="pool_in_use")
        self.core.invalidate()
        return {"id": pool_id, "deleted": True}

    # --- keys -----------------------------------------------------------------------------------------------

    async def create_key(self, principal: Principal, fields: dict[str, Any]) -> dict[str, Any]:
        """A new API key for the caller (the secret is returned once), with optional expiry, allowed models
        and priorities and own caps (token and/or usd pools owned by the key)."""
        api_key = generate_api_key()
        key_id = new_id()
        expires_at = None
        if fields.get("expires_in_days"):
            expires_at = datetime.fromtimestamp(self.core.clock() / 1000, UTC) + timedelta(
                days=fields["expires_in_days"]
            )
        async with self.db.acquire() as conn, conn.transaction():
            await self._within_org_key_size(conn, principal, fields, admin=principal.is_admin)
            await repo.insert_key(
                conn,
                key_id,
                principal.user_id,
                principal.org_id,
                key_prefix(api_key),
                hash_api_key(api_key),
                fields.get("name", ""),
                expires_at=expires_at,
                allowed_models=fields.get("allowed_models"),
                allowed_priorities=fields.get("allowed_priorities"),
                rate_limit_requests=fields.get("rate_limit_requests_per_period"),
                rate_limit_tokens=fields.get("rate_limit_tokens_per_period"),
            )
            for unit, field in (("tokens", "max_tokens"), ("usd", "max_usd_micros")):
                if fields.get(field) is not None:
                    await repo.ensure_pool(
                        conn,
                        new_id(),
                        "key",
                        key_id,
                        principal.org_id,
                        unit,
                        fields[field],
                        period=fields.get("cap_period", "none"),
                    )
            row = await repo.get_key(conn, key_id, principal.user_id)
        assert row is not None
        return {**_key_view(row), "api_key": api_key}

    async def update_key(
        self, principal: Principal, key_id: str, fields: dict[str, int | None], *, admin: bool
    ) -> dict[str, Any]:
        """Set or clear a key's own bucket sizes (an owner who is not an admin stays within the org's key
        size); the next admission in this process uses them."""
        async with self.db.acquire() as conn, conn.transaction():
            await self._within_org_key_size(conn, principal, fields, admin=admin)
            if not await repo.update_key_rate_limits(conn, key_id, principal.user_id, fields):
                raise NotFound(f"key {key_id} not found", code="key_not_found")
            row = await repo.get_key(conn, key_id, principal.user_id)
        assert row is not None
        self.core.invalidate()
        return _key_view(row)

    async def _within_org_key_size(
        self, conn: asyncpg.Connection, principal: Principal, fields: dict[str, Any], *, admin: bool
    ) -> None:
        """400 if a key owner asks for bigger buckets than a key of theirs gets from the org (admins may)."""
        if admin:
            return
        user = await repo.get_user(conn, principal.user_id, principal.org_id)
        if user is None:
            raise NotFound(f"user {principal.user_id} not found", code="user_not_found")
        sizes = self.core.default_bucket_sizes(await self._org(conn, principal.org_id), user.tier, user.role)
        for field, most in (
            ("rate_limit_requests_per_period", sizes.key_requests),
            ("rate_limit_tokens_per_period", sizes.key_tokens),
        ):
            value = fields.get(field)
            if value is not None and value > most:
                raise InvalidRequest(
                    f"{field} may be at most {most}, this organisation's size for your keys; an admin can "
                    "set a larger one",
                    code="rate_limit_above_org_limit",
                    param=field,
                )

    async def list_keys(self, principal: Principal) -> list[dict[str, Any]]:
        """The caller's keys, without secrets."""
        async with self.db.acquire() as conn:
            rows = await repo.list_keys(conn, principal.user_id)
        return [_key_view(r) for r in rows]

    async def user_principal(self, admin: Principal, user_id: str) -> Principal:
        """A principal for a user of the admin's org, so an admin can act on that user's keys and quota."""
        async with self.db.acquire() as conn:
            user = await repo.get_user(conn, user_id, admin.org_id)
        if user is None:
            raise NotFound(f"user {user_id} not found", code="user_not_found")
        return Principal(user_id=user.id, org_id=user.org_id, team_id=user.team_id, email=user.email)

    async def revoke_key(self, principal: Principal, key_id: str) -> dict[str, Any]:
        """Revoke one of the caller's keys; takes effect at once in this process."""
        async with self.db.acquire() as conn:
            key_hash = await repo.revoke_key(conn, key_id, principal.user_id)
        if key_hash is None:
            raise NotFound(f"key {key_id} not found", code="key_not_found")
        self.core.invalidate()
        return {"id": key_id, "revoked": True}

    async def rotate_key(self, principal: Principal, key_id: str) -> dict[str, Any]:
        """Replace a key by a new secret with the same name, expiry, allowed models, priorities and bucket
        sizes; its own caps (and what they have used) move to the new key; the old key stops at once."""
        api_key = generate_api_key()
        new_key_id = new_id()
        async with self.db.acquire() as conn, conn.transaction():
            old = await repo.get_key(conn, key_id, principal.user_id)
            if old is None or old["revoked_at"] is not None:
                raise NotFound(f"key {key_id} not found", code="key_not_found")
            await repo.insert_key(
                conn,
                new_key_id,
                principal.user_id,
                principal.org_id,
                key_prefix(api_key),
                hash_api_key(api_key),
                old["name"],
                expires_at=old["expires_at"],
                allowed_models=old["allowed_models"],
                allowed_priorities=old["allowed_priorities"],
                rate_limit_requests=old["rate_limit_requests_per_period"],
                rate_limit_tokens=old["rate_limit_tokens_per_period"],
            )
            await repo.move_key_pools(conn, key_id, new_key_id)
            await repo.revoke_key(conn, key_id, principal.user_id)
            row = await repo.get_key(conn, new_key_id, principal.user_id)
        assert row is not None
        self.core.invalidate()
        return {**_key_view(row), "api_key": api_key, "rotated_from": key_id}

    # --- approvals ------------------------------------------------------------------------------------------

    async def request_approval(
        self, principal: Principal, amount: int, reason: str, priority: str
    ) -> dict[str, Any]:
        """Ask the managers of the caller's team for `amount` more tokens on the personal pool."""
        async with self.db.acquire() as conn, conn.transaction():
            user = await repo.get_user(conn, principal.user_id, principal.org_id)
            if user is None:
                raise NotFound("user not found", code="user_not_found")
            if user.team_id is None:
                raise InvalidRequest(
                    "you are in no team, so no manager can approve a request", code="no_team"
                )
            pool = await repo.personal_pool(conn, user.id)
            if pool is None:
                raise NotFound("you have no personal token pool", code="pool_not_found")
            row = await repo.insert_approval(conn, new_id(), user, pool.id, amount, reason, priority)
            event = ApprovalRequested(
                producer="quota",
                approval_id=row["id"],
                requester_user_id=user.id,
                org_id=user.org_id,
                team_id=user.team_id,
                pool_id=pool.id,
                amount=amount,
                reason=reason,
            )
            await write_outbox(conn, Topics.QUOTA_EVENTS, event, key=row["id"])
        return _approval_view(row)

    async def my_approvals(self, principal: Principal) -> list[dict[str, Any]]:
        async with self.db.acquire() as conn:
            return [_approval_view(r) for r in await repo.my_approvals(conn, principal.user_id)]

    async def pending_approvals(self, principal: Principal) -> list[dict[str, Any]]:
        """Pending requests of the teams the caller manages (an admin: the whole org), never their own."""
        async with self.db.acquire() as conn:
            rows = await repo.pending_approvals(
                conn, principal.org_id, None if principal.is_admin else principal.user_id
            )
        return [_approval_view(r) for r in rows if r["requester_user_id"] != principal.user_id]

    async def decide_approval(
        self, principal: Principal, approval_id: str, *, approve: bool, amount: int | None, reason: str | None
    ) -> dict[str, Any]:
        """A manager of the requester's team (or an admin), never the requester, approves (raising the
        requester's personal pool) or rejects a pending request."""
        changed_pool: str | None = None
        async with self.db.acquire() as conn, conn.transaction():
            row = await repo.get_approval(conn, approval_id, principal.org_id, for_update=True)
            if row is None:
                raise NotFound(f"approval {approval_id} not found", code="approval_not_found")
            if row["requester_user_id"] == principal.user_id:
                raise Forbidden("you cannot decide your own request", code="self_approval")
            if not principal.is_admin and not await repo.is_manager(conn, row["team_id"], principal.user_id):
                raise Forbidden("only a manager of the requester's team can decide", code="not_team_manager")
            if row["status"] != "pending":
                raise Conflict(f"this request is already {row['status']}", code="approval_decided")
            granted = (amount if amount is not None else row["amount"]) if approve else None
            if approve:
                assert granted is not None
                pool = await repo.pool_by_id(conn, row["pool_id"], for_update=True)
                assert pool is not None
                await repo.set_pool_limit(conn, pool.id, pool.limit + granted)
                changed_pool = pool.id
            decided = await repo.decide_approval(
                conn, approval_id, "approved" if approve else "rejected", granted, principal.user_id, reason
            )
            event = ApprovalDecided(
                producer="quota",
                approval_id=approval_id,
                requester_user_id=row["requester_user_id"],
                approver_user_id=principal.user_id,
                org_id=row["org_id"],
                team_id=row["team_id"],
                pool_id=row["pool_id"],
                decision="approved" if approve else "rejected",
                amount=granted or 0,
                reason=reason or "",
            )
            await write_outbox(conn, Topics.QUOTA_EVENTS, event, key=approval_id)
        if changed_pool is not None:
            await self.core._sync_limit(changed_pool)
        return _approval_view(decided)

    # --- session budgets ------------------------------------------------------------------------------------

    async def _session_view(self, pool: repo.PoolRecord, session_id: str) -> dict[str, Any]:
        view = (await self.pool_views([pool], "UTC"))[0]
        return {
            "session_id": session_id,
            "pool_id": pool.id,
            "budget_usd_micros": view["limit"],
            "spent_usd_micros": view["used"],
            "reserved_usd_micros": view["reserved"],
            "remaining_usd_micros": view["remaining"],
        }

    async def get_session(self, admin: Principal, session_id: str) -> dict[str, Any]:
        """A session's budget; a session never seen shows the org's default budget, untouched."""
        async with self.db.acquire() as conn:
            org = await self._org(conn, admin.org_id)
            pool = await repo.session_pool(conn, org.id, session_id)
        if pool is None:
            budget = org.default_session_budget_usd_micros
            return {
                "session_id": session_id,
                "pool_id": None,
                "budget_usd_micros": budget,
                "spent_usd_micros": 0,
                "reserved_usd_micros": 0,
                "remaining_usd_micros": budget,
            }
        return await self._session_view(pool, session_id)

    async def list_sessions(self, admin: Principal) -> list[dict[str, Any]]:
        async with self.db.acquire() as conn:
            pools = await repo.session_pools(conn, admin.org_id)
        prefix = f"{admin.org_id}/"
        return [await self._session_view(p, p.owner_id.removeprefix(prefix)) for p in pools]

    async def set_session_budget(self, admin: Principal, session_id: str, budget: int) -> dict[str, Any]:
        async with self.db.acquire() as conn:
            org = await self._org(conn, admin.org_id)
        pool = await self.core.session_pool(org, session_id)
        async with self.db.acquire() as conn, conn.transaction():
            await repo.lock_pools(conn, [pool.id])
            await repo.set_pool_limit(conn, pool.id, budget)
        self.core.forget_session(admin.org_id, session_id)
        await self.core._sync_limit(pool.id)
        return await self.get_session(admin, session_id)

    async def reset_session(self, admin: Principal, session_id: str) -> dict[str, Any]:
        """Clear what a session spent (a negative 'reset' ledger row) and revert its budget to the default."""
        async with self.db.acquire() as conn:
            org = await self._org(conn, admin.org_id)
        pool = await self.core.session_pool(org, session_id)
        async with self.db.acquire() as conn, conn.transaction():
            await repo.lock_pools(conn, [pool.id])
            spent = await repo.ledger_sum(conn, pool.id, "")
            if spent:
                await repo.insert_ledger(conn, pool.id, -spent, "reset", f"reset:{new_id()}", None)
            await repo.set_pool_limit(conn, pool.id, org.default_session_budget_usd_micros)
            await self.state.resync_used(self.state.pool_key(pool.id), 0)
        self.core.forget_session(admin.org_id, session_id)
        await self.core._sync_limit(pool.id)
        return await self.get_session(admin, session_id)

    # --- Leaky Tokens aliases -------------------------------------------------------------------------------

    async def tokens_status(self, principal: Principal) -> dict[str, Any]:
        """`GET /api/v1/tokens/status`: the caller's flat quota summary."""
        quota = await self.my_quota(principal)
        return {k: v for k, v in quota.items() if k != "pools"} | {"user_id": principal.user_id}

    async def tokens_quota(self, principal: Principal, provider: str | None) -> dict[str, Any]:
        """`GET /api/v1/tokens/quota`: the caller's own pools (404 'quota not found' when there is none)."""
        quota = await self.my_quota(principal)
        pools = [
            p
            for p in quota["pools"]
            if p["owner_type"] == "user" and (provider is None or p["provider"] in (None, provider))
        ]
        if not pools:
            raise NotFound("quota not found", code="quota_not_found")
        return {"user_id": principal.user_id, "pools": pools}

    async def tokens_org_quota(self, principal: Principal) -> dict[str, Any]:
        """`GET /api/v1/tokens/quota/org`: the org's pools as the caller's org member sees them."""
        async with self.db.acquire() as conn:
            pools = await repo.list_pools(conn, principal.org_id, "org")
            org = await self._org(conn, principal.org_id)
        if not pools:
            raise NotFound("quota not found", code="quota_not_found")
        return {"org_id": principal.org_id, "pools": await self.pool_views(pools, org.timezone)}

    async def consume(self, principal: Principal, provider: str, tokens: int) -> dict[str, Any]:
        """`POST /api/v1/tokens/consume`: charge `tokens` through the same admission and settlement as a chat
        request (buckets, freezes, every cap, the balancer), settled at once."""
        request_id = new_id()
        record = await self.core.record_for(principal)
        admitted = await self.core.admit_record(
            record,
            # No output: the reservation is exactly `tokens` (bypassing the contract's minimum of 1).
            AdmitRequest.model_construct(
                api_key="",
                request_id=request_id,
                model="*",
                provider=provider,
                prompt_tokens=tokens,
                max_output_tokens=None,
                model_max_output_tokens=0,
                min_output_tokens=0,
                input_usd_micros_per_mtok=0,
                output_usd_micros_per_mtok=0,
                session_id=None,
                priority=None,
                privacy=None,
            ),
        )
        event = UsageRecorded(
            producer="quota",
            request_id=request_id,
            reservation_id=admitted.reservation_id,
            user_id=admitted.principal.user_id,
            key_id=admitted.principal.key_id,
            pool_id=admitted.pool_id,
            quota_source=admitted.quota_source,
            model="*",
            provider=provider,
            prompt_tokens=tokens,
            total_tokens=tokens,
        )
        await self.core.settle_usage(event)
        quota = await self.my_quota(admitted.principal)
        return {
            "allowed": True,
            "tokens": tokens,
            "provider": provider,
            "quota_source": admitted.quota_source,
            "remaining": quota["available_quota"],
            "ratelimit": admitted.ratelimit.model_dump(),
        }
