"""`GET /internal/probe`: the deep readiness probe (gateway -> quota -> provider), for internal callers only
(a caller assertion, `X-LT-Assertion`).

`make up` calls it instead of sending a completion with the admin key: it proves the whole path without being
a governed request (see `usecases.probe`). Nothing it does is charged, counted, detected or reported.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel

from leaky_common.api import InternalCaller, error_responses
from lt_gateway.api.deps import ProbeDep

__all__ = ["ProbeView", "router"]

router = APIRouter(
    prefix="/internal", tags=["internal"], dependencies=[InternalCaller], responses=error_responses(401)
)


class ProbeView(BaseModel):
    """The path answered end to end; nothing was recorded."""

    status: str = "ok"
    model: str
    provider: str
    quota_ms: int
    provider_ms: int


@router.get("/probe", responses=error_responses(400, 404, 502, 503, 504))
async def probe(
    probe: ProbeDep, model: Annotated[str, Query(min_length=1, max_length=200)] = "mock-gpt"
) -> ProbeView:
    """Quota's zero-cost admission check, then one output token from `model`'s provider (default mock-gpt).

    Needs a caller assertion (`X-LT-Assertion`, docs/security.md), never an API key: 401 otherwise. 503 names what failed.
    """
    report = await probe.run(model)
    return ProbeView(
        model=report.model,
        provider=report.provider,
        quota_ms=report.quota_ms,
        provider_ms=report.provider_ms,
    )
