"""`POST /internal/admit` and `POST /internal/release` on the fast path (see leaky_common.serve.HotRoute): same
contracts as the FastAPI routes in routes/internal.py, which stay for the OpenAPI docs, without FastAPI's
per-request layers."""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from leaky_common.auth import ASSERTION_HEADER, AssertionVerifier
from leaky_common.contracts import AdmitRequest, ReleaseRequest, ReleaseResponse
from leaky_common.errors import InvalidRequest, ServiceError, error_response
from lt_quota.usecases.admission import Admission
from lt_quota.usecases.settlement import Settlement

M = TypeVar("M", bound=BaseModel)


async def _internal_body(request: Request, model: type[M]) -> M:
    """The body of an internal call (the caller assertion is checked before anything else is read)."""
    verifier: AssertionVerifier = request.app.state.verifier
    verifier.caller(request.headers.get(ASSERTION_HEADER))
    try:
        return model.model_validate_json(await request.body())
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first["loc"]) or None
        raise InvalidRequest(f"{param}: {first['msg']}", param=param) from exc


async def admit(request: Request) -> Response:
    """Authenticate, rate-limit and reserve in one call (the caller assertion is checked before anything else)."""
    try:
        body = await _internal_body(request, AdmitRequest)
        # Earlier answers' releases ride on this admission: Redis runs them first, in the same round trip.
        admission: Admission = request.app.state.quota.admission
        result = await admission.admit(body)
    except ServiceError as exc:
        return error_response(exc.status, exc.body(), exc.headers)
    return Response(result.model_dump_json(), media_type="application/json")


async def release(request: Request) -> Response:
    """Shrink a reservation to what its answer used, before the client has the whole answer."""
    try:
        body = await _internal_body(request, ReleaseRequest)
        settlement: Settlement = request.app.state.quota.settlement
        released = await settlement.release(body.reservation_id, body.total_tokens, body.cost_usd_micros)
    except ServiceError as exc:
        return error_response(exc.status, exc.body(), exc.headers)
    return Response(ReleaseResponse(released=released).model_dump_json(), media_type="application/json")
