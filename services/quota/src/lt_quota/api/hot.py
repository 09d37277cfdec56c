"""`POST /internal/admit` and `POST /internal/release` on the fast paths: over HTTP without FastAPI's per-request
layers (see leaky_common.serve.HotRoute), and over the internal link (leaky_common.link, `LT_LINK_PORT`). Same
contracts as the FastAPI routes in routes/internal.py, which stay for the OpenAPI docs; both transports run
the same calls below, the caller assertion checked before anything else is read."""

from __future__ import annotations

from typing import TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from leaky_common.auth import ASSERTION_HEADER, AssertionVerifier
from leaky_common.contracts import (
    QUOTA_LINK_ADMIT,
    QUOTA_LINK_RELEASE,
    AdmitRequest,
    ReleaseRequest,
    ReleaseResponse,
)
from leaky_common.errors import InvalidRequest, ServiceError
from leaky_common.link import Answer, LinkOp
from lt_quota.usecases.admission import Admission
from lt_quota.usecases.settlement import Settlement

M = TypeVar("M", bound=BaseModel)


def _parse(model: type[M], body: bytes) -> M:
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first["loc"]) or None
        raise InvalidRequest(f"{param}: {first['msg']}", param=param) from exc


def _refusal(exc: ServiceError) -> Answer:
    return Answer(exc.status, exc.headers.get("Retry-After", ""), orjson.dumps(exc.body()))


async def _admit(admission: Admission, body: bytes) -> Answer:
    """Authenticate the key, rate-limit and reserve in one call (the caller assertion was checked). Earlier
    answers' releases ride on this admission: Redis runs them first, in the same round trip."""
    try:
        result = await admission.admit(_parse(AdmitRequest, body))
    except ServiceError as exc:
        return _refusal(exc)
    return Answer(200, "", result.model_dump_json().encode())


async def _release(settlement: Settlement, body: bytes) -> Answer:
    """Shrink a reservation to what its answer used, before the client has the whole answer (the caller
    assertion was checked)."""
    try:
        release = _parse(ReleaseRequest, body)
        released = await settlement.release(
            release.reservation_id, release.total_tokens, release.cost_usd_micros
        )
    except ServiceError as exc:
        return _refusal(exc)
    return Answer(200, "", ReleaseResponse(released=released).model_dump_json().encode())


def _caller_refusal(verifier: AssertionVerifier, assertion: str | None) -> Answer | None:
    """The refusal of a call without a valid caller assertion, else None."""
    try:
        verifier.caller(assertion)
    except ServiceError as exc:
        return _refusal(exc)
    return None


async def admit_call(
    admission: Admission, verifier: AssertionVerifier, assertion: str | None, body: bytes
) -> Answer:
    """Check the caller assertion, then admit."""
    refused = _caller_refusal(verifier, assertion)
    return refused if refused is not None else await _admit(admission, body)


async def release_call(
    settlement: Settlement, verifier: AssertionVerifier, assertion: str | None, body: bytes
) -> Answer:
    """Check the caller assertion, then release."""
    refused = _caller_refusal(verifier, assertion)
    return refused if refused is not None else await _release(settlement, body)


def _response(answer: Answer) -> Response:
    headers = {"Retry-After": answer.retry_after} if answer.retry_after else None
    return Response(answer.body, status_code=answer.status, media_type="application/json", headers=headers)


def _refused(request: Request) -> Response | None:
    """The refusal of a call without a valid caller assertion (checked before the body is read), else None."""
    refused = _caller_refusal(request.app.state.verifier, request.headers.get(ASSERTION_HEADER))
    return _response(refused) if refused is not None else None


async def admit(request: Request) -> Response:
    """`POST /internal/admit` over HTTP."""
    if (refused := _refused(request)) is not None:
        return refused
    return _response(await _admit(request.app.state.quota.admission, await request.body()))


async def release(request: Request) -> Response:
    """`POST /internal/release` over HTTP."""
    if (refused := _refused(request)) is not None:
        return refused
    return _response(await _release(request.app.state.quota.settlement, await request.body()))


def link_ops(admission: Admission, settlement: Settlement, verifier: AssertionVerifier) -> list[LinkOp]:
    """The link's operations: admission and release, as their HTTP routes."""

    async def link_admit(assertion: str, body: bytes) -> Answer:
        return await admit_call(admission, verifier, assertion, body)

    async def link_release(assertion: str, body: bytes) -> Answer:
        return await release_call(settlement, verifier, assertion, body)

    return [
        LinkOp(QUOTA_LINK_ADMIT, "/internal/admit", link_admit),
        LinkOp(QUOTA_LINK_RELEASE, "/internal/release", link_release),
    ]
