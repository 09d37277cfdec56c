"""The UsageRecorded event of each request: admitted (quota settles its reservation from it), blocked by quota,
or rejected before admission."""

from __future__ import annotations

from leaky_common.contracts import AdmitRequest
from leaky_common.errors import ServiceError, Unauthorized
from leaky_common.events import UsageRecorded
from lt_gateway.domain.call import Call
from lt_gateway.domain.requests import ParsedRequest
from lt_gateway.domain.usage import Usage


def settled_event(
    call: Call,
    usage: Usage,
    cost: int,
    latency_ms: int,
    outcome: tuple[str, int, str | None],
    fingerprint: str | None,
) -> UsageRecorded:
    """An admitted request's usage; `outcome` is (status, HTTP status, error code); `fingerprint` is keyed
    (`Fingerprinter`), never the prompt's plain digest."""
    admitted, p = call.admitted, call.admitted.principal
    status, http_status, error_code = outcome
    return UsageRecorded(
        producer="gateway",
        correlation_id=call.request_id,
        request_id=call.request_id,
        reservation_id=admitted.reservation_id,
        org_id=p.org_id,
        team_id=p.team_id,
        user_id=p.user_id,
        key_id=p.key_id,
        session_id=call.session_id,
        pool_id=admitted.pool_id,
        quota_source=admitted.quota_source,
        model=call.spec.name,
        provider=call.spec.provider,
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
        cached_tokens=usage.cached_tokens,
        cost_usd_micros=cost,
        latency_ms=latency_ms,
        status=status,
        http_status=http_status,
        error_code=error_code,
        stream=call.parsed.stream,
        privacy_strict=admitted.privacy_strict,
        prompt_fingerprint=fingerprint,
    )


def blocked_event(
    req: AdmitRequest, parsed: ParsedRequest, http_status: int, code: str | None, latency_ms: int
) -> UsageRecorded:
    """A request quota refused (no reservation; no fingerprint either: without an org there is no key)."""
    return UsageRecorded(
        producer="gateway",
        correlation_id=req.request_id,
        request_id=req.request_id,
        session_id=req.session_id,
        model=req.model,
        provider=req.provider,
        latency_ms=latency_ms,
        status="blocked",
        http_status=http_status,
        error_code=code,
        stream=parsed.stream,
    )


def rejected_event(
    request_id: str,
    session_id: str | None,
    model: str | None,
    provider: str,
    exc: ServiceError,
    latency_ms: int,
    reservation: tuple[str, str] | None = None,
) -> UsageRecorded:
    """A request refused before admission: malformed (error), keyless (blocked), unknown model, quota away.
    `reservation` (id, org): the reservation asked for whose answer never came, released at zero by quota."""
    return UsageRecorded(
        producer="gateway",
        correlation_id=request_id,
        request_id=request_id,
        reservation_id=reservation[0] if reservation else None,
        org_id=reservation[1] if reservation else None,
        session_id=session_id,
        model=(model or "")[:200],
        provider=provider,
        latency_ms=latency_ms,
        status="blocked" if isinstance(exc, Unauthorized) else "error",
        http_status=exc.status,
        error_code=exc.code,
        stream=False,
    )
