"""HTTP routes: internal (gateway only) and public (reached through the gateway with a principal).

Admin routes need an admin principal and act within the admin's org; `/v1/users/me/*` act on the caller;
`/v1/approvals/*` check team management per request; `/api/v1/tokens/*` are Leaky Tokens' paths."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Query, Response, status

from leaky_common.api import error_responses
from leaky_common.auth import Principal
from leaky_common.contracts import AdmitRequest, AdmitResponse, AuthenticateRequest
from lt_quota.api import views
from lt_quota.api.deps import AdminDep, GovernanceDep, InternalDep, PrincipalDep, ServiceDep
from lt_quota.api.schemas import (
    AddMemberBody,
    ApprovalBody,
    ApproveBody,
    ConsumeBody,
    CreateKeyBody,
    CreateOrgBody,
    CreatePoolBody,
    CreateTeamBody,
    CreateUserBody,
    FreezeBody,
    FreezeTarget,
    OrgBody,
    PrivacyBody,
    RejectBody,
    SessionBudgetBody,
    StatusBody,
    UpdateKeyBody,
    UpdatePoolBody,
    UpdateUserBody,
)
from lt_quota.api.views import UserView

__all__ = ["internal_router", "public_router"]

internal_router = APIRouter(
    prefix="/internal", tags=["internal"], dependencies=[InternalDep], responses=error_responses(401)
)
public_router = APIRouter(tags=["quota"], responses=error_responses(401))


def _set(body: Any) -> dict[str, Any]:
    return dict(body.model_dump(exclude_unset=True, exclude_none=True))


@internal_router.post("/authenticate")
async def authenticate(body: AuthenticateRequest, service: ServiceDep) -> Principal:
    return await service.authenticate(body.api_key)


@internal_router.post("/admit", responses=error_responses(400, 401, 402, 403, 429))
async def admit(body: AdmitRequest, service: ServiceDep) -> AdmitResponse:
    return await service.admit(body)


# --- admin: users, teams, org, pools, sessions, freezes ------------------------------------------------------


@public_router.post(
    "/v1/admin/users",
    status_code=status.HTTP_201_CREATED,
    response_model=views.CreatedUserView,
    responses=error_responses(403, 404, 409),
)
async def create_user(body: CreateUserBody, admin: AdminDep, gov: GovernanceDep) -> dict[str, Any]:
    return await gov.create_user(
        admin,
        email=body.email,
        name=body.name,
        personal_quota=body.personal_quota,
        unit=body.unit,
        period=body.period,
        team_id=body.team_id,
        role=body.role,
    )


@public_router.get("/v1/admin/users", response_model=views.UserList, responses=error_responses(403))
async def list_users(admin: AdminDep, gov: GovernanceDep) -> dict[str, Any]:
    users = await gov.list_users(admin)
    data = [UserView.model_validate(u, from_attributes=True).model_dump() for u in users]
    return {"object": "list", "data": data}


@public_router.patch(
    "/v1/admin/users/{user_id}", response_model=views.UserView, responses=error_responses(403, 404)
)
async def update_user(user_id: str, body: UpdateUserBody, admin: AdminDep, gov: GovernanceDep) -> UserView:
    user = await gov.update_user(admin, user_id, _set(body))
    return UserView.model_validate(user, from_attributes=True)


@public_router.get(
    "/v1/admin/users/{user_id}/quota", response_model=views.QuotaView, responses=error_responses(403, 404)
)
async def user_quota(user_id: str, admin: AdminDep, gov: GovernanceDep) -> dict[str, Any]:
    return await gov.my_quota(await gov.user_principal(admin, user_id))


@public_router.get(
    "/v1/admin/users/{user_id}/keys", response_model=views.KeyList, responses=error_responses(403, 404)
)
async def user_keys(user_id: str, admin: AdminDep, gov: GovernanceDep) -> dict[str, Any]:
    return {"object": "list", "data": await gov.list_keys(await gov.user_principal(admin, user_id))}


@public_router.delete(
    "/v1/admin/users/{user_id}/keys/{key_id}",
    response_model=views.RevokedKeyView,
    responses=error_responses(403, 404),
)
async def revoke_user_key(user_id: str, key_id: str, admin: AdminDep, gov: GovernanceDep) -> dict[str, Any]:
    return await gov.revoke_key(await gov.user_principal(admin, user_id), key_id)


@public_router.patch(
    "/v1/admin/users/{user_id}/keys/{key_id}",
    response_model=views.KeyView,
    responses=error_responses(403, 404),
)
async def update_user_key(
    user_id: str, key_id: str, body: UpdateKeyBody, admin: AdminDep, gov: GovernanceDep
) -> dict[str, Any]:
    user = await gov.user_principal(admin, user_id)
    return await gov.update_key(user, key_id, body.model_dump(exclude_unset=True), admin=True)


@public_router.post(
    "/v1/admin/teams",
    status_code=status.HTTP_201_CREATED,
    response_model=views.TeamView,
    responses=error_responses(403, 409),
)
async def create_team(body: CreateTeamBody, admin: AdminDep, gov: GovernanceDep) -> dict[str, Any]:
    return await gov.create_team(admin, name=body.name, pool=body.pool)


@public_router.get("/v1/admin/teams", response_model=views.TeamList, responses=error_responses(403))
async def list_teams(admin: AdminDep, gov: GovernanceDep) -> dict[str, Any]:
    return {"object": "list", "data": await gov.list_teams(admin)}


@public_router.post(
    "/v1/admin/teams/{team_id}/members/{user_id}",
    response_model=views.MembershipView,
    responses=error_responses(403, 404),
)
async def add_member(
    team_id: str,
    user_id: str,
    admin: AdminDep,
    gov: GovernanceDep,
    response: Response,
    body: AddMemberBody | None = Body(default=None),  # noqa: B008
) -> dict[str, Any]:
    role = body.role if body is not None else "member"
    membership, created = await gov.add_member(admin, team_id, user_id, role)
    response.status_code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
    return membership


@public_router.post(
    "/v1/admin/orgs",
    status_code=status.HTTP_201_CREATED,
    response_model=views.NewOrgView,
    responses=error_responses(403, 409),
)
async def create_org(body: CreateOrgBody, admin: AdminDep, gov: GovernanceDep) -> dict[str, Any]:
    return await gov.create_org(
        admin,
        name=body.name,
        timezone=body.timezone,
        admin_email=body.admin_email,
        admin_name=body.admin_name,
        personal_quota=body.personal_quota,
    )


@public_router.get("/v1/admin/orgs", response_model=views.OrgList, responses=error_responses(403))
async def list_orgs(admin: AdminDep, gov: GovernanceDep) -> dict[str, Any]:
    return {"object": "list", "data": await gov.list_orgs(admin)}


@public_router.get("/v1/admin/org", response_model=views.OrgView, responses=error_responses(403, 404))
async def get_org(admin: AdminDep, gov: GovernanceDep) -> dict[str, Any]:
    return await gov.get_org(admin)


@public_router.patch("/v1/admin/org", response_model=views.OrgView, responses=error_responses(403, 404))
async def update_org(body: OrgBody, admin: AdminDep, gov: GovernanceDep) -> dict[str, Any]:
    return await gov.update_org(admin, body.changes())


@public_router.post(
    "/v1/admin/pools",
    status_code=status.HTTP_201_CREATED,
    response_model=views.PoolView,
    responses=error_responses(400, 401, 403, 404, 409),
)
async def create_pool(body: CreatePoolBody, admin: AdminDep, gov: GovernanceDep) -> dict[str, Any]:
    return await gov.create_pool(admin, body.model_dump())


@public_router.get("/v1/admin/pools", response_model=views.PoolList, responses=error_responses(403, 404))
async def list_pools(
    admin: AdminDep, gov: GovernanceDep, owner_type: str | None = Query(default=None)
) -> dict[str, Any]:
    return {"object": "list", "data": await gov.list_pools(admin, owner_type)}


@public_router.get(
    "/v1/admin/pools/{pool_id}", response_model=views.PoolView, responses=error_responses(403, 404)
)
async def get_pool(pool_id: str, admin: AdminDep, gov: GovernanceDep) -> dict[str, Any]:
    return await gov.get_pool(admin, pool_id)


@public_router.patch(
    "/v1/admin/pools/{pool_id}", response_model=views.PoolView, responses=error_responses(403, 404)
)
async def update_pool(
    pool_id: str, body: UpdatePoolBody, admin: AdminDep, gov: GovernanceDep
) -> dict[str, Any]:
    return await gov.update_pool(admin, pool_id, body.limit, body.period)


@public_router.delete(
    "/v1/admin/pools/{pool_id}",
    response_model=views.DeletedPoolView,
    responses=error_responses(403, 404, 409),
)
async def delete_pool(pool_id: str, admin: AdminDep, gov: GovernanceDep) -> dict[str, Any]:
    return await gov.delete_pool(admin, pool_id)


@public_router.get("/v1/admin/sessions", response_model=views.SessionList, responses=error_responses(403))
async def list_sessions(admin: AdminDep, gov: GovernanceDep) -> dict[str, Any]:
    return {"object": "list", "data": await gov.list_sessions(admin)}


@public_router.get(
    "/v1/admin/sessions/{session_id}", response_model=views.SessionView, responses=error_responses(403, 404)
)
async def get_session(session_id: str, admin: AdminDep, gov: GovernanceDep) -> dict[str, Any]:
    return await gov.get_session(admin, session_id)


@public_router.put(
    "/v1/admin/sessions/{session_id}/budget",
    response_model=views.SessionView,
    responses=error_responses(403, 404),
)
async def set_session_budget(
    session_id: str, body: SessionBudgetBody, admin: AdminDep, gov: GovernanceDep
) -> dict[str, Any]:
    return await gov.set_session_budget(admin, session_id, body.budget_usd_micros)


@public_router.post(
    "/v1/admin/sessions/{session_id}/reset",
    response_model=views.SessionView,
    responses=error_responses(403, 404),
)
async def reset_session(session_id: str, admin: AdminDep, gov: GovernanceDep) -> dict[str, Any]:
    return await gov.reset_session(admin, session_id)


@public_router.post(
    "/v1/admin/freezes",
    status_code=status.HTTP_201_CREATED,
    response_model=views.FreezeView,
    responses=error_responses(403, 404),
)
async def create_freeze(body: FreezeBody, admin: AdminDep, service: ServiceDep) -> dict[str, Any]:
    return await service.admin_freeze(admin, body.target_type, body.target_id, body.reason, body.duration_s)


@public_router.get("/v1/admin/freezes", response_model=views.FreezeList, responses=error_responses(403))
async def list_freezes(admin: AdminDep, service: ServiceDep) -> dict[str, Any]:
    return {"object": "list", "data": await service.list_freezes(admin)}


@public_router.delete(
    "/v1/admin/freezes/{target_type}/{target_id}",
    response_model=views.UnfreezeView,
    responses=error_responses(403, 404),
)
async def delete_freeze(
    target_type: FreezeTarget, target_id: str, admin: AdminDep, service: ServiceDep
) -> dict[str, Any]:
    return await service.unfreeze(admin, target_type, target_id)


# --- the caller ----------------------------------------------------------------------------------------------


@public_router.get("/v1/users/me", response_model=views.UserView, responses=error_responses(404))
async def me(principal: PrincipalDep, gov: GovernanceDep) -> UserView:
    return UserView.model_validate(await gov.me(principal), from_attributes=True)


@public_router.get("/v1/users/me/quota", response_model=views.QuotaView, responses=error_responses(404))
async def my_quota(principal: PrincipalDep, gov: GovernanceDep) -> dict[str, Any]:
    return await gov.my_quota(principal)


@public_router.put("/v1/users/me/status", response_model=views.UserView, responses=error_responses(403, 404))
async def set_status(body: StatusBody, principal: PrincipalDep, gov: GovernanceDep) -> UserView:
    return UserView.model_validate(await gov.set_my_status(principal, body.status), from_attributes=True)


@public_router.put(
    "/v1/users/me/privacy",
    response_model=views.PrivacyView,
)
async def set_privacy(body: PrivacyBody, principal: PrincipalDep, gov: GovernanceDep) -> dict[str, Any]:
    return await gov.set_my_privacy(principal, body.privacy)


@public_router.get(
    "/v1/users/me/teams",
    response_model=views.MyTeamList,
    response_model_exclude_unset=True,
    responses=error_responses(404),
)
async def my_teams(principal: PrincipalDep, gov: GovernanceDep) -> dict[str, Any]:
    return {"object": "list", "data": await gov.my_teams(principal)}


@public_router.get(
    "/v1/users/me/keys",
    response_model=views.KeyList,
)
async def list_keys(principal: PrincipalDep, gov: GovernanceDep) -> dict[str, Any]:
    return {"object": "list", "data": await gov.list_keys(principal)}


@public_router.post(
    "/v1/users/me/keys",
    status_code=status.HTTP_201_CREATED,
    response_model=views.NewKeyView,
    responses=error_responses(400, 401, 404),
)
async def create_key(
    principal: PrincipalDep,
    gov: GovernanceDep,
    body: CreateKeyBody | None = Body(default=None),  # noqa: B008
) -> dict[str, Any]:
    return await gov.create_key(principal, _set(body) if body is not None else {})


@public_router.patch(
    "/v1/users/me/keys/{key_id}", response_model=views.KeyView, responses=error_responses(400, 401, 404)
)
async def update_key(
    key_id: str, body: UpdateKeyBody, principal: PrincipalDep, gov: GovernanceDep
) -> dict[str, Any]:
    fields = body.model_dump(exclude_unset=True)
    return await gov.update_key(principal, key_id, fields, admin=principal.is_admin)


@public_router.delete(
    "/v1/users/me/keys/{key_id}", response_model=views.RevokedKeyView, responses=error_responses(404)
)
async def revoke_key(key_id: str, principal: PrincipalDep, gov: GovernanceDep) -> dict[str, Any]:
    return await gov.revoke_key(principal, key_id)


@public_router.post(
    "/v1/users/me/keys/{key_id}/rotate",
    status_code=status.HTTP_201_CREATED,
    response_model=views.RotatedKeyView,
    responses=error_responses(404),
)
async def rotate_key(key_id: str, principal: PrincipalDep, gov: GovernanceDep) -> dict[str, Any]:
    return await gov.rotate_key(principal, key_id)


# --- approvals -----------------------------------------------------------------------------------------------


@public_router.post(
    "/v1/approvals",
    status_code=status.HTTP_201_CREATED,
    response_model=views.ApprovalView,
    responses=error_responses(400, 401, 404),
)
async def request_approval(body: ApprovalBody, principal: PrincipalDep, gov: GovernanceDep) -> dict[str, Any]:
    return await gov.request_approval(principal, body.requested_credits, body.reason, body.priority)


@public_router.get(
    "/v1/approvals",
    response_model=views.ApprovalList,
)
async def my_approvals(principal: PrincipalDep, gov: GovernanceDep) -> dict[str, Any]:
    return {"object": "list", "data": await gov.my_approvals(principal)}


@public_router.get(
    "/v1/approvals/pending",
    response_model=views.ApprovalList,
)
async def pending_approvals(principal: PrincipalDep, gov: GovernanceDep) -> dict[str, Any]:
    return {"object": "list", "data": await gov.pending_approvals(principal)}


@public_router.post(
    "/v1/approvals/{approval_id}/approve",
    response_model=views.ApprovalView,
    responses=error_responses(403, 404, 409),
)
async def approve(
    approval_id: str,
    principal: PrincipalDep,
    gov: GovernanceDep,
    body: ApproveBody | None = Body(default=None),  # noqa: B008
) -> dict[str, Any]:
    amount = body.approved_credits if body is not None else None
    return await gov.decide_approval(principal, approval_id, approve=True, amount=amount, reason=None)


@public_router.post(
    "/v1/approvals/{approval_id}/reject",
    response_model=views.ApprovalView,
    responses=error_responses(403, 404, 409),
)
async def reject(
    approval_id: str,
    principal: PrincipalDep,
    gov: GovernanceDep,
    body: RejectBody | None = Body(default=None),  # noqa: B008
) -> dict[str, Any]:
    reason = body.reason if body is not None else ""
    return await gov.decide_approval(principal, approval_id, approve=False, amount=None, reason=reason)


# --- Leaky Tokens aliases ------------------------------------------------------------------------------------


@public_router.get(
    "/api/v1/tokens/status", response_model=views.TokensStatusView, responses=error_responses(404)
)
async def tokens_status(principal: PrincipalDep, gov: GovernanceDep) -> dict[str, Any]:
    return await gov.tokens_status(principal)


@public_router.get(
    "/api/v1/tokens/quota", response_model=views.TokensQuotaView, responses=error_responses(404)
)
async def tokens_quota(
    principal: PrincipalDep, gov: GovernanceDep, provider: str | None = Query(default=None)
) -> dict[str, Any]:
    return await gov.tokens_quota(principal, provider)


@public_router.get(
    "/api/v1/tokens/quota/org", response_model=views.OrgQuotaView, responses=error_responses(404)
)
async def tokens_org_quota(principal: PrincipalDep, gov: GovernanceDep) -> dict[str, Any]:
    return await gov.tokens_org_quota(principal)


@public_router.post(
    "/api/v1/tokens/consume",
    response_model=views.ConsumeView,
    responses=error_responses(400, 401, 402, 403, 429),
)
async def tokens_consume(body: ConsumeBody, principal: PrincipalDep, gov: GovernanceDep) -> dict[str, Any]:
    return await gov.consume(principal, body.provider, body.tokens)
