"""HTTP routes: internal (gateway only) and public (reached through the gateway with a principal).

Admin routes need an admin principal and act within the admin's org; `/v1/users/me/*` act on the caller;
`/v1/approvals/*` check team management per request; `/api/v1/tokens/*` are Leaky Tokens' paths."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Query, Response, status

from leaky_common.api import InternalCaller
from leaky_common.auth import Principal
from leaky_common.contracts import AdmitRequest, AdmitResponse, AuthenticateRequest
from lt_quota.api.deps import AdminDep, AdmissionDep, FreezesDep, GovernanceDep, PrincipalDep
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
    UserView,
)
from lt_quota.usecases.management import NewUser

__all__ = ["internal_router", "public_router"]

internal_router = APIRouter(prefix="/internal", tags=["internal"], dependencies=[InternalCaller])
public_router = APIRouter(tags=["quota"])


def _set(body: Any) -> dict[str, Any]:
    return dict(body.model_dump(exclude_unset=True, exclude_none=True))


@internal_router.post("/authenticate")
async def authenticate(body: AuthenticateRequest, admission: AdmissionDep) -> Principal:
    return await admission.authenticate(body.api_key)


@internal_router.post("/admit")
async def admit(body: AdmitRequest, admission: AdmissionDep) -> AdmitResponse:
    return await admission.admit(body)


# --- admin: users, teams, org, pools, sessions, freezes ------------------------------------------------------


@public_router.post("/v1/admin/users", status_code=status.HTTP_201_CREATED)
async def create_user(body: CreateUserBody, admin: AdminDep, gov: GovernanceDep) -> dict[str, Any]:
    new = NewUser(body.email, body.name, body.role, body.personal_quota, body.unit, body.period)
    return await gov.users.create_user(admin, new, body.team_id)


@public_router.get("/v1/admin/users")
async def list_users(admin: AdminDep, gov: GovernanceDep) -> dict[str, Any]:
    users = await gov.users.list_users(admin)
    data = [UserView.model_validate(u, from_attributes=True).model_dump() for u in users]
    return {"object": "list", "data": data}


@public_router.patch("/v1/admin/users/{user_id}")
async def update_user(user_id: str, body: UpdateUserBody, admin: AdminDep, gov: GovernanceDep) -> UserView:
    user = await gov.users.update_user(admin, user_id, _set(body))
    return UserView.model_validate(user, from_attributes=True)


@public_router.get("/v1/admin/users/{user_id}/quota")
async def user_quota(user_id: str, admin: AdminDep, gov: GovernanceDep) -> dict[str, Any]:
    return await gov.views.my_quota(await gov.users.user_principal(admin, user_id))


@public_router.get("/v1/admin/users/{user_id}/keys")
async def user_keys(user_id: str, admin: AdminDep, gov: GovernanceDep) -> dict[str, Any]:
    return {
        "object": "list",
        "data": await gov.keys.list_keys(await gov.users.user_principal(admin, user_id)),
    }


@public_router.delete("/v1/admin/users/{user_id}/keys/{key_id}")
async def revoke_user_key(user_id: str, key_id: str, admin: AdminDep, gov: GovernanceDep) -> dict[str, Any]:
    return await gov.keys.revoke_key(await gov.users.user_principal(admin, user_id), key_id)


@public_router.patch("/v1/admin/users/{user_id}/keys/{key_id}")
async def update_user_key(
    user_id: str, key_id: str, body: UpdateKeyBody, admin: AdminDep, gov: GovernanceDep
) -> dict[str, Any]:
    user = await gov.users.user_principal(admin, user_id)
    return await gov.keys.update_key(user, key_id, body.model_dump(exclude_unset=True), admin=True)


@public_router.post("/v1/admin/teams", status_code=status.HTTP_201_CREATED)
async def create_team(body: CreateTeamBody, admin: AdminDep, gov: GovernanceDep) -> dict[str, Any]:
    return await gov.teams.create_team(admin, name=body.name, pool=body.pool)


@public_router.get("/v1/admin/teams")
async def list_teams(admin: AdminDep, gov: GovernanceDep) -> dict[str, Any]:
    return {"object": "list", "data": await gov.teams.list_teams(admin)}


@public_router.post("/v1/admin/teams/{team_id}/members/{user_id}")
async def add_member(
    team_id: str,
    user_id: str,
    admin: AdminDep,
    gov: GovernanceDep,
    response: Response,
    body: AddMemberBody | None = Body(default=None),  # noqa: B008
) -> dict[str, Any]:
    role = body.role if body is not None else "member"
    membership, created = await gov.teams.add_member(admin, team_id, user_id, role)
    response.status_code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
    return membership


@public_router.post("/v1/admin/orgs", status_code=status.HTTP_201_CREATED)
async def create_org(body: CreateOrgBody, admin: AdminDep, gov: GovernanceDep) -> dict[str, Any]:
    first_admin = NewUser(body.admin_email, body.admin_name, "admin", body.personal_quota)
    return await gov.orgs.create_org(admin, name=body.name, timezone=body.timezone, first_admin=first_admin)


@public_router.get("/v1/admin/orgs")
async def list_orgs(admin: AdminDep, gov: GovernanceDep) -> dict[str, Any]:
    return {"object": "list", "data": await gov.orgs.list_orgs(admin)}


@public_router.get("/v1/admin/org")
async def get_org(admin: AdminDep, gov: GovernanceDep) -> dict[str, Any]:
    return await gov.orgs.get_org(admin)


@public_router.patch("/v1/admin/org")
async def update_org(body: OrgBody, admin: AdminDep, gov: GovernanceDep) -> dict[str, Any]:
    return await gov.orgs.update_org(admin, body.changes())


@public_router.post("/v1/admin/pools", status_code=status.HTTP_201_CREATED)
async def create_pool(body: CreatePoolBody, admin: AdminDep, gov: GovernanceDep) -> dict[str, Any]:
    return await gov.pools.create_pool(admin, body.model_dump())


@public_router.get("/v1/admin/pools")
async def list_pools(
    admin: AdminDep, gov: GovernanceDep, owner_type: str | None = Query(default=None)
) -> dict[str, Any]:
    return {"object": "list", "data": await gov.pools.list_pools(admin, owner_type)}


@public_router.get("/v1/admin/pools/{pool_id}")
async def get_pool(pool_id: str, admin: AdminDep, gov: GovernanceDep) -> dict[str, Any]:
    return await gov.pools.get_pool(admin, pool_id)


@public_router.patch("/v1/admin/pools/{pool_id}")
async def update_pool(
    pool_id: str, body: UpdatePoolBody, admin: AdminDep, gov: GovernanceDep
) -> dict[str, Any]:
    return await gov.pools.update_pool(admin, pool_id, body.limit, body.period)


@public_router.delete("/v1/admin/pools/{pool_id}")
async def delete_pool(pool_id: str, admin: AdminDep, gov: GovernanceDep) -> dict[str, Any]:
    return await gov.pools.delete_pool(admin, pool_id)


@public_router.get("/v1/admin/sessions")
async def list_sessions(admin: AdminDep, gov: GovernanceDep) -> dict[str, Any]:
    return {"object": "list", "data": await gov.sessions.list_sessions(admin)}


@public_router.get("/v1/admin/sessions/{session_id}")
async def get_session(session_id: str, admin: AdminDep, gov: GovernanceDep) -> dict[str, Any]:
    return await gov.sessions.get_session(admin, session_id)


@public_router.put("/v1/admin/sessions/{session_id}/budget")
async def set_session_budget(
    session_id: str, body: SessionBudgetBody, admin: AdminDep, gov: GovernanceDep
) -> dict[str, Any]:
    return await gov.sessions.set_session_budget(admin, session_id, body.budget_usd_micros)


@public_router.post("/v1/admin/sessions/{session_id}/reset")
async def reset_session(session_id: str, admin: AdminDep, gov: GovernanceDep) -> dict[str, Any]:
    return await gov.sessions.reset_session(admin, session_id)


@public_router.post("/v1/admin/freezes", status_code=status.HTTP_201_CREATED)
async def create_freeze(body: FreezeBody, admin: AdminDep, freezes: FreezesDep) -> dict[str, Any]:
    return await freezes.admin_freeze(admin, body.target_type, body.target_id, body.reason, body.duration_s)


@public_router.get("/v1/admin/freezes")
async def list_freezes(admin: AdminDep, freezes: FreezesDep) -> dict[str, Any]:
    return {"object": "list", "data": await freezes.list_freezes(admin)}


@public_router.delete("/v1/admin/freezes/{target_type}/{target_id}")
async def delete_freeze(
    target_type: FreezeTarget, target_id: str, admin: AdminDep, freezes: FreezesDep
) -> dict[str, Any]:
    return await freezes.unfreeze(admin, target_type, target_id)


# --- the caller ----------------------------------------------------------------------------------------------


@public_router.get("/v1/users/me")
async def me(principal: PrincipalDep, gov: GovernanceDep) -> UserView:
    return UserView.model_validate(await gov.users.me(principal), from_attributes=True)


@public_router.get("/v1/users/me/quota")
async def my_quota(principal: PrincipalDep, gov: GovernanceDep) -> dict[str, Any]:
    return await gov.views.my_quota(principal)


@public_router.put("/v1/users/me/status")
async def set_status(body: StatusBody, principal: PrincipalDep, gov: GovernanceDep) -> UserView:
    return UserView.model_validate(
        await gov.users.set_my_status(principal, body.status), from_attributes=True
    )


@public_router.put("/v1/users/me/privacy")
async def set_privacy(body: PrivacyBody, principal: PrincipalDep, gov: GovernanceDep) -> dict[str, Any]:
    return await gov.users.set_my_privacy(principal, body.privacy)


@public_router.get("/v1/users/me/teams")
async def my_teams(principal: PrincipalDep, gov: GovernanceDep) -> dict[str, Any]:
    return {"object": "list", "data": await gov.teams.my_teams(principal)}


@public_router.get("/v1/users/me/keys")
async def list_keys(principal: PrincipalDep, gov: GovernanceDep) -> dict[str, Any]:
    return {"object": "list", "data": await gov.keys.list_keys(principal)}


@public_router.post("/v1/users/me/keys", status_code=status.HTTP_201_CREATED)
async def create_key(
    principal: PrincipalDep,
    gov: GovernanceDep,
    body: CreateKeyBody | None = Body(default=None),  # noqa: B008
) -> dict[str, Any]:
    return await gov.keys.create_key(principal, _set(body) if body is not None else {})


@public_router.patch("/v1/users/me/keys/{key_id}")
async def update_key(
    key_id: str, body: UpdateKeyBody, principal: PrincipalDep, gov: GovernanceDep
) -> dict[str, Any]:
    fields = body.model_dump(exclude_unset=True)
    return await gov.keys.update_key(principal, key_id, fields, admin=principal.is_admin)


@public_router.delete("/v1/users/me/keys/{key_id}")
async def revoke_key(key_id: str, principal: PrincipalDep, gov: GovernanceDep) -> dict[str, Any]:
    return await gov.keys.revoke_key(principal, key_id)


@public_router.post("/v1/users/me/keys/{key_id}/rotate", status_code=status.HTTP_201_CREATED)
async def rotate_key(key_id: str, principal: PrincipalDep, gov: GovernanceDep) -> dict[str, Any]:
    return await gov.keys.rotate_key(principal, key_id)


# --- approvals -----------------------------------------------------------------------------------------------


@public_router.post("/v1/approvals", status_code=status.HTTP_201_CREATED)
async def request_approval(body: ApprovalBody, principal: PrincipalDep, gov: GovernanceDep) -> dict[str, Any]:
    return await gov.approvals.request_approval(principal, body.requested_credits, body.reason, body.priority)


@public_router.get("/v1/approvals")
async def my_approvals(principal: PrincipalDep, gov: GovernanceDep) -> dict[str, Any]:
    return {"object": "list", "data": await gov.approvals.my_approvals(principal)}


@public_router.get("/v1/approvals/pending")
async def pending_approvals(principal: PrincipalDep, gov: GovernanceDep) -> dict[str, Any]:
    return {"object": "list", "data": await gov.approvals.pending_approvals(principal)}


@public_router.post("/v1/approvals/{approval_id}/approve")
async def approve(
    approval_id: str,
    principal: PrincipalDep,
    gov: GovernanceDep,
    body: ApproveBody | None = Body(default=None),  # noqa: B008
) -> dict[str, Any]:
    amount = body.approved_credits if body is not None else None
    return await gov.approvals.decide_approval(
        principal, approval_id, approve=True, amount=amount, reason=None
    )


@public_router.post("/v1/approvals/{approval_id}/reject")
async def reject(
    approval_id: str,
    principal: PrincipalDep,
    gov: GovernanceDep,
    body: RejectBody | None = Body(default=None),  # noqa: B008
) -> dict[str, Any]:
    reason = body.reason if body is not None else ""
    return await gov.approvals.decide_approval(
        principal, approval_id, approve=False, amount=None, reason=reason
    )


# --- Leaky Tokens aliases ------------------------------------------------------------------------------------


@public_router.get("/api/v1/tokens/status")
async def tokens_status(principal: PrincipalDep, gov: GovernanceDep) -> dict[str, Any]:
    return await gov.tokens.tokens_status(principal)


@public_router.get("/api/v1/tokens/quota")
async def tokens_quota(
    principal: PrincipalDep, gov: GovernanceDep, provider: str | None = Query(default=None)
) -> dict[str, Any]:
    return await gov.tokens.tokens_quota(principal, provider)


@public_router.get("/api/v1/tokens/quota/org")
async def tokens_org_quota(principal: PrincipalDep, gov: GovernanceDep) -> dict[str, Any]:
    return await gov.tokens.tokens_org_quota(principal)


@public_router.post("/api/v1/tokens/consume")
async def tokens_consume(body: ConsumeBody, principal: PrincipalDep, gov: GovernanceDep) -> dict[str, Any]:
    return await gov.tokens.consume(principal, body.provider, body.tokens)
