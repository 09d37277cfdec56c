"""Admission (the hot path): authenticate a key, check its policy, then freezes, rate-limit buckets and every
cap with the balancer's alternatives, and reserve, all in one Redis call."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from typing import Any

from leaky_common.auth import Principal
from leaky_common.contracts import (
    AdmitRequest,
    AdmitResponse,
    ProbeResponse,
    RateLimitState,
    ReleaseRequest,
    new_reservation_id,
    org_tag,
)
from leaky_common.db import ping
from leaky_common.errors import Conflict, Forbidden, ServiceUnavailable, Unauthorized
from lt_quota.adapters import repository as repo
from lt_quota.adapters.metrics import ADMISSIONS, admission
from lt_quota.adapters.redis_state import AdmitArgs, Counter, reservation_fields
from lt_quota.domain import (
    AdmitDenied,
    AdmitGranted,
    Leg,
    check_key_policy,
    check_session,
    decision_label,
    denial,
    denied_cap,
    no_pool_for_model,
    parse_admit_result,
    privacy_strict,
    session_target,
)
from lt_quota.domain.records import KeyRecord
from lt_quota.usecases.context import QuotaContext
from lt_quota.usecases.freezes import Freezes
from lt_quota.usecases.reservations import DurableReservations

__all__ = ["ADMISSIONS", "Admission", "principal_of"]

logger = logging.getLogger(__name__)


def principal_of(record: KeyRecord) -> Principal:
    """The principal a key authenticates as."""
    return Principal(
        user_id=record.user_id,
        org_id=record.org_id,
        key_id=record.key_id,
        team_id=record.team_id,
        role="admin" if record.role == "admin" else "user",
        email=record.email,
        allowed_models=record.allowed_models,
        managed_team_ids=record.managed_team_ids,
        platform_admin=record.role == "admin" and record.platform,
    )


def _ratelimit(outcome: AdmitGranted) -> RateLimitState:
    return RateLimitState(
        limit_requests=outcome.limit_requests,
        remaining_requests=outcome.remaining_requests,
        reset_requests_s=outcome.reset_requests_ms / 1000,
        limit_tokens=outcome.limit_tokens,
        remaining_tokens=outcome.remaining_tokens,
        reset_tokens_s=outcome.reset_tokens_ms / 1000,
    )


class Admission:
    """Authentication and admission over the shared context; `durable` keeps the open reservations and
    restores what Redis lost."""

    def __init__(self, ctx: QuotaContext, freezes: Freezes, durable: DurableReservations) -> None:
        self.ctx = ctx
        self.freezes = freezes
        self.durable = durable

    async def authenticate(self, api_key: str) -> Principal:
        """Resolve a key to its principal for a management call; 401 if unknown, revoked or expired. The
        principal says whether the caller may change anything (`management_block`: a suspended user, a frozen
        key or user) and whether the key is restricted; every service enforces both (`refuse_if_blocked`)."""
        record = await self.ctx.key_record(api_key)
        async with self.ctx.db.acquire() as conn:
            frozen = await repo.caller_freezes(conn, self.ctx.now(), record.key_id, record.user_id)
            limits = await repo.key_limits(conn, record.key_id)
        block = None
        if record.status == "suspended":
            block = "user_suspended"
        elif "user" in frozen:
            block = "user_frozen"
        elif "key" in frozen:
            block = "key_frozen"
        return principal_of(record).model_copy(
            update={"management_block": block, "key_restricted": limits.restricted}
        )

    async def admit(self, req: AdmitRequest) -> AdmitResponse:
        """Authenticate, check policy, freezes and buckets, and reserve against every cap in one Redis call.

        The releases the request carries (earlier answers of the same gateway) go in the same round trip, ahead
        of the admission; if the admission stops before Redis (401, 403, no pool, an error), they are applied
        on their own all the same."""
        riding = list(req.releases)
        try:
            try:
                record = await self.ctx.key_record(req.api_key)
            except Unauthorized:
                admission("unauthorized").inc()
                raise
            return await self.admit_record(record, req, riding)
        finally:
            if riding:
                await self._release_alone(riding)

    async def _release_alone(self, releases: list[ReleaseRequest]) -> None:
        """Apply releases whose admission did not carry them to Redis (never raises: the usage events settle
        whatever is not released)."""
        for r, fields in zip(
            releases,
            await asyncio.gather(
                *(
                    self.ctx.state.release(r.reservation_id, r.total_tokens, r.cost_usd_micros)
                    for r in releases
                ),
                return_exceptions=True,
            ),
            strict=True,
        ):
            if isinstance(fields, BaseException):
                logger.warning(
                    "a release riding on an admission failed (%r); its usage event settles it", fields
                )
            elif fields is not None:
                self.durable.released(r.reservation_id, fields)

    async def probe(self) -> ProbeResponse:
        """A zero-cost check that admission could run now (the start-up probe): Postgres answers and Redis holds
        the admission script. No key, no bucket, no reservation: nothing is counted or recorded."""
        redis_ok = await self.ctx.state.admission_script_ready()
        report = ProbeResponse(postgres=await ping(self.ctx.db), redis=redis_ok)
        if not (report.postgres and report.redis):
            raise ServiceUnavailable(f"quota cannot admit: {report.model_dump()}", code="probe_failed")
        return report

    async def record_for(self, principal: Principal) -> KeyRecord:
        """The key record behind an authenticated principal (401 if the key is gone or revoked)."""
        record = None
        if principal.key_id:
            async with self.ctx.db.acquire() as conn:
                record = await repo.key_by_id(conn, principal.key_id)
        if record is None or record.revoked or record.user_id != principal.user_id:
            raise Unauthorized("invalid API key", code="invalid_api_key")
        return record

    def _check_policy(self, record: KeyRecord, req: AdmitRequest) -> bool:
        """The key's rules (403 suspended or not allowed); True if the request may draw on the team pool."""
        if record.status == "suspended":
            admission("suspended").inc()
            raise Forbidden("this user is suspended", code="user_suspended")
        try:
            critical = check_key_policy(record, req.model, req.priority)
        except Forbidden:
            admission("forbidden").inc()
            raise
        check_session(record.org, req.session_id)
        return critical

    async def admit_record(
        self, record: KeyRecord, req: AdmitRequest, riding: list[ReleaseRequest] | None = None
    ) -> AdmitResponse:
        """Admission for an authenticated key (`req.api_key` is not used). `riding`: releases to send ahead of
        the admission in its round trip; emptied once Redis ran them."""
        critical = self._check_policy(record, req)
        org = record.org
        governing = await self.ctx.governing(record)
        session = (
            await self.ctx.session_budget(org, req.session_id) if org is not None and req.session_id else None
        )
        counters, sources = self.ctx.counters(
            record,
            governing.pools,
            provider=req.provider,
            model=req.model,
            critical=critical,
            vacation=governing.vacation,
            session=session,
        )
        if not sources:
            admission("insufficient_quota").inc()
            raise no_pool_for_model()
        args = self._admit_args(record, req, counters, sources, await self.ctx.buckets_full_at())
        raw = await self._run_admission(args, riding)
        if raw[0] == "duplicate":
            admission("duplicate").inc()
            raise Conflict("this reservation id was admitted before", code="duplicate_reservation")
        outcome = parse_admit_result(raw)
        if isinstance(outcome, AdmitDenied) and outcome.reason == "no_pool":
            # A counter is missing: a new period or session, or Redis lost its state. Rebuild from Postgres.
            await self._restore(counters)
            args = replace(args, buckets_full_at=await self.ctx.buckets_full_at())
            raw = await self.ctx.state.admit(args)
            outcome = parse_admit_result(raw)
        if isinstance(outcome, AdmitDenied):
            admission(decision_label(outcome), denied_cap(outcome)).inc()
            raise denial(outcome, session.limit if session is not None else None)
        admission("admitted").inc()
        self.ctx.last_admitted_ms = max(self.ctx.last_admitted_ms, args.now_ms)
        if len(raw) > 11:  # the reservation's fields: into its durable record (queued, written in batches)
            self.durable.record(args.reservation_id, reservation_fields(raw[11]))
        # The script only answers with a source of the plan: anything else is a bug, not a default.
        chosen = next((c for c in counters if c.group == sources.index(outcome.source) + 1), None)
        return AdmitResponse(
            reservation_id=args.reservation_id,
            principal=principal_of(record),
            pool_id=Leg.parse(chosen.key, chosen.leg, chosen.unit).pool_id if chosen else None,
            quota_source=outcome.source,
            reserved_tokens=outcome.reserved,
            granted_output_tokens=outcome.granted_output,
            reserved_usd_micros=outcome.reserved_usd,
            privacy_strict=privacy_strict(req.privacy, record),
            ratelimit=_ratelimit(outcome),
            release_wait=outcome.snug,
        )

    async def _run_admission(self, args: AdmitArgs, riding: list[ReleaseRequest] | None) -> list[Any]:
        """The admission script's raw reply, the riding releases ahead of it in its round trip (`riding` is
        emptied once Redis ran them)."""
        if not riding:
            return await self.ctx.state.admit(args)
        released, raw = await self.ctx.state.release_then_admit(
            [(r.reservation_id, r.total_tokens, r.cost_usd_micros) for r in riding], args
        )
        for r, fields in zip(riding, released, strict=True):
            if fields is not None:
                self.durable.released(r.reservation_id, fields)
        riding.clear()
        return raw

    def _admit_args(
        self, record: KeyRecord, req: AdmitRequest, counters: list[Counter], sources: list[str], full_at: int
    ) -> AdmitArgs:
        """The admission script's inputs for one request."""
        now = self.ctx.clock()
        s = self.ctx.settings
        max_out = req.max_output_tokens or req.model_max_output_tokens
        sizes = self.ctx.bucket_sizes(record)
        return AdmitArgs(
            now_ms=now,
            org_id=record.org_id,
            user_id=record.user_id,
            key_id=record.key_id,
            session_id=session_target(record.org_id, req.session_id) if req.session_id else None,
            reservation_id=_reservation_id(record, req),
            request_id=req.request_id,
            expires_ms=now + s.reservation_ttl_s * 1000,
            prompt_tokens=req.prompt_tokens,
            max_output_tokens=max_out,
            # A client asking for fewer tokens than the minimum gets what it asked for, not a denial.
            min_output_tokens=min(req.min_output_tokens, max_out),
            # With max_tokens the bucket is charged the grant; without it, an expected answer length.
            bucket_output_tokens=-1 if req.max_output_tokens else s.bucket_output_estimate_tokens,
            input_price=req.input_usd_micros_per_mtok,
            output_price=req.output_usd_micros_per_mtok,
            key_requests=sizes.key_requests,
            key_tokens=sizes.key_tokens,
            user_requests=sizes.user_requests,
            user_tokens=sizes.user_tokens,
            period_ms=int(s.bucket_period_s * 1000),
            strategy=s.bucket_strategy,
            burst=s.bucket_burst,
            sources=tuple(sources),
            counters=tuple(counters),
            buckets_full_at=full_at,
        )

    async def _restore(self, counters: list[Counter]) -> None:
        # Redis lost its data (flushed or restarted empty)? Open reservations and freezes went with it: put
        # them back first, then rebuild the counters from the ledger and the open reservations.
        await self.durable.recover()
        await self.ctx.load_missing(counters)


def _reservation_id(record: KeyRecord, req: AdmitRequest) -> str:
    """The id the gateway chose for the reservation, if it is of the key's org; else a fresh one (the gateway's
    journal then cannot release it by id: it is charged at expiry if its answer is lost)."""
    proposed = req.reservation_id
    if proposed is not None and proposed.startswith(org_tag(record.org_id)):
        return proposed
    if proposed is not None:
        logger.warning("an admission proposed a reservation id of another org; quota named it")
    return new_reservation_id(record.org_id)
