"""Teams: an admin creates teams (with a token pool), adds members, sets a team's bucket sizes and a user's
primary team; a member sees their teams, and a manager also each member's personal pool and the team's
pools."""

from __future__ import annotations

from typing import Any

from leaky_common.auth import Principal
from leaky_common.errors import Conflict, InvalidRequest, NotFound
from lt_quota.adapters import repository as repo
from lt_quota.domain import new_id
from lt_quota.domain.records import UserRecord
from lt_quota.usecases.context import QuotaContext
from lt_quota.usecases.management.views import PoolViews, iso, require_org

__all__ = ["Teams"]


class Teams:
    """Teams of an org and their members."""

    def __init__(self, ctx: QuotaContext, views: PoolViews) -> None:
        self.ctx = ctx
        self.views = views

    async def create_team(self, admin: Principal, *, name: str, pool: int | None) -> dict[str, Any]:
        """Create a team, with a tokens pool if `pool` is given."""
        team_id = new_id()
        pool_id: str | None = None
        async with self.ctx.db.acquire() as conn, conn.transaction():
            if not await repo.insert_team(conn, team_id, admin.org_id, name):
                raise Conflict(f"a team named {name} exists", code="team_exists", param="name")
            if pool is not None:
                pool_id = await repo.ensure_pool(
                    conn, new_id(), "team", team_id, admin.org_id, "tokens", pool
                )
        if pool_id is not None:
            await self.ctx.load_pools([pool_id])
        return {"id": team_id, "name": name, "org_id": admin.org_id, "pool_id": pool_id}

    async def add_member(
        self, admin: Principal, team_id: str, user_id: str, role: str
    ) -> tuple[dict[str, Any], bool]:
        """Add a user to a team (or change their role); returns (membership, created)."""
        async with self.ctx.db.acquire() as conn, conn.transaction():
            if not await repo.team_exists(conn, team_id, admin.org_id):
                raise NotFound(f"team {team_id} not found", code="team_not_found")
            if await repo.get_user(conn, user_id, admin.org_id) is None:
                raise NotFound(f"user {user_id} not found", code="user_not_found")
            created = await repo.upsert_member(conn, team_id, user_id, role)
        self.ctx.invalidate()  # principals carry the team id
        return {"team_id": team_id, "user_id": user_id, "role": role}, created

    async def set_bucket_sizes(
        self, admin: Principal, team_id: str, sizes: dict[str, int | None]
    ) -> dict[str, Any]:
        """Set (or clear, with None) the team's leaky-bucket sizes; they take precedence over the org's for
        the keys of users charged to the team."""
        async with self.ctx.db.acquire() as conn, conn.transaction():
            if not await repo.set_team_buckets(conn, team_id, admin.org_id, sizes):
                raise NotFound(f"team {team_id} not found", code="team_not_found")
            team = await repo.team_buckets(conn, team_id, admin.org_id)
        assert team is not None
        self.ctx.invalidate()  # the sizes travel with the cached key records
        return team

    async def set_primary_team(self, admin: Principal, user_id: str, team_id: str | None) -> UserRecord:
        """Charge a user in several teams to `team_id` (one of their teams), or again to the team they
        joined first (None)."""
        async with self.ctx.db.acquire() as conn, conn.transaction():
            if await repo.get_user(conn, user_id, admin.org_id) is None:
                raise NotFound(f"user {user_id} not found", code="user_not_found")
            if team_id is not None:
                if not await repo.team_exists(conn, team_id, admin.org_id):
                    raise NotFound(f"team {team_id} not found", code="team_not_found", param="team_id")
                if not await repo.is_member(conn, team_id, user_id):
                    raise InvalidRequest(
                        "the user is not a member of that team; add them first",
                        code="not_team_member",
                        param="team_id",
                    )
            await repo.set_primary_team(conn, user_id, team_id)
            user = await repo.get_user(conn, user_id, admin.org_id)
        assert user is not None
        self.ctx.invalidate()  # principals carry the team id
        return user

    async def list_teams(self, admin: Principal) -> list[dict[str, Any]]:
        """Teams of the admin's org with their member counts."""
        async with self.ctx.db.acquire() as conn:
            rows = await repo.list_teams(conn, admin.org_id)
        return [
            {
                "id": r["id"],
                "name": r["name"],
                "member_count": r["member_count"],
                "created_at": iso(r["created_at"]),
            }
            for r in rows
        ]

    async def my_teams(self, principal: Principal) -> list[dict[str, Any]]:
        """The caller's teams; for teams they manage, the team's pools and each member with their personal
        token pool."""
        async with self.ctx.db.acquire() as conn:
            teams = await repo.user_teams(conn, principal.user_id)
            org = await require_org(conn, principal.org_id)
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
                    team_pools = await repo.list_pools(conn, principal.org_id, "team")
                    view["pools"] = [p for p in team_pools if p.owner_id == t["id"]]
                out.append(view)
        for view in out:
            if "pools" in view:
                await self._live(view, org.timezone)
        return out

    async def _live(self, view: dict[str, Any], timezone: str) -> None:
        """Replace a managed team's pool records by their live views."""
        view["pools"] = await self.views.pool_views(view["pools"], timezone)
        for m in view["members"]:
            pool = m.pop("personal_pool")
            m["personal_pool"] = (await self.views.pool_views([pool], timezone))[0] if pool else None
