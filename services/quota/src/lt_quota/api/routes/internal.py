"""Internal routes: only the gateway (or another internal service) calls them, with a signed caller
assertion (`X-LT-Assertion`)."""

from __future__ import annotations

from fastapi import APIRouter

from leaky_common.api import InternalCaller, error_responses
from leaky_common.auth import Principal
from leaky_common.contracts import (
    AdmitRequest,
    AdmitResponse,
    AuthenticateRequest,
    ProbeResponse,
    ReleaseRequest,
    ReleaseResponse,
)
from lt_quota.api.deps import AdmissionDep, SettlementDep

__all__ = ["router"]

router = APIRouter(
    prefix="/internal", tags=["internal"], dependencies=[InternalCaller], responses=error_responses(401)
)


@router.post("/authenticate")
async def authenticate(body: AuthenticateRequest, admission: AdmissionDep) -> Principal:
    return await admission.authenticate(body.api_key)


@router.post("/admit", responses=error_responses(400, 402, 403, 429))
async def admit(body: AdmitRequest, admission: AdmissionDep) -> AdmitResponse:
    return await admission.admit(body)


@router.post("/probe", responses=error_responses(503))
async def probe(admission: AdmissionDep) -> ProbeResponse:
    """The gateway's deep readiness probe: could quota admit now? Touches no key and records nothing."""
    return await admission.probe()


@router.post("/release", responses=error_responses(400))
async def release(body: ReleaseRequest, settlement: SettlementDep) -> ReleaseResponse:
    """Shrink a reservation to what its answer used (the gateway, before the client has the whole answer)."""
    released = await settlement.release(body.reservation_id, body.total_tokens, body.cost_usd_micros)
    return ReleaseResponse(released=released)
