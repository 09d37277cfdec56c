"""The caller's own routes (`/v1/users/me/*`), approvals (team management checked per request) and the Leaky
Tokens aliases (`/api/v1/tokens/*`)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Query, status

from leaky_common.api import CurrentPrincipal, error_responses
from lt_quota.api import alias_views, views
from lt_quota.api.deps import ManagementDep, SignInDep
from lt_quota.api.schemas import (
    ApprovalBody,
    ApproveBody,
    ConsumeBody,
    CreateKeyBody,
    PasswordBody,
    PrivacyBody,
    RejectBody,
    StatusBody,
    UpdateKeyBody,
    given_fields,
)
from lt_quota.api.views import UserView

__all__ = ["router"]

router = APIRouter()


# --- the caller ----------------------------------------------------------------------------------------------


@router.get("/v1/users/me", response_model=views.UserView, responses=error_responses(404))
async def me(principal: CurrentPrincipal, gov: ManagementDep) -> UserView:
    return UserView.model_validate(await gov.users.me(principal), from_attributes=True)


@router.get("/v1/users/me/quota", response_model=views.QuotaView, responses=error_responses(404))
async def my_quota(principal: CurrentPrincipal, gov: ManagementDep) -> dict[str, Any]:
    return await gov.views.my_quota(principal)


@router.put("/v1/users/me/status", response_model=views.UserView, responses=error_responses(400, 403, 404))
async def set_status(body: StatusBody, principal: CurrentPrincipal, gov: ManagementDep) -> UserView:
    """Go on vacation (ending `until`, at most `LT_VACATION_MAX_DAYS` ahead, the default) or come back; at
    most `LT_STATUS_CHANGES_PER_DAY` changes a day, each recorded in the audit log."""
    return UserView.model_validate(
        await gov.users.set_my_status(principal, body.status, body.until), from_attributes=True
    )


@router.put(
    "/v1/users/me/password",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(400, 401, 403, 409),
)
async def set_password(body: PasswordBody, principal: CurrentPrincipal, signin: SignInDep) -> None:
    """Set or change the caller's sign-in password (argon2id; at least `LT_PASSWORD_MIN_LENGTH` characters).
    Every sign-in session of the caller ends. Over an access token, `current_password` is required once a
    password is set; with an API key it is not. 409 if a user of another org already signs in with the same
    email."""
    await signin.set_password(principal, body.password, body.current_password)


@router.put(
    "/v1/users/me/privacy",
    response_model=views.PrivacyView,
)
async def set_privacy(body: PrivacyBody, principal: CurrentPrincipal, gov: ManagementDep) -> dict[str, Any]:
    return await gov.users.set_my_privacy(principal, body.privacy)


@router.get(
    "/v1/users/me/teams",
    response_model=views.MyTeamList,
    response_model_exclude_unset=True,
    responses=error_responses(404),
)
async def my_teams(principal: CurrentPrincipal, gov: ManagementDep) -> dict[str, Any]:
    return {"object": "list", "data": await gov.teams.my_teams(principal)}


@router.get(
    "/v1/users/me/keys",
    response_model=views.KeyList,
)
async def list_keys(principal: CurrentPrincipal, gov: ManagementDep) -> dict[str, Any]:
    return {"object": "list", "data": await gov.keys.list_keys(principal)}


@router.post(
    "/v1/users/me/keys",
    status_code=status.HTTP_201_CREATED,
    response_model=views.NewKeyView,
    responses=error_responses(400, 404),
)
async def create_key(
    principal: CurrentPrincipal,
    gov: ManagementDep,
    body: CreateKeyBody | None = Body(default=None),  # noqa: B008
) -> dict[str, Any]:
    return await gov.keys.create_key(principal, given_fields(body) if body is not None else {})


@router.patch("/v1/users/me/keys/{key_id}", response_model=views.KeyView, responses=error_responses(400, 404))
async def update_key(
    key_id: str, body: UpdateKeyBody, principal: CurrentPrincipal, gov: ManagementDep
) -> dict[str, Any]:
    fields = body.model_dump(exclude_unset=True)
    return await gov.keys.update_key(principal, key_id, fields, admin=principal.is_admin)


@router.delete(
    "/v1/users/me/keys/{key_id}", response_model=views.RevokedKeyView, responses=error_responses(404)
)
async def revoke_key(key_id: str, principal: CurrentPrincipal, gov: ManagementDep) -> dict[str, Any]:
    return await gov.keys.revoke_key(principal, key_id)


@router.post(
    "/v1/users/me/keys/{key_id}/rotate",
    status_code=status.HTTP_201_CREATED,
    response_model=views.RotatedKeyView,
    responses=error_responses(404),
)
async def rotate_key(key_id: str, principal: CurrentPrincipal, gov: ManagementDep) -> dict[str, Any]:
    return await gov.keys.rotate_key(principal, key_id)


# --- approvals -----------------------------------------------------------------------------------------------


@router.post(
    "/v1/approvals",
    status_code=status.HTTP_201_CREATED,
    response_model=views.ApprovalView,
    responses=error_responses(400, 404),
)
async def request_approval(
    body: ApprovalBody, principal: CurrentPrincipal, gov: ManagementDep
) -> dict[str, Any]:
    return await gov.approvals.request_approval(principal, body.requested_credits, body.reason, body.priority)


@router.get(
    "/v1/approvals",
    response_model=views.ApprovalList,
)
async def my_approvals(principal: CurrentPrincipal, gov: ManagementDep) -> dict[str, Any]:
    return {"object": "list", "data": await gov.approvals.my_approvals(principal)}


@router.get(
    "/v1/approvals/pending",
    response_model=views.ApprovalList,
)
async def pending_approvals(principal: CurrentPrincipal, gov: ManagementDep) -> dict[str, Any]:
    return {"object": "list", "data": await gov.approvals.pending_approvals(principal)}


@router.post(
    "/v1/approvals/{approval_id}/approve",
    response_model=views.ApprovalView,
    responses=error_responses(403, 404, 409),
)
async def approve(
    approval_id: str,
    principal: CurrentPrincipal,
    gov: ManagementDep,
    body: ApproveBody | None = Body(default=None),  # noqa: B008
) -> dict[str, Any]:
    amount = body.approved_credits if body is not None else None
    return await gov.approvals.decide_approval(
        principal, approval_id, approve=True, amount=amount, reason=None
    )


@router.post(
    "/v1/approvals/{approval_id}/reject",
    response_model=views.ApprovalView,
    responses=error_responses(403, 404, 409),
)
async def reject(
    approval_id: str,
    principal: CurrentPrincipal,
    gov: ManagementDep,
    body: RejectBody | None = Body(default=None),  # noqa: B008
) -> dict[str, Any]:
    reason = body.reason if body is not None else ""
    return await gov.approvals.decide_approval(
        principal, approval_id, approve=False, amount=None, reason=reason
    )


# --- Leaky Tokens aliases ------------------------------------------------------------------------------------


@router.get(
    "/api/v1/tokens/status", response_model=alias_views.TokensStatusView, responses=error_responses(404)
)
async def tokens_status(principal: CurrentPrincipal, gov: ManagementDep) -> dict[str, Any]:
    return await gov.tokens.tokens_status(principal)


@router.get(
    "/api/v1/tokens/quota", response_model=alias_views.TokensQuotaView, responses=error_responses(404)
)
async def tokens_quota(
    principal: CurrentPrincipal, gov: ManagementDep, provider: str | None = Query(default=None)
) -> dict[str, Any]:
    return await gov.tokens.tokens_quota(principal, provider)


@router.get(
    "/api/v1/tokens/quota/org", response_model=alias_views.OrgQuotaView, responses=error_responses(404)
)
async def tokens_org_quota(principal: CurrentPrincipal, gov: ManagementDep) -> dict[str, Any]:
    return await gov.tokens.tokens_org_quota(principal)


@router.post(
    "/api/v1/tokens/consume",
    response_model=alias_views.ConsumeView,
    responses=error_responses(400, 402, 403, 429),
)
async def tokens_consume(
    body: ConsumeBody, principal: CurrentPrincipal, gov: ManagementDep
) -> dict[str, Any]:
    return await gov.tokens.consume(principal, body.provider, body.tokens)
