"""HTTP routes: internal (gateway only) and public (reached through the gateway with a principal).

Admin routes need an admin principal and act within the admin's org; `/v1/users/me/*` act on the caller;
`/v1/approvals/*` check team management per request; `/api/v1/tokens/*` are Leaky Tokens' paths."""

from __future__ import annotations

from fastapi import APIRouter

from leaky_common.api import error_responses
from lt_quota.api.routes import admin, caller, internal

__all__ = ["internal_router", "public_router"]

internal_router = internal.router
public_router = APIRouter(tags=["quota"], responses=error_responses(401))
public_router.include_router(admin.router)
public_router.include_router(caller.router)
