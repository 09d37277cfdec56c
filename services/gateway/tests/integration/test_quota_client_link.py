"""QuotaClient over quota's internal link: the same assertion, trace context, riding releases, denials and
failures as over HTTP (test_quota_client_http.py), against a link server on a free port."""

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import orjson
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from leaky_common.auth import AssertionVerifier
from leaky_common.contracts import QUOTA_LINK_ADMIT, QUOTA_LINK_RELEASE, AdmitRequest, AdmitResponse
from leaky_common.errors import ServiceUnavailable
from leaky_common.link import Answer, LinkClient, LinkOp, LinkServer
from leaky_devinfra.infra import free_port
from leaky_devinfra.testing import TEST_KEYS
from lt_gateway.adapters.quota_client import Denial, QuotaClient

pytestmark = pytest.mark.integration

Handler = Callable[[str, bytes], Awaitable[Answer]]
REQUEST = AdmitRequest(api_key="k", request_id="r", model="m", provider="mock", prompt_tokens=1)
ADMITTED = {
    "reservation_id": "res_9",
    "principal": {"user_id": "u", "org_id": "o"},
    "quota_source": "personal",
    "reserved_tokens": 17,
    "granted_output_tokens": 16,
    "ratelimit": {
        "limit_requests": 600,
        "remaining_requests": 599,
        "reset_requests_s": 0.1,
        "limit_tokens": 200000,
        "remaining_tokens": 199983,
        "reset_tokens_s": 0.1,
    },
}


class FakeQuota:
    """Quota's side of the link, recording each call (assertion, traceparent, body)."""

    def __init__(self) -> None:
        self.admits: list[tuple[str, dict[str, object]]] = []
        self.releases: list[dict[str, object]] = []
        self.admit_answer = Answer(200, "", orjson.dumps(ADMITTED))
        self.release_answers: list[Answer | None] = []  # None: hang

    async def admit(self, assertion: str, body: bytes) -> Answer:
        self.admits.append((assertion, orjson.loads(body)))
        return self.admit_answer

    async def release(self, assertion: str, body: bytes) -> Answer:
        self.releases.append(orjson.loads(body))
        answer = (
            self.release_answers.pop(0) if self.release_answers else Answer(200, "", b'{"released":true}')
        )
        if answer is None:
            await asyncio.sleep(5)
            return Answer(200, "", b'{"released":true}')
        return answer


@pytest.fixture
async def quota() -> AsyncIterator[tuple[FakeQuota, QuotaClient, list[str]]]:
    fake = FakeQuota()
    traceparents: list[str] = []

    def traced(handler: Handler) -> Handler:  # records the current trace as the server sees it
        async def wrapped(assertion: str, body: bytes) -> Answer:
            ctx = trace.get_current_span().get_span_context()
            traceparents.append(f"{ctx.trace_id:032x}" if ctx.is_valid else "")
            return await handler(assertion, body)

        return wrapped

    server = LinkServer(
        "fake-quota",
        [
            LinkOp(QUOTA_LINK_ADMIT, "/internal/admit", traced(fake.admit)),
            LinkOp(QUOTA_LINK_RELEASE, "/internal/release", fake.release),
        ],
    )
    port = await server.start("127.0.0.1", 0)
    # The HTTP address goes nowhere: every call of these tests must take the link.
    client = QuotaClient(
        f"http://127.0.0.1:{free_port()}",
        TEST_KEYS.signer(),
        5,
        release_linger_s=10,
        link=LinkClient("127.0.0.1", port),
    )
    await client.start()
    yield fake, client, traceparents
    await client.close()
    await server.stop(timeout_s=1)


async def test_admit_over_the_link_with_the_caller_assertion_trace_and_riding_releases(
    quota: tuple[FakeQuota, QuotaClient, list[str]],
) -> None:
    fake, client, traceparents = quota
    client.release_later("res_1", 10, 1)
    provider = TracerProvider()  # a real SDK tracer: the trace context goes out with the call
    with provider.get_tracer("test").start_as_current_span("chat") as span:
        result = await client.admit(REQUEST)
    assert isinstance(result, AdmitResponse) and result.reservation_id == "res_9"
    assertion, body = fake.admits[0]
    assert AssertionVerifier({TEST_KEYS.kid: TEST_KEYS.public}, "quota").caller(assertion).principal is None
    assert body["releases"] == [{"reservation_id": "res_1", "total_tokens": 10, "cost_usd_micros": 1}]
    assert traceparents == [f"{span.get_span_context().trace_id:032x}"]
    assert await client.admit(REQUEST) and fake.admits[1][1]["releases"] == []  # nothing twice
    assert traceparents[1] == ""  # outside a trace, none is sent


async def test_denials_come_back_as_they_are_and_quota_errors_are_503(
    quota: tuple[FakeQuota, QuotaClient, list[str]],
) -> None:
    fake, client, _ = quota
    denial = {
        "error": {"message": "slow down", "type": "rate_limit_error", "param": None, "code": "rate_limited"}
    }
    fake.admit_answer = Answer(429, "3", orjson.dumps(denial))
    result = await client.admit(REQUEST)
    assert isinstance(result, Denial)
    assert (result.status, result.code(), result.headers) == (429, "rate_limited", {"retry-after": "3"})
    fake.admit_answer = Answer(503, "1", b"{}")
    with pytest.raises(ServiceUnavailable):
        await client.admit(REQUEST)


async def test_release_over_the_link_never_raises_and_gives_up_after_its_timeout(
    quota: tuple[FakeQuota, QuotaClient, list[str]],
) -> None:
    fake, client, _ = quota
    fake.release_answers = [Answer(200, "", b'{"released":true}'), Answer(500, "", b"{}"), None]
    assert await client.release("res_1", 120, 7, timeout_s=1) is True
    assert fake.releases[0] == {"reservation_id": "res_1", "total_tokens": 120, "cost_usd_micros": 7}
    assert await client.release("res_1", 120, 7, timeout_s=1) is False  # a 500
    started = time.perf_counter()
    assert await client.release("res_1", 120, 7, timeout_s=0.2) is False  # hung
    assert time.perf_counter() - started < 2


async def test_an_unreachable_link_fails_closed_with_503_and_releases_give_up() -> None:
    client = QuotaClient(
        f"http://127.0.0.1:{free_port()}", TEST_KEYS.signer(), 2, link=LinkClient("127.0.0.1", free_port())
    )
    await client.start()
    try:
        with pytest.raises(ServiceUnavailable) as err:
            await client.admit(REQUEST)
        assert err.value.status == 503 and err.value.code == "quota_unavailable"
        assert await client.release("res_1", 1, 0, timeout_s=1) is False
    finally:
        await client.close()
