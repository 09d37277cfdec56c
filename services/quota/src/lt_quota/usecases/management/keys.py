"""API keys: a user creates (with expiry, allowed models and priorities, own caps and bucket sizes), lists,
changes, revokes and rotates their keys; an admin does so for the users of their org.

A key narrows its owner's rights and never widens them: `allowed_priorities` may name `critical` only for a
user with the admin-granted bypass right. A restricted key (see `domain.rights.KeyLimits`) creates only keys
at least as narrow as itself and changes, rotates or revokes no key but itself."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from leaky_common.auth import Principal
from leaky_common.errors import Forbidden, InvalidRequest, NotFound
from lt_quota.adapters import repository as repo
from lt_quota.domain import generate_api_key, hash_api_key, key_prefix, new_id
from lt_quota.domain.rights import KeyLimits, check_key_priorities, check_narrower
from lt_quota.usecases.context import QuotaContext
from lt_quota.usecases.management.views import iso, require_org

__all__ = ["Keys", "key_view"]


def key_view(r: asyncpg.Record) -> dict[str, Any]:
    """A key as the API shows it (never its secret)."""
    return {
        "id": r["id"],
        "name": r["name"],
        "key_prefix": r["prefix"],
        "created_at": iso(r["created_at"]),
        "revoked_at": iso(r["revoked_at"]),
        "expires_at": iso(r["expires_at"]),
        "allowed_models": r["allowed_models"],
        "allowed_priorities": r["allowed_priorities"],
        "rate_limit_requests_per_period": r["rate_limit_requests_per_period"],
        "rate_limit_tokens_per_period": r["rate_limit_tokens_per_period"],
    }


class Keys:
    """The caller's API keys."""

    def __init__(self, ctx: QuotaContext) -> None:
        self.ctx = ctx

    async def create_key(self, principal: Principal, fields: dict[str, Any]) -> dict[str, Any]:
        """A new API key for the caller (the secret is returned once), with optional expiry, allowed models
        and priorities and own caps (token and/or usd pools owned by the key)."""
        api_key = generate_api_key()
        key_id = new_id()
        days = fields.get("expires_in_days")
        expires_at = self.ctx.now() + timedelta(days=days) if days else None
        async with self.ctx.db.acquire() as conn, conn.transaction():
            await self._within_org_key_size(conn, principal, fields, admin=principal.is_admin)
            await self._within_caller_rights(conn, principal, fields, expires_at)
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
        return {**key_view(row), "api_key": api_key}

    async def update_key(
        self, principal: Principal, key_id: str, fields: dict[str, int | None], *, admin: bool
    ) -> dict[str, Any]:
        """Set or clear a key's own bucket sizes (an owner who is not an admin stays within the org's key
        size); the next admission in this process uses them."""
        async with self.ctx.db.acquire() as conn, conn.transaction():
            await self._within_org_key_size(conn, principal, fields, admin=admin)
            parent = await self._own_key_only(conn, principal, key_id)
            if parent is not None:
                check_narrower(
                    parent,
                    replace(
                        parent,
                        rate_limit_requests=fields.get(
                            "rate_limit_requests_per_period", parent.rate_limit_requests
                        ),
                        rate_limit_tokens=fields.get(
                            "rate_limit_tokens_per_period", parent.rate_limit_tokens
                        ),
                    ),
                )
            if not await repo.update_key_rate_limits(conn, key_id, principal.user_id, fields):
                raise NotFound(f"key {key_id} not found", code="key_not_found")
            row = await repo.get_key(conn, key_id, principal.user_id)
        assert row is not None
        self.ctx.invalidate()
        return key_view(row)

    @staticmethod
    async def _own_key_only(conn: asyncpg.Connection, principal: Principal, key_id: str) -> KeyLimits | None:
        """The caller's key limits if it is restricted (it may then act on itself only: 403 otherwise), else
        None."""
        if principal.key_id is None:
            return None
        limits = await repo.key_limits(conn, principal.key_id)
        if not limits.restricted:
            return None
        if key_id != principal.key_id:
            raise Forbidden(
                "a restricted key may change, rotate or revoke only itself; use an unrestricted key",
                code="restricted_key",
            )
        return limits

    async def _within_caller_rights(
        self,
        conn: asyncpg.Connection,
        principal: Principal,
        fields: dict[str, Any],
        expires_at: datetime | None,
    ) -> None:
        """403 if the new key would widen its owner's rights (priority critical without the bypass right) or,
        made by a restricted key, be less restricted than that key."""
        user = await repo.get_user(conn, principal.user_id, principal.org_id)
        if user is None:
            raise NotFound(f"user {principal.user_id} not found", code="user_not_found")
        check_key_priorities(fields.get("allowed_priorities"), user.allow_priority_bypass)
        parent = await repo.key_limits(conn, principal.key_id) if principal.key_id else KeyLimits()
        if not parent.restricted:
            return
        period = fields.get("cap_period", "none")
        caps = {
            unit: (fields[name], period)
            for unit, name in (("tokens", "max_tokens"), ("usd", "max_usd_micros"))
            if fields.get(name) is not None
        }
        models, prios = fields.get("allowed_models"), fields.get("allowed_priorities")
        child = KeyLimits(
            allowed_models=None if models is None else tuple(models),
            allowed_priorities=None if prios is None else tuple(prios),
            expires_at=expires_at,
            caps=caps,
            rate_limit_requests=fields.get("rate_limit_requests_per_period"),
            rate_limit_tokens=fields.get("rate_limit_tokens_per_period"),
        )
        check_narrower(parent, child)

    async def _within_org_key_size(
        self, conn: asyncpg.Connection, principal: Principal, fields: dict[str, Any], *, admin: bool
    ) -> None:
        """400 if a key owner asks for bigger buckets than a key of theirs gets from the team or org (admins
        may)."""
        if admin:
            return
        user = await repo.get_user(conn, principal.user_id, principal.org_id)
        if user is None:
            raise NotFound(f"user {principal.user_id} not found", code="user_not_found")
        org = await require_org(conn, principal.org_id)
        team = await repo.team_bucket_overrides(conn, user.team_id, user.org_id) if user.team_id else None
        sizes = self.ctx.default_bucket_sizes(org, user.tier, user.role, team)
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
        async with self.ctx.db.acquire() as conn:
            rows = await repo.list_keys(conn, principal.user_id)
        return [key_view(r) for r in rows]

    async def revoke_key(self, principal: Principal, key_id: str) -> dict[str, Any]:
        """Revoke one of the caller's keys (a restricted key: only itself); takes effect at once in this
        process."""
        async with self.ctx.db.acquire() as conn:
            await self._own_key_only(conn, principal, key_id)
            key_hash = await repo.revoke_key(conn, key_id, principal.user_id)
        if key_hash is None:
            raise NotFound(f"key {key_id} not found", code="key_not_found")
        self.ctx.invalidate()
        return {"id": key_id, "revoked": True}

    async def rotate_key(self, principal: Principal, key_id: str) -> dict[str, Any]:
        """Replace a key by a new secret with the same name, expiry, allowed models, priorities and bucket
        sizes; its own caps (and what they have used) move to the new key; the old key stops at once."""
        api_key = generate_api_key()
        new_key_id = new_id()
        async with self.ctx.db.acquire() as conn, conn.transaction():
            await self._own_key_only(conn, principal, key_id)
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
        self.ctx.invalidate()
        return {**key_view(row), "api_key": api_key, "rotated_from": key_id}
