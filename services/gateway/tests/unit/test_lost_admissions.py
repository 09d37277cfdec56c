"""An admission whose answer the gateway never sees (quota died or timed out after reserving, the client went
away, the gateway itself was killed) is released at zero by the reservation's id, which the gateway chose in
the key's org and journalled before asking: nothing went to the provider, nothing is charged at expiry."""

from __future__ import annotations

import asyncio
from pathlib import Path

from leaky_common.contracts import AdmitRequest, AdmitResponse, org_tag
from leaky_common.errors import ServiceUnavailable
from leaky_common.events import UsageRecorded
from lt_gateway.adapters.quota_client import Denial
from lt_gateway.adapters.usage_journal import UsageJournal, owed

from .test_chat_handler import CHAT, FakeQuota, RecordingSink, handler, make_request


class JournalledSink(RecordingSink):
    def __init__(self, journal: UsageJournal) -> None:
        super().__init__()
        self.journal = journal

    def record(self, event: UsageRecorded) -> None:
        super().record(event)
        self.journal.event(event)  # as UsageSink does until the broker has it


class AwayQuota(FakeQuota):
    """Quota that reserves, then never answers: it fails (`fail`) or hangs until `answer` is set."""

    def __init__(self, *, fail: bool, garbled: bool = False) -> None:
        super().__init__()
        self.fail = fail
        self.garbled = garbled
        self.asked = asyncio.Event()
        self.answer = asyncio.Event()

    async def admit(self, request: AdmitRequest) -> AdmitResponse | Denial:
        self.requests.append(request)
        self.asked.set()
        if self.garbled:
            raise ValueError("an answer that does not parse")
        if self.fail:
            raise ServiceUnavailable("quota service unavailable", code="quota_unavailable")
        await self.answer.wait()
        return await super().admit(request)


async def test_the_reservation_is_named_in_the_keys_org_and_released_when_quota_fails_to_answer() -> None:
    quota, sink = AwayQuota(fail=True), RecordingSink()
    resp = await handler(quota, sink).handle(make_request(CHAT))
    assert resp.status_code == 503
    (asked,) = quota.requests
    assert asked.reservation_id is not None and asked.reservation_id.startswith(org_tag("o1"))
    assert len(asked.reservation_id) == 40
    (event,) = sink.events
    # Quota may have reserved before it failed: the event names the reservation, used nothing.
    assert (event.reservation_id, event.org_id) == (asked.reservation_id, "o1")
    assert (event.total_tokens, event.cost_usd_micros, event.http_status) == (0, 0, 503)
    # Each admission gets its own reservation id.
    await handler(quota, sink).handle(make_request(CHAT))
    assert len({r.reservation_id for r in quota.requests}) == 2


async def test_an_answer_quota_garbled_is_a_503_and_a_release_not_a_500_without_an_event() -> None:
    quota, sink = AwayQuota(fail=False, garbled=True), RecordingSink()
    resp = await handler(quota, sink).handle(make_request(CHAT))
    assert resp.status_code == 503
    (event,) = sink.events
    assert (event.reservation_id, event.error_code) == (quota.requests[0].reservation_id, "quota_unavailable")


async def test_a_client_gone_while_quota_is_asked_leaves_a_release_not_an_expiry_charge() -> None:
    quota, sink = AwayQuota(fail=False), RecordingSink()
    served = asyncio.ensure_future(handler(quota, sink).handle(make_request(CHAT)))
    await asyncio.wait_for(quota.asked.wait(), 5)
    served.cancel()
    await asyncio.wait([served], timeout=5)
    assert served.cancelled()
    (event,) = sink.events
    assert event.reservation_id == quota.requests[0].reservation_id
    assert (event.total_tokens, event.http_status, event.error_code) == (0, 499, "client_disconnected")


async def test_an_admission_is_journalled_until_answered(tmp_path: Path) -> None:
    journal = UsageJournal(tmp_path)
    journal.open()
    quota, sink = AwayQuota(fail=False), JournalledSink(journal)
    served = asyncio.ensure_future(handler(quota, sink).handle(make_request(CHAT)))
    await asyncio.wait_for(quota.asked.wait(), 5)
    # Killed now, this gateway would owe the release of the reservation quota is making.
    (path,) = tmp_path.glob("*.journal")
    (lost,) = owed([("w", path.read_bytes())])
    assert (lost.reservation_id, lost.org_id, lost.total_tokens) == (
        quota.requests[0].reservation_id,
        "o1",
        0,
    )
    quota.answer.set()
    resp = await asyncio.wait_for(served, 5)
    assert resp.status_code == 200
    # Answered: the admission owes nothing more; the request's own usage event is what is owed until acked.
    assert [e.event_id for e in owed([("w", path.read_bytes())])] == [e.event_id for e in sink.events]
    journal.acked([e.event_id for e in sink.events])
    assert owed([("w", path.read_bytes())]) == []
    journal.close()
    assert list(tmp_path.glob("*.journal")) == []


async def test_a_denial_names_no_reservation_to_release() -> None:
    body = b'{"error": {"message": "quota exceeded", "type": "insufficient_quota", "code": "insufficient_quota"}}'
    quota, sink = FakeQuota(denial=Denial(402, body, {})), RecordingSink()
    resp = await handler(quota, sink).handle(make_request(CHAT))
    assert resp.status_code == 402
    (event,) = sink.events
    assert event.reservation_id is None and event.status == "blocked"
