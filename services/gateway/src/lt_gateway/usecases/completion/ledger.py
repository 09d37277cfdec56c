"""Every request leaves exactly one usage event, one metrics update and one JSON log line.

Malformed and keyless requests too (`status` error/blocked, no reservation). The log line never holds any
prompt or completion text.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial

from opentelemetry import trace

from leaky_common.contracts import AdmitRequest
from leaky_common.errors import ServiceError, Unauthorized
from lt_gateway.adapters.metrics import usage_metrics
from lt_gateway.adapters.model_table import ModelTable
from lt_gateway.adapters.quota_client import Denial
from lt_gateway.adapters.usage_journal import INTERRUPTED, JournalEntry, UsageJournal
from lt_gateway.adapters.usage_sink import UsageSink
from lt_gateway.domain.call import Call
from lt_gateway.domain.events import blocked_event, rejected_event, settled_event
from lt_gateway.domain.fingerprint import Fingerprinter
from lt_gateway.domain.pricing import format_usd
from lt_gateway.domain.requests import Kind, ParsedRequest
from lt_gateway.domain.usage import Usage

# Exactly one line per request goes to `lt_gateway.requests`.
request_log = logging.getLogger("lt_gateway.requests")
logger = logging.getLogger(__name__)


@dataclass(slots=True)
class RequestLine:
    """The fields of a request's log line (TokenGate's; costs in USD)."""

    request_id: str
    session_id: str | None
    model: str | None
    decision: str
    error: str | None
    status_code: int
    latency_ms: int
    estimated_cost: int = 0
    actual_cost: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    user_id: str | None = None

    def emit(self) -> None:
        """Write the line to `lt_gateway.requests`."""
        request_log.info(
            "request",
            extra={
                "timestamp": datetime.now(UTC).isoformat(),
                "request_id": self.request_id,
                "session_id": self.session_id,
                "user_id": self.user_id,
                "model": self.model,
                "estimated_cost": format_usd(self.estimated_cost),
                "actual_cost": format_usd(self.actual_cost),
                "input_tokens": self.input_tokens,
                "output_tokens": self.output_tokens,
                "decision": self.decision,
                "error": self.error,
                "status_code": self.status_code,
                "latency_ms": self.latency_ms,
            },
        )


def _elapsed_ms(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)


class UsageLedger:
    """Records the outcome of each request: admitted, blocked by quota, or rejected before admission."""

    def __init__(self, usage: UsageSink, models: ModelTable, fingerprints: Fingerprinter) -> None:
        self.usage = usage
        self.journal: UsageJournal | None = getattr(usage, "journal", None)
        self.models = models
        self.fingerprints = fingerprints

    def settle(self, call: Call, usage: Usage, status: str, http_status: int, error_code: str | None) -> int:
        """An admitted request's usage (quota settles the reservation from it); returns its cost."""
        cost = call.cost(usage)
        self._settled(call, usage, cost, _elapsed_ms(call.started), status, http_status, error_code)
        return cost

    def settle_after_reply(self, call: Call, usage: Usage) -> int:
        """`settle` of a request answered in full (200), its latency taken now and the rest done just after the
        current step of the event loop, i.e. once the reply that step sends is on its way: the event, metrics
        and log line are not on the client's wait. Returns the cost.

        In a sampled trace it is `settle` itself: the request's span, over once the answer is written, carries
        the event's `publish usage.recorded` span event."""
        if trace.get_current_span().is_recording():
            return self.settle(call, usage, "ok", 200, None)
        cost = call.cost(usage)
        settled = partial(self._settled, call, usage, cost, _elapsed_ms(call.started), "ok", 200, None)
        asyncio.get_running_loop().call_soon(_run_or_log, settled)
        return cost

    def _settled(
        self, call: Call, usage: Usage, cost: int, latency_ms: int, status: str, http_status: int,
        error_code: str | None,
    ) -> None:  # fmt: skip
        fingerprint = self.fingerprints.fingerprint(call.admitted.principal.org_id, call.parsed.digest)
        outcome = (status, http_status, error_code)
        self.usage.record(settled_event(call, usage, cost, latency_ms, outcome, fingerprint))
        usage_metrics(call.spec.name, call.spec.provider, call.admitted.quota_source).add(
            usage.prompt_tokens, usage.completion_tokens, cost
        )
        RequestLine(
            call.request_id, call.session_id, call.spec.name, "allowed", error_code, http_status, latency_ms,
            call.estimated_cost, cost, usage.prompt_tokens, usage.completion_tokens,
            call.admitted.principal.user_id,
        ).emit()  # fmt: skip

    def admitting(self, req: AdmitRequest, org_id: str | None, stream: bool) -> JournalEntry | None:
        """Journal an admission about to be asked for, so that a gateway killed before its answer still has the
        reservation released at zero (nothing went to the provider); None without a journal."""
        if self.journal is None:
            return None
        return self.journal.admitting(
            {"request_id": req.request_id, "reservation_id": req.reservation_id, "org_id": org_id,
             "session_id": req.session_id, "model": req.model, "provider": req.provider, "stream": stream}
        )  # fmt: skip

    def admitted(self, entry: JournalEntry | None) -> None:
        """The journalled admission's outcome is recorded, or its request goes to the provider."""
        if entry is not None and self.journal is not None:
            self.journal.admitted(entry)

    def stream_opened(self, call: Call, prompt: Usage) -> JournalEntry | None:
        """Journal a stream about to be relayed, so that a gateway killed while relaying it still has it
        charged what was relayed (`UsageJournal`); None without a journal."""
        journal = self.journal
        if journal is None:
            return None
        fingerprint = self.fingerprints.fingerprint(call.admitted.principal.org_id, call.parsed.digest)
        outcome = ("error", 502, INTERRUPTED)
        event = settled_event(call, prompt, call.cost(prompt), 0, outcome, fingerprint)
        return journal.stream_opened(event, call.spec)

    def stream_progress(self, entry: JournalEntry | None, usage: Usage) -> None:
        """The journalled stream's usage so far."""
        if entry is not None and self.journal is not None:
            self.journal.stream_progress(entry, usage)

    def stream_closed(self, entry: JournalEntry | None) -> None:
        """The journalled stream ended; its usage event was recorded."""
        if entry is not None and self.journal is not None:
            self.journal.stream_closed(entry)

    def blocked(self, req: AdmitRequest, parsed: ParsedRequest, denial: Denial, started: float) -> None:
        """A request quota refused."""
        code = denial.code()
        latency_ms = _elapsed_ms(started)
        self.usage.record(blocked_event(req, parsed, denial.status, code, latency_ms))
        RequestLine(
            req.request_id, req.session_id, req.model, "blocked", code, denial.status, latency_ms
        ).emit()

    def rejected(
        self,
        request_id: str,
        session_id: str | None,
        model: str | None,
        kind: Kind,
        exc: ServiceError,
        started: float,
        provider: str | None = None,
        reservation: tuple[str, str] | None = None,
    ) -> None:
        """A request refused before admission (malformed, keyless, unknown model, quota unreachable).
        `reservation` (its id, the org): an admission asked for whose answer never came (quota unreachable,
        the client gone). Quota may have made it, and releases it at zero from this event."""
        spec = self.models.get(model) if model else None
        latency_ms = _elapsed_ms(started)
        provider = provider or (spec.provider if spec else "")
        self.usage.record(
            rejected_event(request_id, session_id, model, provider, exc, latency_ms, reservation)
        )
        decision = "blocked" if isinstance(exc, Unauthorized) else "rejected"
        RequestLine(request_id, session_id, model, decision, exc.code or kind, exc.status, latency_ms).emit()


def _run_or_log(settled: Callable[[], None]) -> None:
    """Record a request settled after its answer left: nothing to answer any more, so a failure here is a bug,
    logged with what it hit."""
    try:
        settled()
    except Exception:
        logger.exception("recording a settled request failed")
