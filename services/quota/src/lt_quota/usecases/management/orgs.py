"""Organisations: start-up ensures the platform org and its admin; platform admins create and list orgs (each with a first admin); an org's admin reads and
changes its settings (time zone, vacation sharing, session budgets, privacy, bucket sizes)."""

from __future__ import annotations

import logging
from typing import Any

import asyncpg

from leaky_common.auth import Principal
from leaky_common.errors import Conflict, Forbidden
from lt_quota.adapters import repository as repo
from lt_quota.domain import hash_api_key, key_prefix, new_id
from lt_quota.usecases.context import QuotaContext
from lt_quota.usecases.management.users import NewUser, insert_user
from lt_quota.usecases.management.views import iso, require_org

__all__ = ["BOOTSTRAP_KEY_NAME", "Orgs"]

logger = logging.getLogger(__name__)

# The name of the key start-up makes from LT_BOOTSTRAP_ADMIN_KEY (rotation through the API keeps it).
BOOTSTRAP_KEY_NAME = "bootstrap"


async def _require_platform_admin(conn: asyncpg.Connection, admin: Principal) -> None:
    if not await repo.is_platform_org(conn, admin.org_id):
        raise Forbidden(
            "only admins of the platform organisation manage organisations",
            code="platform_admin_required",
        )


class Orgs:
    """Organisations and their settings."""

    def __init__(self, ctx: QuotaContext) -> None:
        self.ctx = ctx

    async def bootstrap_admin(self, api_key: str) -> None:
        """Ensure the default org (the platform org, whose admins manage orgs), an admin user holding
        `api_key` and its personal pool (idempotent; at start-up).

        The configured key replaces every earlier bootstrap key of that admin: a changed
        `LT_BOOTSTRAP_ADMIN_KEY` revokes the old one. A revoked key never comes back: if the configured key
        was revoked (say, rotated through the API), nothing changes and a warning says so."""
        key_hash = hash_api_key(api_key)
        async with self.ctx.db.acquire() as conn, conn.transaction():
            org_id = await repo.upsert_org(conn, new_id(), "default", "UTC")
            await repo.mark_platform_org(conn, org_id)
            await repo.insert_user(conn, new_id(), org_id, "admin@localhost", "Administrator", "admin")
            user_id = await repo.user_id_by_email(conn, org_id, "admin@localhost")
            assert user_id is not None
            await repo.ensure_pool(
                conn, new_id(), "user", user_id, org_id, "tokens", self.ctx.settings.bootstrap_admin_quota
            )
            existing = await repo.key_by_hash(conn, key_hash)
            if existing is not None and existing.revoked:
                logger.warning("LT_BOOTSTRAP_ADMIN_KEY was revoked; it stays revoked (set a new value)")
                return
            await repo.insert_key(
                conn, new_id(), user_id, org_id, key_prefix(api_key), key_hash, BOOTSTRAP_KEY_NAME
            )
            replaced = await repo.revoke_named_keys_except(conn, user_id, BOOTSTRAP_KEY_NAME, key_hash)
        if replaced:
            self.ctx.invalidate()
            logger.warning("LT_BOOTSTRAP_ADMIN_KEY changed: revoked the earlier bootstrap keys %s", replaced)

    async def create_org(
        self, admin: Principal, *, name: str, timezone: str, first_admin: NewUser
    ) -> dict[str, Any]:
        """A new organisation with its first admin user and key (the key is returned once)."""
        org_id = new_id()
        async with self.ctx.db.acquire() as conn, conn.transaction():
            await _require_platform_admin(conn, admin)
            if not await repo.insert_org(conn, org_id, name, timezone):
                raise Conflict(f"an organisation named {name} exists", code="org_exists", param="name")
            first = await insert_user(conn, org_id, first_admin, self.ctx.settings.default_personal_quota)
        await self.ctx.load_pools([first["pool_id"]])
        return {**await self.get_org(Principal(user_id=first["id"], org_id=org_id)), "admin": first}

    async def list_orgs(self, admin: Principal) -> list[dict[str, Any]]:
        """Every organisation (platform admins only)."""
        async with self.ctx.db.acquire() as conn:
            await _require_platform_admin(conn, admin)
            rows = await repo.list_orgs(conn)
        return [
            {
                "id": r["id"],
                "name": r["name"],
                "timezone": r["timezone"],
                "platform": r["platform"],
                "user_count": r["user_count"],
                "created_at": iso(r["created_at"]),
            }
            for r in rows
        ]

    async def get_org(self, admin: Principal) -> dict[str, Any]:
        """The admin's org settings."""
        async with self.ctx.db.acquire() as conn:
            org = await require_org(conn, admin.org_id)
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
            "manager_approval_limit": org.manager_approval_limit,
            "bucket_period_s": self.ctx.settings.bucket_period_s,
        }

    async def update_org(self, admin: Principal, fields: dict[str, Any]) -> dict[str, Any]:
        """Change the admin's org settings; admission uses them at once in this process."""
        async with self.ctx.db.acquire() as conn:
            await repo.update_org(conn, admin.org_id, fields)
        self.ctx.invalidate()
        return await self.get_org(admin)
