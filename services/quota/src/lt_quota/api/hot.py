"""`POST /internal/admit` on the fast path (see leaky_common.serve.HotRoute): same contract as the FastAPI
route in routes/internal.py, which stays for the OpenAPI docs, without FastAPI's per-request layers."""

from __future__ import annotations

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response

from leaky_common.auth import ASSERTION_HEADER, AssertionVerifier
from leaky_common.contracts import AdmitRequest
from leaky_common.errors import InvalidRequest, ServiceError, error_response
from lt_quota.usecases.admission import Admission


async def admit(request: Request) -> Response:
    """Authenticate, rate-limit and reserve in one call (the caller assertion is checked before anything else)."""
    try:
        verifier: AssertionVerifier = request.app.state.verifier
        verifier.caller(request.headers.get(ASSERTION_HEADER))
        try:
            body = AdmitRequest.model_validate_json(await request.body())
        except ValidationError as exc:
            first = exc.errors()[0]
            param = ".".join(str(p) for p in first["loc"]) or None
            raise InvalidRequest(f"{param}: {first['msg']}", param=param) from exc
        admission: Admission = request.app.state.quota.admission
        result = await admission.admit(body)
    except ServiceError as exc:
        return error_response(exc.status, exc.body(), exc.headers)
    return Response(result.model_dump_json(), media_type="application/json")
