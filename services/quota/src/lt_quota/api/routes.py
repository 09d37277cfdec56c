"""HTTP routes: internal (gateway only) and public (reached through the gateway with a principal)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Response, status

from leaky_common.auth import Principal
from leaky_common.contracts import AdmitRequest, AdmitResponse, AuthenticateRequest
from lt_quota.api.deps import AdminDep, InternalDep, PrincipalDep, ServiceDep
from lt_quota.api.schemas import (
    AddMemberBody,
    CreateKeyBody,
    CreateTeamBody,
    CreateUserBody,
    FreezeBody,
    FreezeTarget,
    UserView,
)

__all__ = ["internal_router", "public_router"]

internal_router = APIRouter(prefix="/internal", tags=["internal"], dependencies=[InternalDep])
public_router = APIRouter(tags=["quota"])


@internal_router.post("/authenticate")
async def authenticate(body: AuthenticateRequest, service: ServiceDep) -> Principal:
    return await service.authenticate(body.api_key)


@internal_router.post("/admit")
async def admit(body: AdmitRequest, service: ServiceDep) -> AdmitResponse:
    return await service.admit(body)


@public_router.post("/v1/admin/users", status_code=status.HTTP_201_CREATED)
async def create_user(body: CreateUserBody, admin: AdminDep, service: ServiceDep) -> dict[str, Any]:
    return await service.create_user(
        admin,
        email=body.email,
        name=body.name,
        personal_quota=body.personal_quota,
        team_id=body.team_id,
        role=body.role,
    )


@public_router.get("/v1/admin/users")
async def list_users(admin: AdminDep, service: ServiceDep) -> dict[str, Any]:
    users = await service.list_users(admin)
    data = [UserView.model_validate(u, from_attributes=True).model_dump() for u in users]
    return {"object": "list", "data": data}


@public_router.post("/v1/admin/teams", status_code=status.HTTP_201_CREATED)
async def create_team(body: CreateTeamBody, admin: AdminDep, service: ServiceDep) -> dict[str, Any]:
    return await service.create_team(admin, name=body.name, pool=body.pool)


@public_router.post("/v1/admin/teams/{team_id}/members/{user_id}")
async def add_member(
    team_id: str,
    user_id: str,
    admin: AdminDep,
    service: ServiceDep,
    response: Response,
    body: AddMemberBody | None = Body(default=None),  # noqa: B008
) -> dict[str, Any]:
    role = body.role if body is not None else "member"
    membership, created = await service.add_member(admin, team_id, user_id, role)
    response.status_code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
    return membership


@public_router.post("/v1/admin/freezes", status_code=status.HTTP_201_CREATED)
async def create_freeze(body: FreezeBody, admin: AdminDep, service: ServiceDep) -> dict[str, Any]:
    return await service.admin_freeze(admin, body.target_type, body.target_id, body.reason, body.duration_s)


@public_router.get("/v1/admin/freezes")
async def list_freezes(admin: AdminDep, service: ServiceDep) -> dict[str, Any]:
    return {"object": "list", "data": await service.list_freezes(admin)}


@public_router.delete("/v1/admin/freezes/{target_type}/{target_id}")
async def delete_freeze(
    target_type: FreezeTarget, target_id: str, admin: AdminDep, service: ServiceDep
) -> dict[str, Any]:
    return await service.unfreeze(admin, target_type, target_id)


@public_router.get("/v1/users/me")
async def me(principal: PrincipalDep, service: ServiceDep) -> UserView:
    return UserView.model_validate(await service.me(principal), from_attributes=True)


@public_router.get("/v1/users/me/quota")
async def my_quota(principal: PrincipalDep, service: ServiceDep) -> dict[str, Any]:
    return await service.my_quota(principal)


@public_router.get("/v1/users/me/keys")
async def list_keys(principal: PrincipalDep, service: ServiceDep) -> dict[str, Any]:
    return {"object": "list", "data": await service.list_keys(principal)}


@public_router.post("/v1/users/me/keys", status_code=status.HTTP_201_CREATED)
async def create_key(
    principal: PrincipalDep,
    service: ServiceDep,
    body: CreateKeyBody | None = Body(default=None),  # noqa: B008
) -> dict[str, Any]:
    return await service.create_key(principal, body.name if body is not None else "")


@public_router.delete("/v1/users/me/keys/{key_id}")
async def revoke_key(key_id: str, principal: PrincipalDep, service: ServiceDep) -> dict[str, Any]:
    return await service.revoke_key(principal, key_id)
