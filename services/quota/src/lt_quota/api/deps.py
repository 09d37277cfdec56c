"""FastAPI dependencies: who is calling and the use cases the routes call.

Who is calling comes from `leaky_common.api` (`CurrentPrincipal`, `AdminPrincipal`, `InternalCaller`).
`ManagementDep` is the management capability (orgs, teams, users, keys, pools, approvals, session budgets,
quota views)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from lt_quota.usecases.admission import Admission
from lt_quota.usecases.freezes import Freezes
from lt_quota.usecases.management import Management
from lt_quota.usecases.settlement import Settlement
from lt_quota.usecases.signin import SignIn

__all__ = ["AdmissionDep", "FreezesDep", "ManagementDep", "SettlementDep", "SignInDep"]


async def get_admission(request: Request) -> Admission:
    """Authentication and admission."""
    admission: Admission = request.app.state.quota.admission
    return admission


async def get_freezes(request: Request) -> Freezes:
    """Freezes of sessions, keys and users."""
    freezes: Freezes = request.app.state.quota.freezes
    return freezes


async def get_management(request: Request) -> Management:
    """Orgs, teams, users, keys, pools, approvals, session budgets and quota views."""
    management: Management = request.app.state.quota.management
    return management


async def get_settlement(request: Request) -> Settlement:
    """Releases and settlement of reservations."""
    settlement: Settlement = request.app.state.quota.settlement
    return settlement


async def get_signin(request: Request) -> SignIn:
    """Passwords, sign-in sessions and access tokens."""
    signin: SignIn = request.app.state.quota.signin
    return signin


AdmissionDep = Annotated[Admission, Depends(get_admission)]
FreezesDep = Annotated[Freezes, Depends(get_freezes)]
ManagementDep = Annotated[Management, Depends(get_management)]
SettlementDep = Annotated[Settlement, Depends(get_settlement)]
SignInDep = Annotated[SignIn, Depends(get_signin)]
