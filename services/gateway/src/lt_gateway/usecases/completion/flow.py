"""The governed hot path of `/v1/chat/completions`, `/v1/completions` and `/v1/embeddings`.

validate -> one call to quota (auth, freezes, buckets, reservation) -> provider (capped at the granted output
budget; retries and fallbacks inside) -> release the reservation's unused part (on a snug budget before the
last bytes of the answer reach the client; otherwise with the next admission) -> respond with usage and cost
-> queue a UsageRecorded event, which quota settles the reservation from. Every request produces exactly one
usage event and one JSON log line.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

import orjson

from leaky_common.contracts import AdmitRequest, AdmitResponse, new_reservation_id
from leaky_common.errors import ServiceError, ServiceUnavailable
from lt_gateway.adapters.model_table import ModelTable
from lt_gateway.adapters.providers import Provider
from lt_gateway.adapters.quota_client import Denial, QuotaClient
from lt_gateway.adapters.usage_sink import UsageSink
from lt_gateway.domain.admission import admit_request, servable
from lt_gateway.domain.call import Call
from lt_gateway.domain.fingerprint import Fingerprinter
from lt_gateway.domain.models import ModelSpec
from lt_gateway.domain.pricing import ZERO_COST, format_usd
from lt_gateway.domain.requests import GovernanceHeaders, Kind, ParsedRequest
from lt_gateway.domain.usage import Usage, base64_embeddings
from lt_gateway.usecases.completion.ledger import UsageLedger
from lt_gateway.usecases.completion.stream import relay
from lt_gateway.usecases.completion.upstream import Upstream

JSON = "application/json"

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class Reply:
    """What to answer: a JSON body, or a stream of server-sent events."""

    status: int
    headers: dict[str, str]
    body: bytes = b""
    stream: AsyncGenerator[bytes, None] | None = None
    media_type: str = JSON


def error_reply(
    status: int, body: dict[str, Any], request_id: str, headers: dict[str, str] | None = None
) -> Reply:
    """An OpenAI-shaped error; nothing was charged."""
    hdrs = {"x-request-id": request_id, "x-leaky-tokens-cost-usd": ZERO_COST, **(headers or {})}
    return Reply(status, hdrs, orjson.dumps(body))


class ClientGone(ServiceError):
    """The client closed the connection before its answer (nginx's 499): recorded, never sent."""

    status = 499
    type = "client_closed_request"
    default_code = "client_disconnected"


class CompletionFlow:
    """Admits, calls the provider and accounts for one governed request."""

    def __init__(
        self,
        *,
        models: ModelTable,
        providers: dict[str, Provider],
        quota: QuotaClient,
        usage: UsageSink,
        release_timeout_s: float = 0.5,
        release_before_end: bool = True,
        fingerprints: Fingerprinter | None = None,
    ) -> None:
        self.models = models
        self.quota = quota
        self.upstream = Upstream(models, providers)
        # Without a configured secret, fingerprints are keyed by a secret of this process only.
        self.ledger = UsageLedger(usage, models, fingerprints or Fingerprinter(os.urandom(32)))
        self.release_timeout_s = release_timeout_s
        self.release_before_end = release_before_end

    async def release(self, call: Call, usage: Usage) -> None:
        """Give back the unused part of the reservation, so the client's next request finds it free (the usage
        event stays the settlement; a failed release only delays that)."""
        if not self.release_before_end:
            return
        reservation_id, cost = call.admitted.reservation_id, call.cost(usage)
        if call.admitted.release_wait:  # a snug budget: the next request could need these tokens at once
            await self.quota.release(reservation_id, usage.total_tokens, cost, self.release_timeout_s)
            return
        # Twice this reservation stays free everywhere: the release rides on the next admission (applied before
        # it) or goes out on its own within a few milliseconds; the answer does not wait for it.
        self.quota.release_later(reservation_id, usage.total_tokens, cost)

    def resolve(self, parsed: ParsedRequest) -> ModelSpec:
        """The model the request is for (404/400 if it cannot serve it)."""
        return servable(parsed, self.models.get(parsed.model))

    def reject(
        self,
        request_id: str,
        session_id: str | None,
        model: str | None,
        kind: Kind,
        exc: ServiceError,
        started: float,
        provider: str | None = None,
        reservation: tuple[str, str] | None = None,
    ) -> Reply:
        """A request refused before it was admitted: recorded, and answered with its error."""
        self.ledger.rejected(request_id, session_id, model, kind, exc, started, provider, reservation)
        return error_reply(exc.status, exc.body(), request_id, exc.headers)

    async def run(
        self,
        parsed: ParsedRequest,
        spec: ModelSpec,
        gov: GovernanceHeaders,
        api_key: str,
        request_id: str,
        started: float,
        org_id: str | None = None,
    ) -> Reply:
        """Admit with quota, then answer from the provider (a quota refusal is passed on as is). `org_id`: the
        key's org (from the key check), in which the gateway names the reservation before asking for it."""
        reservation_id = new_reservation_id(org_id) if org_id is not None else None
        chain = self.upstream.chain(parsed, spec)
        admit_req = admit_request(parsed, chain, api_key, request_id, gov, reservation_id)
        # Journalled until answered: a gateway killed meanwhile has the reservation released by the next one.
        entry = self.ledger.admitting(admit_req, org_id, parsed.stream)
        lost = (reservation_id, org_id) if reservation_id is not None and org_id is not None else None
        try:
            admitted = await self._admit(admit_req)
        except ServiceError as exc:
            # Quota may have made the reservation and then failed to answer: released at zero by the event.
            return self.reject(
                request_id, gov.session_id, spec.name, parsed.kind, exc, started, spec.provider, lost
            )
        except asyncio.CancelledError:
            # The client went away while quota was asked: nothing goes upstream, the reservation is released.
            self.ledger.rejected(
                request_id,
                gov.session_id,
                spec.name,
                parsed.kind,
                ClientGone("the client went away"),
                started,
                spec.provider,
                lost,
            )
            raise
        finally:
            self.ledger.admitted(entry)
        if isinstance(admitted, Denial):
            self.ledger.blocked(admit_req, parsed, admitted, started)
            headers = {"x-request-id": request_id, "x-leaky-tokens-cost-usd": ZERO_COST, **admitted.headers}
            return Reply(admitted.status, headers, admitted.body)
        granted = 0 if parsed.kind == "embedding" else admitted.granted_output_tokens
        call = Call(
            parsed, spec, admitted, request_id, gov.session_id, started,
            spec.cost_usd_micros(parsed.estimated_prompt(spec.provider, spec.upstream_model), granted),
        )  # fmt: skip
        return await self._answer(call)

    async def _admit(self, req: AdmitRequest) -> AdmitResponse | Denial:
        """Quota's answer; anything its client could not make sense of counts as quota failing (503)."""
        try:
            return await self.quota.admit(req)
        except ServiceError:
            raise
        except Exception as exc:
            logger.exception("unexpected answer from quota's admission")
            raise ServiceUnavailable("quota service error", code="quota_unavailable") from exc

    async def _answer(self, call: Call) -> Reply:
        headers = call.headers()
        try:
            if call.parsed.stream:
                return await self._start_stream(call, headers)
            completion = await self.upstream.complete(call)
        except ServiceError as exc:
            # Nothing was generated: released now, and the event settles the reservation at zero.
            await self.release(call, Usage(0, 0))
            self.ledger.settle(call, Usage(0, 0), "error", exc.status, exc.code)
            headers["x-leaky-tokens-cost-usd"] = ZERO_COST
            return error_reply(exc.status, exc.body(), call.request_id, {**headers, **exc.headers})
        # On a snug budget the release travels to quota while the answer is prepared, and the answer leaves once
        # it is back; otherwise it is only queued (QuotaClient.release_later), so no task is made for it.
        release: asyncio.Future[None] | None = None
        if call.admitted.release_wait:
            release = asyncio.ensure_future(self.release(call, completion.usage))
        else:
            await self.release(call, completion.usage)
        cost = self.ledger.settle_after_reply(call, completion.usage)
        body = completion.body
        if call.parsed.body.get("encoding_format") == "base64":
            body = base64_embeddings(body)
        body["model"] = call.parsed.model
        body["leaky_tokens"] = call.cost_field(cost)
        headers["x-leaky-tokens-cost-usd"] = format_usd(cost)
        reply = Reply(200, headers, orjson.dumps(body))
        if release is not None:
            await release
        return reply

    async def _start_stream(self, call: Call, headers: dict[str, str]) -> Reply:
        chunks, first = await self.upstream.open_stream(call)
        max_cost = call.spec.cost_usd_micros(
            call.parsed.estimated_prompt(call.spec.provider, call.spec.upstream_model),
            call.admitted.granted_output_tokens,
        )
        headers["x-leaky-tokens-cost-usd-max"] = format_usd(max_cost)
        return Reply(
            200,
            {**headers, "cache-control": "no-cache", "x-accel-buffering": "no"},
            stream=relay(call, chunks, first, self.ledger, self.release),
            media_type="text/event-stream",
        )
