"""Admin routes: an admin principal, acting within the admin's org (users, teams, orgs, pools, sessions, freezes)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Query, Response, status

from leaky_common.api import AdminPrincipal, error_responses
from lt_quota.api import views
from lt_quota.api.deps import FreezesDep, ManagementDep
from lt_quota.api.schemas import (
    AddMemberBody,
    CreateOrgBody,
    CreatePoolBody,
    CreateTeamBody,
    CreateUserBody,
    FreezeBody,
    FreezeTarget,
    OrgBody,
    PrimaryTeamBody,
    SessionBudgetBody,
    TeamBucketsBody,
    UpdateKeyBody,
    UpdatePoolBody,
    UpdateUserBody,
    given_fields,
)
from lt_quota.api.views import UserView
from lt_quota.usecases.management import NewUser

__all__ = ["router"]

router = APIRouter()


# --- admin: users, teams, org, pools, sessions, freezes ------------------------------------------------------


@router.post(
    "/v1/admin/users",
    status_code=status.HTTP_201_CREATED,
    response_model=views.CreatedUserView,
    responses=error_responses(403, 404, 409),
)
async def create_user(body: CreateUserBody, admin: AdminPrincipal, gov: ManagementDep) -> dict[str, Any]:
    new = NewUser(body.email, body.name, body.role, body.personal_quota, body.unit, body.period)
    return await gov.users.create_user(admin, new, body.team_id)


@router.get("/v1/admin/users", response_model=views.UserList, responses=error_responses(403))
async def list_users(admin: AdminPrincipal, gov: ManagementDep) -> dict[str, Any]:
    users = await gov.users.list_users(admin)
    data = [UserView.model_validate(u, from_attributes=True).model_dump() for u in users]
    return {"object": "list", "data": data}


@router.patch("/v1/admin/users/{user_id}", response_model=views.UserView, responses=error_responses(403, 404))
async def update_user(
    user_id: str, body: UpdateUserBody, admin: AdminPrincipal, gov: ManagementDep
) -> UserView:
    user = await gov.users.update_user(admin, user_id, given_fields(body))
    return UserView.model_validate(user, from_attributes=True)


@router.get(
    "/v1/admin/users/{user_id}/quota", response_model=views.QuotaView, responses=error_responses(403, 404)
)
async def user_quota(user_id: str, admin: AdminPrincipal, gov: ManagementDep) -> dict[str, Any]:
    return await gov.views.my_quota(await gov.users.user_principal(admin, user_id))


@router.get(
    "/v1/admin/users/{user_id}/keys", response_model=views.KeyList, responses=error_responses(403, 404)
)
async def user_keys(user_id: str, admin: AdminPrincipal, gov: ManagementDep) -> dict[str, Any]:
    return {
        "object": "list",
        "data": await gov.keys.list_keys(await gov.users.user_principal(admin, user_id)),
    }


@router.delete(
    "/v1/admin/users/{user_id}/keys/{key_id}",
    response_model=views.RevokedKeyView,
    responses=error_responses(403, 404),
)
async def revoke_user_key(
    user_id: str, key_id: str, admin: AdminPrincipal, gov: ManagementDep
) -> dict[str, Any]:
    return await gov.keys.revoke_key(await gov.users.user_principal(admin, user_id), key_id)


@router.patch(
    "/v1/admin/users/{user_id}/keys/{key_id}",
    response_model=views.KeyView,
    responses=error_responses(403, 404),
)
async def update_user_key(
    user_id: str, key_id: str, body: UpdateKeyBody, admin: AdminPrincipal, gov: ManagementDep
) -> dict[str, Any]:
    user = await gov.users.user_principal(admin, user_id)
    return await gov.keys.update_key(user, key_id, body.model_dump(exclude_unset=True), admin=True)


@router.post(
    "/v1/admin/teams",
    status_code=status.HTTP_201_CREATED,
    response_model=views.TeamView,
    responses=error_responses(403, 409),
)
async def create_team(body: CreateTeamBody, admin: AdminPrincipal, gov: ManagementDep) -> dict[str, Any]:
    return await gov.teams.create_team(admin, name=body.name, pool=body.pool)


@router.get("/v1/admin/teams", response_model=views.TeamList, responses=error_responses(403))
async def list_teams(admin: AdminPrincipal, gov: ManagementDep) -> dict[str, Any]:
    return {"object": "list", "data": await gov.teams.list_teams(admin)}


@router.post(
    "/v1/admin/teams/{team_id}/members/{user_id}",
    response_model=views.MembershipView,
    responses=error_responses(403, 404),
)
async def add_member(
    team_id: str,
    user_id: str,
    admin: AdminPrincipal,
    gov: ManagementDep,
    response: Response,
    body: AddMemberBody | None = Body(default=None),  # noqa: B008
) -> dict[str, Any]:
    role = body.role if body is not None else "member"
    membership, created = await gov.teams.add_member(admin, team_id, user_id, role)
    response.status_code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
    return membership


@router.patch(
    "/v1/admin/teams/{team_id}/buckets",
    response_model=views.TeamBucketsView,
    responses=error_responses(403, 404),
)
async def set_team_buckets(
    team_id: str, body: TeamBucketsBody, admin: AdminPrincipal, gov: ManagementDep
) -> dict[str, Any]:
    return await gov.teams.set_bucket_sizes(admin, team_id, body.model_dump(exclude_unset=True))


@router.put(
    "/v1/admin/users/{user_id}/primary-team",
    response_model=views.UserView,
    responses=error_responses(403, 404),
)
async def set_primary_team(
    user_id: str, body: PrimaryTeamBody, admin: AdminPrincipal, gov: ManagementDep
) -> UserView:
    user = await gov.teams.set_primary_team(admin, user_id, body.team_id)
    return UserView.model_validate(user, from_attributes=True)


@router.post(
    "/v1/admin/orgs",
    status_code=status.HTTP_201_CREATED,
    response_model=views.NewOrgView,
    responses=error_responses(403, 409),
)
async def create_org(body: CreateOrgBody, admin: AdminPrincipal, gov: ManagementDep) -> dict[str, Any]:
    first_admin = NewUser(body.admin_email, body.admin_name, "admin", body.personal_quota)
    return await gov.orgs.create_org(admin, name=body.name, timezone=body.timezone, first_admin=first_admin)


@router.get("/v1/admin/orgs", response_model=views.OrgList, responses=error_responses(403))
async def list_orgs(admin: AdminPrincipal, gov: ManagementDep) -> dict[str, Any]:
    return {"object": "list", "data": await gov.orgs.list_orgs(admin)}


@router.get("/v1/admin/org", response_model=views.OrgView, responses=error_responses(403, 404))
async def get_org(admin: AdminPrincipal, gov: ManagementDep) -> dict[str, Any]:
    return await gov.orgs.get_org(admin)


@router.patch("/v1/admin/org", response_model=views.OrgView, responses=error_responses(403, 404))
async def update_org(body: OrgBody, admin: AdminPrincipal, gov: ManagementDep) -> dict[str, Any]:
    return await gov.orgs.update_org(admin, body.changes())


@router.post(
    "/v1/admin/pools",
    status_code=status.HTTP_201_CREATED,
    response_model=views.PoolView,
    responses=error_responses(400, 403, 404, 409),
)
async def create_pool(body: CreatePoolBody, admin: AdminPrincipal, gov: ManagementDep) -> dict[str, Any]:
    return await gov.pools.create_pool(admin, body.model_dump())


@router.get("/v1/admin/pools", response_model=views.PoolList, responses=error_responses(403, 404))
async def list_pools(
    admin: AdminPrincipal, gov: ManagementDep, owner_type: str | None = Query(default=None)
) -> dict[str, Any]:
    return {"object": "list", "data": await gov.pools.list_pools(admin, owner_type)}


@router.get("/v1/admin/pools/{pool_id}", response_model=views.PoolView, responses=error_responses(403, 404))
async def get_pool(pool_id: str, admin: AdminPrincipal, gov: ManagementDep) -> dict[str, Any]:
    return await gov.pools.get_pool(admin, pool_id)


@router.patch("/v1/admin/pools/{pool_id}", response_model=views.PoolView, responses=error_responses(403, 404))
async def update_pool(
    pool_id: str, body: UpdatePoolBody, admin: AdminPrincipal, gov: ManagementDep
) -> dict[str, Any]:
    return await gov.pools.update_pool(admin, pool_id, body.limit, body.period)


@router.delete(
    "/v1/admin/pools/{pool_id}",
    response_model=views.DeletedPoolView,
    responses=error_responses(403, 404, 409),
)
async def delete_pool(pool_id: str, admin: AdminPrincipal, gov: ManagementDep) -> dict[str, Any]:
    return await gov.pools.delete_pool(admin, pool_id)


@router.get("/v1/admin/sessions", response_model=views.SessionList, responses=error_responses(403))
async def list_sessions(admin: AdminPrincipal, gov: ManagementDep) -> dict[str, Any]:
    return {"object": "list", "data": await gov.sessions.list_sessions(admin)}


@router.get(
    "/v1/admin/sessions/{session_id}", response_model=views.SessionView, responses=error_responses(403, 404)
)
async def get_session(session_id: str, admin: AdminPrincipal, gov: ManagementDep) -> dict[str, Any]:
    return await gov.sessions.get_session(admin, session_id)


@router.put(
    "/v1/admin/sessions/{session_id}/budget",
    response_model=views.SessionView,
    responses=error_responses(403, 404),
)
async def set_session_budget(
    session_id: str, body: SessionBudgetBody, admin: AdminPrincipal, gov: ManagementDep
) -> dict[str, Any]:
    return await gov.sessions.set_session_budget(admin, session_id, body.budget_usd_micros)


@router.post(
    "/v1/admin/sessions/{session_id}/reset",
    response_model=views.SessionView,
    responses=error_responses(403, 404),
)
async def reset_session(session_id: str, admin: AdminPrincipal, gov: ManagementDep) -> dict[str, Any]:
    return await gov.sessions.reset_session(admin, session_id)


@router.post(
    "/v1/admin/freezes",
    status_code=status.HTTP_201_CREATED,
    response_model=views.FreezeView,
    responses=error_responses(403, 404),
)
async def create_freeze(body: FreezeBody, admin: AdminPrincipal, freezes: FreezesDep) -> dict[str, Any]:
    return await freezes.admin_freeze(admin, body.target_type, body.target_id, body.reason, body.duration_s)


@router.get("/v1/admin/freezes", response_model=views.FreezeList, responses=error_responses(403))
async def list_freezes(admin: AdminPrincipal, freezes: FreezesDep) -> dict[str, Any]:
    return {"object": "list", "data": await freezes.list_freezes(admin)}


@router.delete(
    "/v1/admin/freezes/{target_type}/{target_id}",
    response_model=views.UnfreezeView,
    responses=error_responses(403, 404),
)
async def delete_freeze(
    target_type: FreezeTarget, target_id: str, admin: AdminPrincipal, freezes: FreezesDep
) -> dict[str, Any]:
    return await freezes.unfreeze(admin, target_type, target_id)
