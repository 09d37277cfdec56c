"""QuotaClient over real HTTP: trace context goes out, denials come back as they are, outages are 503."""

import asyncio
import time

import orjson
import pytest
from aiohttp import web
from opentelemetry.sdk.trace import TracerProvider

from leaky_common.auth import AssertionVerifier
from leaky_common.contracts import MAX_RELEASES_PER_ADMISSION, AdmitRequest
from leaky_common.errors import ServiceUnavailable
from leaky_devinfra.infra import free_port
from leaky_devinfra.testing import TEST_KEYS, eventually
from lt_gateway.adapters.quota_client import Denial, QuotaClient

pytestmark = pytest.mark.integration


async def test_admit_sends_traceparent_and_passes_denials_through() -> None:
    seen: list[dict[str, str]] = []

    async def admit(request: web.Request) -> web.Response:
        seen.append({k.lower(): v for k, v in request.headers.items()})
        body = {
            "error": {
                "message": "slow down",
                "type": "rate_limit_error",
                "param": None,
                "code": "rate_limited",
            }
        }
        return web.Response(body=orjson.dumps(body), status=429, headers={"Retry-After": "3"})

    app = web.Application()
    app.router.add_post("/internal/admit", admit)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    client = QuotaClient(f"http://127.0.0.1:{port}", TEST_KEYS.signer(), 5)
    await client.start()
    try:
        tracer = TracerProvider().get_tracer("test")
        with tracer.start_as_current_span("chat") as span:
            result = await client.admit(
                AdmitRequest(api_key="k", request_id="r", model="m", provider="mock", prompt_tokens=1)
            )
        assert isinstance(result, Denial)
        assert result.status == 429
        assert result.code() == "rate_limited"
        assert result.headers == {"retry-after": "3"}
        trace_id = f"{span.get_span_context().trace_id:032x}"
        assert seen[0]["traceparent"].split("-")[1] == trace_id
        # A caller assertion for quota (no principal), verifiable with the gateway's public key.
        assertion = AssertionVerifier({TEST_KEYS.kid: TEST_KEYS.public}, "quota").caller(
            seen[0]["x-lt-assertion"]
        )
        assert assertion.principal is None
    finally:
        await client.close()
        await runner.cleanup()


async def test_unreachable_quota_fails_closed_with_503() -> None:
    client = QuotaClient(f"http://127.0.0.1:{free_port()}", TEST_KEYS.signer(), 2)
    await client.start()
    try:
        with pytest.raises(ServiceUnavailable) as err:
            await client.authenticate("lt-anything")
        assert err.value.status == 503
    finally:
        await client.close()


async def test_reachable_follows_quota_health() -> None:
    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_get("/health", health)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    up = QuotaClient(f"http://127.0.0.1:{port}", TEST_KEYS.signer(), 2)
    down = QuotaClient(f"http://127.0.0.1:{free_port()}", TEST_KEYS.signer(), 2)
    await up.start()
    await down.start()
    try:
        assert await up.reachable() is True
        assert await down.reachable() is False
    finally:
        await up.close()
        await down.close()
        await runner.cleanup()


async def test_release_never_raises_and_gives_up_after_its_timeout() -> None:
    seen: list[dict[str, object]] = []

    async def release(request: web.Request) -> web.Response:
        seen.append(await request.json())
        if len(seen) == 1:
            return web.json_response({"released": True})
        if len(seen) == 2:
            return web.Response(status=500)
        await asyncio.sleep(5)  # a hung quota: the answer must not wait for it
        return web.json_response({"released": True})

    app = web.Application()
    app.router.add_post("/internal/release", release)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    client = QuotaClient(f"http://127.0.0.1:{port}", TEST_KEYS.signer(), 5)
    down = QuotaClient(f"http://127.0.0.1:{free_port()}", TEST_KEYS.signer(), 5)
    await client.start()
    await down.start()
    try:
        assert await client.release("res_1", 120, 7, timeout_s=1) is True
        assert seen[0] == {"reservation_id": "res_1", "total_tokens": 120, "cost_usd_micros": 7}
        assert await client.release("res_1", 120, 7, timeout_s=1) is False  # a 500
        started = time.perf_counter()
        assert await client.release("res_1", 120, 7, timeout_s=0.2) is False  # hung
        assert time.perf_counter() - started < 2
        assert await down.release("res_1", 120, 7, timeout_s=1) is False  # unreachable
    finally:
        await client.close()
        await down.close()
        await runner.cleanup()


async def test_pool_is_replaced_after_its_max_age_so_new_connections_reach_every_instance() -> None:
    """Two quota "instances" on one port (SO_REUSEPORT): a keep-alive pool sticks to the instance its
    connection landed on; replacing the pool when it ages spreads the calls over both."""
    seen: list[int] = []

    def instance(index: int) -> web.Application:
        async def probe(request: web.Request) -> web.Response:
            seen.append(index)
            return web.json_response({"ok": True, "checks": {}})

        app = web.Application()
        app.router.add_post("/internal/probe", probe)
        return app

    port = free_port()
    runners = [web.AppRunner(instance(i)) for i in (0, 1)]
    for runner in runners:
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, reuse_port=True).start()
    sticky = QuotaClient(f"http://127.0.0.1:{port}", TEST_KEYS.signer(), 5)
    aging = QuotaClient(f"http://127.0.0.1:{port}", TEST_KEYS.signer(), 5, max_connection_age_s=1e-9)
    await sticky.start()
    await aging.start()
    try:
        for _ in range(20):  # one call at a time: one keep-alive connection, one instance
            await sticky._post("/internal/probe", b"")
        assert len(set(seen)) == 1
        seen.clear()
        deadline = time.monotonic() + 10
        while set(seen) != {0, 1}:
            assert time.monotonic() < deadline, f"only instance {set(seen)} was reached"
            await aging._post("/internal/probe", b"")  # each call finds the pool aged: a new connection
    finally:
        await sticky.close()
        await aging.close()
        for runner in runners:
            await runner.cleanup()


async def recording_quota(
    admits: list[dict[str, object]], releases: list[dict[str, object]], traceparents: list[str | None]
) -> tuple[web.AppRunner, int]:
    """A quota that refuses every admission (429) and accepts every release, recording the bodies it got (and
    each release's traceparent); returns its runner and port."""

    async def admit(request: web.Request) -> web.Response:
        admits.append(await request.json())
        return web.json_response(
            {"error": {"message": "no", "type": "x", "param": None, "code": "x"}}, status=429
        )

    async def release(request: web.Request) -> web.Response:
        releases.append(await request.json())
        traceparents.append(request.headers.get("traceparent"))
        return web.json_response({"released": True})

    app = web.Application()
    app.router.add_post("/internal/admit", admit)
    app.router.add_post("/internal/release", release)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, port


async def test_releases_ride_on_the_next_admission_or_go_out_after_the_linger() -> None:
    admits: list[dict[str, object]] = []
    releases: list[dict[str, object]] = []
    traceparents: list[str | None] = []
    runner, port = await recording_quota(admits, releases, traceparents)
    client = QuotaClient(f"http://127.0.0.1:{port}", TEST_KEYS.signer(), 5, release_linger_s=0.5)
    await client.start()
    request = AdmitRequest(api_key="k", request_id="r", model="m", provider="mock", prompt_tokens=1)
    try:
        client.release_later("res_1", 10, 1)
        client.release_later("res_2", 20, 2)
        await client.admit(request)
        # Both went with the admission, in order; none on its own.
        assert admits[0]["releases"] == [
            {"reservation_id": "res_1", "total_tokens": 10, "cost_usd_micros": 1},
            {"reservation_id": "res_2", "total_tokens": 20, "cost_usd_micros": 2},
        ]
        await client.admit(request)
        assert admits[1]["releases"] == []  # nothing twice
        # No admission within the linger: it goes out on its own, in the trace of the request it belongs to.
        with TracerProvider().get_tracer("test").start_as_current_span("chat") as span:
            client.release_later("res_3", 30, 3)
        client.release_later("res_4", 40, 4)  # another request's, outside that trace
        await eventually(lambda: len(releases) == 2)
        assert releases == [
            {"reservation_id": "res_3", "total_tokens": 30, "cost_usd_micros": 3},
            {"reservation_id": "res_4", "total_tokens": 40, "cost_usd_micros": 4},
        ]
        assert traceparents[0] is not None
        assert traceparents[0].split("-")[1] == f"{span.get_span_context().trace_id:032x}"
        assert traceparents[1] is None
        # More than an admission carries: the rest ride on the next one.
        for i in range(MAX_RELEASES_PER_ADMISSION + 5):
            client.release_later(f"many_{i}", i, 0)
        await client.admit(request)
        await client.admit(request)
        assert [len(a["releases"]) for a in admits[2:]] == [MAX_RELEASES_PER_ADMISSION, 5]  # type: ignore[arg-type]
        # Closing sends what is still waiting.
        client.release_later("res_last", 1, 0)
    finally:
        await client.close()
        await runner.cleanup()
    assert releases[-1] == {"reservation_id": "res_last", "total_tokens": 1, "cost_usd_micros": 0}


async def test_a_release_waits_its_own_linger_and_no_timer_outlives_the_releases() -> None:
    """Each release goes out on its own only once it has waited the whole linger. A timer armed for an earlier
    release, which rode on an admission meanwhile, used to send a release made just before it fired (under
    load, a third of all releases went out as calls of their own instead of riding)."""
    admits: list[dict[str, object]] = []
    releases: list[dict[str, object]] = []
    runner, port = await recording_quota(admits, releases, [])
    linger = 60.0  # nothing goes out on its own by the clock during the test: the timer is driven below
    client = QuotaClient(f"http://127.0.0.1:{port}", TEST_KEYS.signer(), 5, release_linger_s=linger)
    await client.start()
    loop = asyncio.get_running_loop()
    request = AdmitRequest(api_key="k", request_id="r", model="m", provider="mock", prompt_tokens=1)

    def armed_for() -> float | None:
        """When the client's release timer fires (None: no timer)."""
        timer = client._later_timer
        return None if timer is None else timer.when()

    try:
        made = loop.time()
        client.release_later("res_1", 10, 1)
        timer = client._later_timer
        assert timer is not None and made + linger <= timer.when() <= loop.time() + linger
        await client.admit(request)
        assert [r["reservation_id"] for r in admits[0]["releases"]] == ["res_1"]  # type: ignore[attr-defined]
        assert timer.cancelled() and armed_for() is None  # nothing waits: no timer left behind
        client.release_later("res_2", 20, 2)
        due = armed_for()
        assert due is not None
        # A timer firing now, before res_2 has waited its linger (as res_1's did before), sends nothing and is
        # armed again for res_2's own time.
        client._send_due()
        assert not client._sending
        assert armed_for() == due
        await client.admit(request)
        assert [r["reservation_id"] for r in admits[1]["releases"]] == ["res_2"]  # type: ignore[attr-defined]
        # More than an admission carries: those left keep a timer, for the oldest of them.
        for i in range(MAX_RELEASES_PER_ADMISSION + 2):
            client.release_later(f"many_{i}", i, 0)
        oldest = armed_for()
        await client.admit(request)
        assert oldest is not None and armed_for() == oldest
        assert releases == []  # none went out on its own
    finally:
        await client.close()  # sends the two still waiting
        await runner.cleanup()
    assert [r["reservation_id"] for r in releases] == [
        f"many_{MAX_RELEASES_PER_ADMISSION}",
        f"many_{MAX_RELEASES_PER_ADMISSION + 1}",
    ]
