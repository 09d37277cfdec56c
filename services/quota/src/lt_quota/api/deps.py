"""FastAPI dependencies: the service, the internal token and the caller's principal."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from leaky_common.auth import Principal, principal_from_headers, token_matches
from leaky_common.errors import Unauthorized
from lt_quota.governance import Governance
from lt_quota.service import QuotaService

__all__ = ["AdminDep", "GovernanceDep", "InternalDep", "PrincipalDep", "ServiceDep"]


async def get_service(request: Request) -> QuotaService:
    service: QuotaService = request.app.state.service
    return service


ServiceDep = Annotated[QuotaService, Depends(get_service)]


async def get_governance(request: Request) -> Governance:
    governance: Governance = request.app.state.governance
    return governance


GovernanceDep = Annotated[Governance, Depends(get_governance)]


async def require_internal(
    service: ServiceDep, token: Annotated[str | None, Header(alias="X-LT-Internal-Token")] = None
) -> None:
    if not token_matches(token, service.settings.internal_token):
        raise Unauthorized("missing or invalid internal token", code="invalid_internal_token")


async def get_principal(
    service: ServiceDep,
    principal: Annotated[str | None, Header(alias="X-LT-Principal")] = None,
    token: Annotated[str | None, Header(alias="X-LT-Internal-Token")] = None,
) -> Principal:
    return principal_from_headers(principal, token, service.settings.internal_token)


async def get_admin(
    service: ServiceDep,
    principal: Annotated[str | None, Header(alias="X-LT-Principal")] = None,
    token: Annotated[str | None, Header(alias="X-LT-Internal-Token")] = None,
) -> Principal:
    return principal_from_headers(principal, token, service.settings.internal_token, admin=True)


InternalDep = Depends(require_internal)
PrincipalDep = Annotated[Principal, Depends(get_principal)]
AdminDep = Annotated[Principal, Depends(get_admin)]
