"""ChatHandler with small fakes for its adapters: every request that reaches quota leaves one usage event."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from starlette.requests import Request

from leaky_common.auth import Principal
from leaky_common.contracts import AdmitRequest, AdmitResponse, RateLimitState
from leaky_common.events import UsageRecorded
from leaky_devinfra.testing import eventually
from lt_gateway.adapters.model_table import ModelTable
from lt_gateway.adapters.providers import Completion, StreamChunk
from lt_gateway.adapters.providers.mock import MockProvider
from lt_gateway.adapters.quota_client import Denial
from lt_gateway.api.chat import ChatHandler
from lt_gateway.domain.models import ModelSpec
from lt_gateway.domain.pricing import format_usd
from lt_gateway.usecases.completion.flow import CompletionFlow
from lt_gateway.usecases.completion.keycheck import KeyCheck


class FakeQuota:
    def __init__(
        self, denial: Denial | None = None, refuse_keys: bool = False, release_wait: bool = True
    ) -> None:
        self.denial = denial
        self.refuse_keys = refuse_keys
        self.release_wait = release_wait
        self.quota_answers = asyncio.Event()  # a release finishes when this is set (set by default)
        self.quota_answers.set()
        self.requests: list[AdmitRequest] = []
        self.authentications = 0
        self.releases: list[tuple[str, int, int]] = []
        self._later: set[asyncio.Task[bool]] = set()

    async def authenticate(self, api_key: str) -> Principal | Denial:
        self.authentications += 1
        if self.refuse_keys:
            body = b'{"error": {"message": "invalid API key", "type": "authentication_error", "code": "invalid_api_key"}}'
            return Denial(401, body, {})
        return Principal(user_id="u1", org_id="o1", key_id="k1")

    async def release(self, reservation_id: str, tokens: int, cost: int, timeout_s: float) -> bool:
        await self.quota_answers.wait()
        self.releases.append((reservation_id, tokens, cost))
        return False  # as when quota cannot be reached: the answer goes out all the same

    def release_later(self, reservation_id: str, tokens: int, cost: int) -> None:
        # QuotaClient sends it with the next admission or soon after; here it is on its way at once.
        task = asyncio.ensure_future(self.release(reservation_id, tokens, cost, 0.5))
        self._later.add(task)
        task.add_done_callback(self._later.discard)

    async def admit(self, request: AdmitRequest) -> AdmitResponse | Denial:
        self.requests.append(request)
        if self.denial is not None:
            return self.denial
        grant = min(request.max_output_tokens or request.model_max_output_tokens, 50)
        return AdmitResponse(
            reservation_id="res_1",
            principal=Principal(user_id="u1", org_id="o1", key_id="k1"),
            pool_id="p1",
            quota_source="personal",
            reserved_tokens=request.prompt_tokens + grant,
            granted_output_tokens=grant,
            release_wait=self.release_wait,
            ratelimit=RateLimitState(
                limit_requests=600,
                remaining_requests=599,
                reset_requests_s=0.1,
                limit_tokens=1000,
                remaining_tokens=900,
                reset_tokens_s=1.0,
            ),
        )


class RecordingSink:
    def __init__(self) -> None:
        self.events: list[UsageRecorded] = []

    def record(self, event: UsageRecorded) -> None:
        self.events.append(event)


class SpanCheckingSink(RecordingSink):
    """Notes whether the current span was recording when each event was recorded."""

    def __init__(self) -> None:
        super().__init__()
        self.recording: list[bool] = []

    def record(self, event: UsageRecorded) -> None:
        self.recording.append(trace.get_current_span().is_recording())
        super().record(event)


class FailingProvider:
    async def complete(self, spec: ModelSpec, body: dict[str, Any]) -> Completion:
        raise ConnectionResetError("upstream went away")

    async def stream(self, spec: ModelSpec, body: dict[str, Any]) -> AsyncIterator[StreamChunk]:
        raise ConnectionResetError("upstream went away")
        yield  # makes this an async generator


def make_request(body: dict[str, Any], headers: dict[str, str] | None = None) -> Request:
    raw = orjson.dumps(body)
    hdrs = [
        (b"authorization", b"Bearer lt-test"),
        *((k.encode(), v.encode()) for k, v in (headers or {}).items()),
    ]
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/chat/completions",
        "headers": hdrs,
        "query_string": b"",
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": raw, "more_body": False}

    return Request(scope, receive)


def handler(
    quota: FakeQuota, sink: RecordingSink, provider: Any = None, *, release_before_end: bool = True
) -> ChatHandler:
    flow = CompletionFlow(
        models=ModelTable.load(None),
        providers={"mock": provider or MockProvider()},
        quota=quota,  # type: ignore[arg-type]
        usage=sink,  # type: ignore[arg-type]
        release_before_end=release_before_end,
    )
    return ChatHandler(flow, KeyCheck(quota, 30), max_body_bytes=100_000)  # type: ignore[arg-type]


CHAT = {"model": "mock-gpt", "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 500}


async def test_success_caps_upstream_at_grant_and_records_provider_usage() -> None:
    quota, sink = FakeQuota(), RecordingSink()
    resp = await handler(quota, sink).handle(make_request(CHAT, {"x-session-id": "s1"}))
    assert resp.status_code == 200
    body = orjson.loads(resp.body)
    assert body["usage"]["completion_tokens"] <= 50  # capped at the grant, not the 500 asked for
    (event,) = sink.events
    assert event.status == "ok"
    assert event.reservation_id == "res_1"
    assert event.session_id == "s1"
    assert event.total_tokens == body["usage"]["total_tokens"]
    assert event.cost_usd_micros == body["leaky_tokens"]["cost_usd_micros"]
    assert resp.headers["x-leaky-tokens-cost-usd"] == body["leaky_tokens"]["cost_usd"]
    assert quota.requests[0].max_output_tokens == 500
    # released (down to what was used) before the answer was handed back, even though the release failed
    assert quota.releases == [("res_1", event.total_tokens, event.cost_usd_micros)]


async def test_without_the_release_before_the_end_only_the_usage_event_settles() -> None:
    """`LT_RELEASE_BEFORE_END=false` (the benchmark's baseline for what the release costs): no release call,
    the same answer and the same usage event."""
    quota, sink = FakeQuota(), RecordingSink()
    resp = await handler(quota, sink, release_before_end=False).handle(make_request(CHAT))
    assert resp.status_code == 200
    (event,) = sink.events
    assert (
        event.reservation_id == "res_1"
        and event.total_tokens == orjson.loads(resp.body)["usage"]["total_tokens"]
    )
    assert quota.releases == []


async def test_with_room_to_spare_the_answer_does_not_wait_for_the_release() -> None:
    """Quota says twice the reservation stays free (`release_wait` false): the answer leaves while the release
    is still on its way, and the release lands afterwards."""
    quota, sink = FakeQuota(release_wait=False), RecordingSink()
    quota.quota_answers.clear()  # quota has not answered the release yet
    resp = await handler(quota, sink).handle(make_request(CHAT))
    assert resp.status_code == 200 and quota.releases == []
    quota.quota_answers.set()
    await eventually(lambda: len(sink.events) == 1)  # recorded just after the answer left
    await eventually(
        lambda: quota.releases == [("res_1", sink.events[0].total_tokens, sink.events[0].cost_usd_micros)]
    )


async def test_an_answered_request_is_recorded_once_its_answer_has_left() -> None:
    """Its usage event, metrics and log line wait for the next step of the event loop, by which time the server
    has written the answer; its latency is still taken when the answer was ready."""
    quota, sink = FakeQuota(release_wait=False), RecordingSink()
    flow_handler = handler(quota, sink)
    resp = await flow_handler.handle(make_request(CHAT))
    assert resp.status_code == 200 and sink.events == []  # not yet: the answer is still to be written
    await eventually(lambda: len(sink.events) == 1)
    assert sink.events[0].cost_usd_micros == orjson.loads(resp.body)["leaky_tokens"]["cost_usd_micros"]


class BrokenSink(RecordingSink):
    def record(self, event: UsageRecorded) -> None:
        raise RuntimeError("sink broke")


async def test_recording_after_the_answer_left_logs_a_failure_instead_of_losing_it_silently(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Once the answer has left there is nobody to answer: a failure to record is logged with what it hit."""
    quota = FakeQuota(release_wait=False)
    with caplog.at_level(logging.ERROR, logger="lt_gateway.usecases.completion.ledger"):
        resp = await handler(quota, BrokenSink()).handle(make_request(CHAT))
        assert resp.status_code == 200
        await eventually(
            lambda: any("recording a settled request failed" in r.getMessage() for r in caplog.records)
        )
    (record,) = [r for r in caplog.records if "recording a settled request failed" in r.getMessage()]
    assert record.exc_info is not None and "sink broke" in str(record.exc_info[1])


async def test_in_a_sampled_trace_the_request_is_recorded_before_its_answer() -> None:
    """While its span still records: the usage sink adds the event's `publish usage.recorded` span event to it."""
    provider = TracerProvider()
    quota, sink = FakeQuota(release_wait=False), SpanCheckingSink()
    with provider.get_tracer("test").start_as_current_span("POST /v1/chat/completions"):
        resp = await handler(quota, sink).handle(make_request(CHAT))
        assert resp.status_code == 200 and sink.recording == [True]  # already, in the live span


async def test_on_a_snug_budget_the_answer_waits_for_the_release() -> None:
    quota, sink = FakeQuota(release_wait=True), RecordingSink()
    quota.quota_answers.clear()
    answer = asyncio.ensure_future(handler(quota, sink).handle(make_request(CHAT)))
    await eventually(lambda: len(sink.events) == 1)  # the answer is ready, its release is on its way
    assert not answer.done()
    quota.quota_answers.set()
    assert (await answer).status_code == 200 and len(quota.releases) == 1


async def test_provider_failure_is_502_and_releases_the_reservation() -> None:
    quota, sink = FakeQuota(), RecordingSink()
    resp = await handler(quota, sink, FailingProvider()).handle(make_request(CHAT))
    assert resp.status_code == 502
    error = orjson.loads(resp.body)["error"]
    assert error["type"] == "upstream_error"
    assert "went away" not in error["message"]  # no upstream internals leak
    (event,) = sink.events
    assert (event.status, event.total_tokens, event.reservation_id) == ("error", 0, "res_1")
    assert quota.releases == [("res_1", 0, 0)]


async def test_denial_is_passed_through_and_recorded_as_blocked() -> None:
    body = {
        "error": {
            "message": "no",
            "type": "insufficient_quota",
            "param": None,
            "code": "personal_pool_exhausted",
        }
    }
    quota, sink = FakeQuota(Denial(402, orjson.dumps(body), {})), RecordingSink()
    resp = await handler(quota, sink).handle(make_request(CHAT))
    assert resp.status_code == 402
    assert orjson.loads(resp.body) == body
    (event,) = sink.events
    assert (event.status, event.error_code, event.reservation_id) == (
        "blocked",
        "personal_pool_exhausted",
        None,
    )


async def test_invalid_request_never_reaches_quota_but_is_recorded() -> None:
    quota, sink = FakeQuota(), RecordingSink()
    resp = await handler(quota, sink).handle(make_request({"model": "mock-gpt", "messages": []}))
    assert resp.status_code == 400
    assert resp.headers["x-leaky-tokens-cost-usd"] == "0.000000"
    assert quota.requests == []
    (event,) = sink.events
    assert (event.status, event.http_status, event.model, event.reservation_id) == (
        "error",
        400,
        "mock-gpt",
        None,
    )


async def test_keyless_request_is_401_and_recorded_as_blocked() -> None:
    quota, sink = FakeQuota(), RecordingSink()
    req = make_request(CHAT)
    req.scope["headers"] = [h for h in req.scope["headers"] if h[0] != b"authorization"]
    resp = await handler(quota, sink).handle(req)
    assert resp.status_code == 401
    (event,) = sink.events
    assert (event.status, event.http_status, event.error_code) == ("blocked", 401, "missing_api_key")


async def test_unknown_model_is_404_and_wrong_endpoint_is_400() -> None:
    quota, sink = FakeQuota(), RecordingSink()
    h = handler(quota, sink)
    resp = await h.handle(make_request({**CHAT, "model": "nope"}))
    assert resp.status_code == 404
    assert orjson.loads(resp.body)["error"]["code"] == "model_not_found"
    resp = await h.handle(make_request({**CHAT, "model": "mock-embedding"}))
    assert resp.status_code == 400
    assert orjson.loads(resp.body)["error"]["code"] == "unsupported_model"
    assert [e.http_status for e in sink.events] == [404, 400]
    assert quota.requests == []


async def test_stream_failure_before_the_first_chunk_keeps_its_status() -> None:
    quota, sink = FakeQuota(), RecordingSink()
    resp = await handler(quota, sink, FailingProvider()).handle(make_request({**CHAT, "stream": True}))
    assert resp.status_code == 502
    assert b"went away" not in resp.body
    (event,) = sink.events
    assert (event.status, event.http_status, event.stream) == ("error", 502, True)
    assert event.completion_tokens == 0


class MidStreamFailure(MockProvider):
    async def stream(self, spec: ModelSpec, body: dict[str, Any]) -> AsyncIterator[StreamChunk]:
        n = 0
        async for chunk in super().stream(spec, body):
            yield chunk
            n += 1
            if n == 3:
                raise ConnectionResetError("upstream went away")


async def test_stream_failure_sends_an_error_event_and_settles_what_was_counted() -> None:
    quota, sink = FakeQuota(), RecordingSink()
    resp = await handler(quota, sink, MidStreamFailure()).handle(make_request({**CHAT, "stream": True}))
    assert resp.status_code == 200  # headers were already committed to a stream
    chunks = [c async for c in resp.body_iterator]  # type: ignore[attr-defined]
    payload = b"".join(c if isinstance(c, bytes) else c.encode() for c in chunks)
    assert b'"type":"upstream_error"' in payload
    assert b"went away" not in payload
    (event,) = sink.events
    assert (event.status, event.http_status, event.error_code) == ("error", 502, "bad_gateway")
    assert event.reservation_id == "res_1" and event.stream is True
    # role chunk + two content words were generated before the failure
    assert event.completion_tokens == 2


async def test_stream_without_include_usage_carries_usage_and_cost_on_the_finish_chunk() -> None:
    quota, sink = FakeQuota(), RecordingSink()
    resp = await handler(quota, sink).handle(make_request({**CHAT, "stream": True}))
    chunks: list[bytes] = []
    async for chunk in resp.body_iterator:  # type: ignore[attr-defined]
        if b'"usage":{' in chunk:  # the finish chunk carries usage: released before it left
            assert len(quota.releases) == 1
        chunks.append(chunk)
    events = [orjson.loads(c[6:]) for c in chunks if c.startswith(b"data: {")]
    assert all(e["choices"] for e in events)  # no usage-only chunk the client did not ask for
    last = events[-1]
    assert last["choices"][0]["finish_reason"] == "stop"
    (event,) = sink.events
    assert last["usage"]["total_tokens"] == event.total_tokens
    assert last["leaky_tokens"]["cost_usd_micros"] == event.cost_usd_micros


async def test_streamed_usage_matches_provider_and_is_recorded_once() -> None:
    quota, sink = FakeQuota(), RecordingSink()
    req = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    resp = await handler(quota, sink).handle(make_request(req))
    chunks: list[bytes] = []
    async for chunk in resp.body_iterator:  # type: ignore[attr-defined]
        if b'"usage":{' in chunk:  # the last event: released before it left
            assert [r[0] for r in quota.releases] == ["res_1"]
        chunks.append(chunk)
    events = [orjson.loads(c[6:]) for c in chunks if c.startswith(b"data: {")]
    usage = events[-1]["usage"]
    assert quota.releases == [("res_1", usage["total_tokens"], events[-1]["leaky_tokens"]["cost_usd_micros"])]
    assert chunks[-1] == b"data: [DONE]\n\n"
    (event,) = sink.events
    assert event.status == "ok" and event.total_tokens == usage["total_tokens"]
    assert events[-1]["leaky_tokens"]["cost_usd_micros"] == event.cost_usd_micros


async def test_one_log_line_per_request_with_tokengate_fields_and_no_text(
    caplog: pytest.LogCaptureFixture,
) -> None:
    quota, sink = FakeQuota(), RecordingSink()
    secret = "my secret prompt words"
    body = {**CHAT, "messages": [{"role": "user", "content": secret}]}
    with caplog.at_level(logging.INFO, logger="lt_gateway.requests"):
        await handler(quota, sink).handle(
            make_request(body, {"x-privacy-mode": "strict", "x-session-id": "s9"})
        )
        await handler(quota, sink).handle(make_request({"model": "mock-gpt", "messages": "nope"}))
    records = [r for r in caplog.records if r.name == "lt_gateway.requests"]
    assert len(records) == 2
    ok, bad = (r.__dict__ for r in records)
    fields = ("timestamp", "session_id", "model", "estimated_cost", "actual_cost", "input_tokens",
              "output_tokens", "decision", "error")  # fmt: skip
    assert all(f in ok for f in fields) and all(f in bad for f in fields)
    assert (ok["decision"], ok["session_id"], ok["model"], ok["error"]) == ("allowed", "s9", "mock-gpt", None)
    assert ok["output_tokens"] == sink.events[0].completion_tokens
    assert ok["actual_cost"] == format_usd(sink.events[0].cost_usd_micros)
    assert (bad["decision"], bad["actual_cost"]) == ("rejected", "0.000000")
    assert quota.requests[0].privacy == "strict"
    for record in records:
        assert "secret" not in record.getMessage()
        assert all("secret" not in str(v) for v in record.__dict__.values())


class RecordingProvider(MockProvider):
    def __init__(self) -> None:
        super().__init__()
        self.bodies: list[dict[str, Any]] = []

    async def complete(self, spec: ModelSpec, body: dict[str, Any]) -> Completion:
        self.bodies.append(body)
        return await super().complete(spec, body)


async def test_output_cap_uses_the_field_each_provider_understands() -> None:
    openai_spec = ModelSpec(
        name="o-model", provider="openai", upstream_model="o4-mini",
        input_usd_micros_per_mtok=1, output_usd_micros_per_mtok=1,
    )  # fmt: skip
    recording = RecordingProvider()
    flow = CompletionFlow(
        models=ModelTable([*ModelTable.load(None).all(), openai_spec]),
        providers={"mock": recording, "openai": recording},
        quota=FakeQuota(),  # type: ignore[arg-type]
        usage=RecordingSink(),  # type: ignore[arg-type]
    )
    h = ChatHandler(flow, KeyCheck(FakeQuota(), 30), max_body_bytes=100_000)  # type: ignore[arg-type]
    hi = [{"role": "user", "content": "hi"}]
    await h.handle(make_request({"model": "o-model", "messages": hi}))
    await h.handle(make_request({"model": "mock-gpt", "messages": hi}))
    await h.handle(make_request({"model": "o-model", "messages": hi, "max_tokens": 7}))
    first, second, third = recording.bodies
    assert first["max_completion_tokens"] == 50 and "max_tokens" not in first
    assert second["max_tokens"] == 50 and "max_completion_tokens" not in second
    assert (third["max_tokens"], third["model"]) == (7, "o4-mini")


async def test_streamed_text_completion_ends_with_usage_and_cost() -> None:
    quota, sink = FakeQuota(), RecordingSink()
    req = make_request({"model": "mock-gpt", "prompt": "say something", "max_tokens": 20, "stream": True})
    req.scope["path"] = "/v1/completions"
    resp = await handler(quota, sink).handle_completion(req)
    chunks = [c async for c in resp.body_iterator]  # type: ignore[attr-defined]
    events = [orjson.loads(c[6:]) for c in chunks if c.startswith(b"data: {")]
    assert all(e["object"] == "text_completion" for e in events)
    assert "".join(e["choices"][0]["text"] for e in events).startswith("This is mock-gpt")
    (event,) = sink.events
    assert events[-1]["usage"]["completion_tokens"] == event.completion_tokens > 0
    assert events[-1]["leaky_tokens"]["cost_usd_micros"] == event.cost_usd_micros
