"""Money exact on every path: the release before the answer's end, batched settlement (idempotent per event,
also inside one batch), commands that never wait behind usage, and reservations that survive Redis loss."""

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis, RedisCluster

from leaky_common.auth import Principal
from leaky_common.db import create_database
from leaky_common.events import RequestFreeze, Topics, UsageRecorded
from leaky_common.kafka import EventPublisher
from leaky_devinfra.testing import TEST_KEYS, InternalKeys, ManualClock
from leaky_devinfra.testing import eventually as wait_until
from lt_quota.adapters import repository as repo
from lt_quota.adapters.redis_state import org_tag
from lt_quota.main import create_app
from lt_quota.settings import QuotaSettings
from lt_quota.usecases.settlement_batch import BatchSettlement

pytestmark = pytest.mark.integration

ADMIN_KEY = "lt-test-admin-" + uuid.uuid4().hex


def internal(principal_json: str | None = None) -> dict[str, str]:
    """The gateway's signed assertion for quota (fresh each call: it lives 30 s): a caller's, or a user's."""
    if principal_json is None:
        return TEST_KEYS.headers("quota")
    return TEST_KEYS.headers("quota", Principal.model_validate_json(principal_json))


@dataclass
class Harness:
    client: httpx.AsyncClient
    service: Any

    async def create_user(self, quota: int) -> dict[str, Any]:
        r = await self.client.post("/internal/authenticate", json={"api_key": ADMIN_KEY}, headers=internal())
        admin = internal(r.text)
        body = {"email": f"{uuid.uuid4().hex[:8]}@example.com", "name": "Someone", "personal_quota": quota}
        r = await self.client.post("/v1/admin/users", json=body, headers=admin)
        assert r.status_code == 201, r.text
        return dict(r.json())

    async def admit(self, api_key: str, **fields: Any) -> httpx.Response:
        body: dict[str, Any] = {
            "api_key": api_key,
            "request_id": uuid.uuid4().hex,
            "model": "mock-gpt",
            "provider": "mock",
        }
        body.update({"prompt_tokens": 10, **fields})
        return await self.client.post("/internal/admit", json=body, headers=internal())

    async def release(
        self, reservation_id: str, tokens: int, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        body = {"reservation_id": reservation_id, "total_tokens": tokens, "cost_usd_micros": 0}
        return await self.client.post(
            "/internal/release", json=body, headers=internal() if headers is None else headers
        )

    async def pool(self, pool_id: str) -> tuple[int, int]:
        """(used, reserved) of a personal pool in Redis."""
        async with self.service.db.acquire() as conn:
            org_id = await conn.fetchval("SELECT org_id FROM pools WHERE id = $1", pool_id)
        state = (await self.service.state.pool_states(org_id, [pool_id]))[pool_id]
        return state.used, state.reserved

    async def ledger(self, pool_id: str) -> list[tuple[int, str]]:
        async with self.service.db.acquire() as conn:
            rows = await conn.fetch("SELECT amount, kind FROM ledger WHERE pool_id = $1 ORDER BY id", pool_id)
        return [(int(r["amount"]), str(r["kind"])) for r in rows]


def usage(admitted: dict[str, Any], tokens: int, event_id: str | None = None) -> UsageRecorded:
    extra = {"event_id": event_id} if event_id else {}
    return UsageRecorded(
        request_id=uuid.uuid4().hex,
        reservation_id=admitted["reservation_id"],
        user_id=admitted["principal"]["user_id"],
        model="mock-gpt",
        provider="mock",
        total_tokens=tokens,
        **extra,
    )


@pytest.fixture
async def database_url(postgres_url: str) -> str:
    """A database per test: open reservations of one test must not move another's clock-sensitive checks."""
    return await create_database(postgres_url, f"quota_{uuid.uuid4().hex[:10]}")


@pytest.fixture(params=["redis", "redis-cluster"])
def settings(request: pytest.FixtureRequest, database_url: str, kafka_bootstrap: str) -> QuotaSettings:
    """Every test runs on one Redis server and on a 3-master Redis Cluster (each org's keys in one slot)."""
    cluster = request.param == "redis-cluster"
    return QuotaSettings(
        _env_file=None,
        environment="test",
        database_url=database_url,
        redis_url=request.getfixturevalue("redis_cluster_url" if cluster else "redis_url"),
        redis_cluster=cluster,
        kafka_bootstrap=kafka_bootstrap,
        **TEST_KEYS.settings(),
        bootstrap_admin_key=ADMIN_KEY,
        redis_prefix=f"lt:{uuid.uuid4().hex[:8]}:",
        consumer_group=f"quota-{uuid.uuid4().hex[:8]}",
        sweep_interval_s=3600,
        log_json=False,
    )


@contextlib.asynccontextmanager
async def running(settings: QuotaSettings, clock: ManualClock | None = None) -> AsyncIterator[Harness]:
    app = create_app(settings, clock=clock)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://quota") as client:
            yield Harness(client, app.state.quota)


@pytest.fixture
async def publisher(settings: QuotaSettings) -> AsyncIterator[EventPublisher]:
    pub = EventPublisher(settings)
    await pub.start()
    yield pub
    await pub.stop()


async def lose_redis(settings: QuotaSettings) -> None:
    """Redis loses everything this service had (its keys; other tests share the server, or the cluster's
    nodes: each key is deleted on its own node)."""
    redis: Any = (
        RedisCluster.from_url(settings.redis_url)
        if settings.redis_cluster
        else Redis.from_url(settings.redis_url)
    )
    try:
        keys = [k async for k in redis.scan_iter(match=f"{settings.redis_prefix}*", count=1000)]
        for key in keys:
            await redis.delete(key)
    finally:
        await redis.aclose()


async def forget_scripts(settings: QuotaSettings) -> None:
    """Redis forgets every Lua script it held (as after a restart without persistence)."""
    redis: Any = (
        RedisCluster.from_url(settings.redis_url)
        if settings.redis_cluster
        else Redis.from_url(settings.redis_url)
    )
    try:
        await redis.script_flush()
    finally:
        await redis.aclose()


async def test_release_frees_the_unused_part_for_back_to_back_requests(settings: QuotaSettings) -> None:
    async with running(settings) as h:
        user = await h.create_user(quota=3000)
        used = 0
        for _ in range(20):  # no max_tokens: each reserves everything left, then releases what it did not use
            r = await h.admit(user["api_key"], prompt_tokens=40, model_max_output_tokens=4096)
            assert r.status_code == 200, r.text
            admitted = r.json()
            assert admitted["reserved_tokens"] == 3000 - used  # all that is left
            released = await h.release(admitted["reservation_id"], 100)
            assert released.status_code == 200 and released.json() == {"released": True}
            used += 100
            assert await h.pool(user["pool_id"]) == (0, used)  # held: only what was used, until settled
        again = await h.release(admitted["reservation_id"], 100)
        assert again.json() == {"released": False}  # idempotent


async def test_releases_riding_on_an_admission_are_applied_before_it(settings: QuotaSettings) -> None:
    """The gateway sends the releases it did not wait for with its next admission (`releases`)."""
    async with running(settings) as h:
        user = await h.create_user(quota=3000)
        await forget_scripts(settings)  # the release script is first loaded for the pipeline it rides in
        first = (await h.admit(user["api_key"], prompt_tokens=40, model_max_output_tokens=4096)).json()
        assert first["reserved_tokens"] == 3000  # everything: a second admission alone is refused
        r = await h.admit(user["api_key"], prompt_tokens=40)
        assert r.status_code == 402, r.text
        ride = {"reservation_id": first["reservation_id"], "total_tokens": 100, "cost_usd_micros": 0}
        # Refused calls apply nothing: without the gateway's assertion, or with a malformed release.
        body = {"api_key": user["api_key"], "request_id": "r", "model": "mock-gpt", "provider": "mock",
                "prompt_tokens": 40, "releases": [ride]}  # fmt: skip
        who = await h.client.post(
            "/internal/authenticate", json={"api_key": user["api_key"]}, headers=internal()
        )
        for refused in (
            TEST_KEYS.headers("analytics"),
            internal(who.text),
            InternalKeys.generate().headers("quota"),
        ):
            # another service's assertion, a user's assertion (not the gateway's caller one), a stranger's key
            r = await h.client.post("/internal/admit", json=body, headers=refused)
            assert r.status_code == 401, r.text
        bad = {**body, "releases": [{**ride, "total_tokens": -1}]}
        r = await h.client.post("/internal/admit", json=bad, headers=internal())
        assert r.status_code == 400 and r.json()["error"]["param"] == "releases.0.total_tokens"
        r = await h.client.post("/internal/admit", json={**body, "releases": [ride] * 65}, headers=internal())
        assert r.status_code == 400 and r.json()["error"]["param"] == "releases"
        assert await h.pool(user["pool_id"]) == (0, 3000)
        # The release rides on the next admission and is applied first: the admission finds the rest free.
        second = await h.admit(
            user["api_key"], prompt_tokens=40, model_max_output_tokens=4096, releases=[ride]
        )
        assert second.status_code == 200, second.text
        assert second.json()["reserved_tokens"] == 2900
        assert await h.pool(user["pool_id"]) == (0, 3000)  # 100 used by the first, 2,900 held by the second
        # Applied once: riding again (or on its own) releases nothing more.
        third = await h.admit(user["api_key"], prompt_tokens=40, releases=[ride])
        assert third.status_code == 402
        assert (await h.release(first["reservation_id"], 100)).json() == {"released": False}


async def test_releases_riding_on_an_admission_apply_whatever_its_answer(settings: QuotaSettings) -> None:
    """Releases go to Redis in the admission's round trip; an admission refused before Redis (unknown key) or
    by Redis (the budget) still applies them, and so does one after Redis forgot its scripts (NOSCRIPT)."""
    async with running(settings) as h:
        user = await h.create_user(quota=3000)
        held = []
        for _ in range(3):
            r = await h.admit(user["api_key"], prompt_tokens=40, max_output_tokens=960)
            assert r.status_code == 200, r.text
            held.append(
                {"reservation_id": r.json()["reservation_id"], "total_tokens": 100, "cost_usd_micros": 0}
            )
        assert await h.pool(user["pool_id"]) == (0, 3000)
        # Refused before Redis: an unknown key. The release is applied all the same.
        r = await h.admit("lt-not-a-key-" + uuid.uuid4().hex, releases=[held[0]])
        assert r.status_code == 401, r.text
        assert await h.pool(user["pool_id"]) == (0, 3000 - 900)
        # Refused by Redis: more than is left even after the release, which goes first and stays applied.
        r = await h.admit(user["api_key"], prompt_tokens=2500, max_output_tokens=10, releases=[held[1]])
        assert r.status_code == 402, r.text
        assert await h.pool(user["pool_id"]) == (0, 3000 - 1800)
        # Redis forgot every script: both are loaded again and run, the release first (the admission needs what
        # it frees: 1,200 + 900 left).
        await forget_scripts(settings)
        r = await h.admit(user["api_key"], prompt_tokens=1000, max_output_tokens=1000, releases=[held[2]])
        assert r.status_code == 200, r.text
        assert r.json()["reserved_tokens"] == 2000
        assert await h.pool(user["pool_id"]) == (0, 300 + 2000)
        assert (await h.release(held[2]["reservation_id"], 100)).json() == {"released": False}  # applied once


async def test_concurrent_admissions_share_redis_round_trips_and_each_gets_its_own_answer(
    settings: QuotaSettings,
) -> None:
    """Admissions arriving together go to Redis in one pipeline (not on Redis Cluster, whose pipelines refuse
    scripts); each still gets its own reservation and verdict, and the pool holds exactly what was granted."""
    async with running(settings) as h:
        user = await h.create_user(quota=10_000)
        first = await h.admit(user["api_key"], prompt_tokens=10, max_output_tokens=490)  # the key now known
        assert first.status_code == 200, first.text
        pipeline = h.service.state._pipeline
        pipelines, calls = pipeline.pipelines, pipeline.calls
        answers = await asyncio.gather(
            *(h.admit(user["api_key"], prompt_tokens=10, max_output_tokens=490) for _ in range(25))
        )
        granted = [a.json() for a in answers if a.status_code == 200]
        refused = [a for a in answers if a.status_code != 200]
        assert len(granted) == 19 and all(r.status_code == 402 for r in refused), [a.text for a in refused]
        assert len({g["reservation_id"] for g in granted}) == 19
        assert await h.pool(user["pool_id"]) == (0, 20 * 500)
        if not settings.redis_cluster:
            assert pipeline.calls - calls == 25
            assert pipeline.pipelines - pipelines < 25, "every admission had a round trip of its own"


async def test_the_gateway_waits_for_the_release_only_on_a_snug_budget(settings: QuotaSettings) -> None:
    """`release_wait`: true when some cap keeps less than twice the reservation free (the next request could
    need the unused part at once), false with room to spare (the answer need not wait for the release)."""
    async with running(settings) as h:
        roomy = await h.create_user(quota=100_000)
        r = await h.admit(roomy["api_key"], prompt_tokens=10, max_output_tokens=90)  # 100 held, 99,900 free
        assert r.status_code == 200 and r.json()["release_wait"] is False, r.text
        snug = await h.create_user(quota=250)
        r = await h.admit(snug["api_key"], prompt_tokens=10, max_output_tokens=90)  # 100 held, 150 free
        assert r.status_code == 200 and r.json()["release_wait"] is True, r.text
        r = await h.admit(roomy["api_key"], prompt_tokens=40, model_max_output_tokens=4096)
        assert r.json()["reserved_tokens"] == 4136 and r.json()["release_wait"] is False
        r = await h.admit(snug["api_key"], prompt_tokens=10, model_max_output_tokens=4096)
        assert r.json()["reserved_tokens"] == 150 and r.json()["release_wait"] is True  # all that was left


async def test_a_release_settled_soon_costs_postgres_no_second_write(settings: QuotaSettings) -> None:
    """The release's update of the durable record waits `release_record_delay_s`: settled within it, it is never
    written (one write per request, the admission's); not settled, it is written once due."""
    settings = settings.model_copy(update={"release_record_delay_s": 2.0})
    async with running(settings) as h:
        durable = h.service.durable
        user = await h.create_user(quota=10_000)

        async def stored(reservation_id: str) -> list[int] | None:
            async with h.service.db.acquire() as conn:
                row = await conn.fetchrow(
                    "SELECT amounts FROM open_reservations WHERE reservation_id = $1", reservation_id
                )
            return None if row is None else list(row["amounts"])

        before = durable.written
        settled = (await h.admit(user["api_key"], prompt_tokens=10, max_output_tokens=90)).json()
        await wait_until(lambda: stored(settled["reservation_id"]), what="the admission's record")

        async def counted() -> bool:  # the writer counts a batch after its commit (visible a moment earlier)
            return bool(durable.written > before)

        await wait_until(counted, what="the admission's write counted")
        written = durable.written
        await h.release(settled["reservation_id"], 40)
        await h.service.settlement.settle_usage(usage(settled, 40))
        assert await stored(settled["reservation_id"]) is None
        kept = (await h.admit(user["api_key"], prompt_tokens=10, max_output_tokens=90)).json()
        await wait_until(lambda: _eq(stored(kept["reservation_id"]), [100]), what="the admission's record")
        await h.release(kept["reservation_id"], 30)
        assert await stored(kept["reservation_id"]) == [100]  # not yet: the release's update is deferred
        await wait_until(lambda: _eq(stored(kept["reservation_id"]), [30]), what="the deferred update")
        assert durable.written == written + 2  # the second admission and its release; never the settled one's
        assert await stored(settled["reservation_id"]) is None


async def test_admissions_within_the_linger_are_written_in_one_statement(settings: QuotaSettings) -> None:
    """The writer gathers `reservation_record_linger_s` after the first record: three admissions made within it
    cost PostgreSQL one statement, and a reservation settled before the write is not in it."""
    settings = settings.model_copy(update={"reservation_record_linger_s": 1.0})
    async with running(settings) as h:
        durable = h.service.durable
        user = await h.create_user(quota=10_000)

        async def stored(reservation_id: str) -> bool:
            async with h.service.db.acquire() as conn:
                return bool(
                    await conn.fetchval(
                        "SELECT count(*) FROM open_reservations WHERE reservation_id = $1", reservation_id
                    )
                )

        writes, written = durable.writes, durable.written
        kept = [(await h.admit(user["api_key"], max_output_tokens=90)).json() for _ in range(3)]
        settled = (await h.admit(user["api_key"], max_output_tokens=90)).json()
        await h.service.settlement.settle_usage(usage(settled, 40))  # charged before the writer wrote it

        async def all_stored() -> bool:
            return all([await stored(r["reservation_id"]) for r in kept])

        async def counted() -> bool:  # the writer counts a batch after its commit (visible a moment earlier)
            return bool(durable.writes > writes)

        await wait_until(all_stored, what="the gathered admissions' records")
        await wait_until(counted, what="the write counted")
        assert durable.writes == writes + 1
        assert durable.written == written + 3
        assert not await stored(settled["reservation_id"])


async def _eq(value: Any, expected: object) -> bool:
    return bool(await value == expected)


async def test_release_needs_the_gateways_assertion_and_valid_input(settings: QuotaSettings) -> None:
    async with running(settings) as h:
        user = await h.create_user(quota=1000)
        admitted = (await h.admit(user["api_key"], max_output_tokens=90)).json()
        for headers in ({}, InternalKeys.generate().headers("quota"), TEST_KEYS.headers("analytics")):
            r = await h.release(admitted["reservation_id"], 0, headers)
            assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_internal_assertion"
        r = await h.client.post(
            "/internal/release", json={"reservation_id": admitted["reservation_id"], "total_tokens": -1,
                                       "cost_usd_micros": 0}, headers=internal(),
        )  # fmt: skip
        assert r.status_code == 400 and r.json()["error"]["param"] == "total_tokens"
        assert await h.pool(user["pool_id"]) == (0, 100)  # nothing released by the refused calls


async def test_release_then_settlement_charges_once(settings: QuotaSettings) -> None:
    async with running(settings) as h:
        user = await h.create_user(quota=5000)
        admitted = (await h.admit(user["api_key"], prompt_tokens=100, max_output_tokens=900)).json()
        await h.release(admitted["reservation_id"], 250)
        batch = BatchSettlement(h.service.settlement)
        event = usage(admitted, 250)
        await batch.settle([event, event])  # the same event twice in one batch
        await batch.settle([event, usage(admitted, 250)])  # redelivered, and a second event for it
        await h.service.settlement.settle_usage(event)
        assert await h.ledger(user["pool_id"]) == [(250, "usage")]
        assert await h.pool(user["pool_id"]) == (250, 0)


async def test_a_batch_settles_many_reservations_in_one_go(settings: QuotaSettings) -> None:
    async with running(settings) as h:
        users = [await h.create_user(quota=100_000) for _ in range(3)]
        admitted = [
            (await h.admit(u["api_key"], prompt_tokens=10, max_output_tokens=500)).json()
            for u in users
            for _ in range(20)
        ]
        events = [usage(a, 7 + i) for i, a in enumerate(admitted)]
        await BatchSettlement(h.service.settlement).settle([*events, *events[:5]])
        for n, u in enumerate(users):
            expected = [7 + i for i in range(20 * n, 20 * (n + 1))]
            assert await h.ledger(u["pool_id"]) == [(a, "usage") for a in expected]
            assert await h.pool(u["pool_id"]) == (sum(expected), 0)


async def test_a_command_is_applied_while_a_usage_backlog_waits(
    settings: QuotaSettings, publisher: EventPublisher, database_url: str
) -> None:
    async with running(settings) as h:
        payer, other = await h.create_user(quota=10**9), await h.create_user(quota=1000)
        admitted = [(await h.admit(payer["api_key"], max_output_tokens=20)).json() for _ in range(300)]
        blocker = await asyncpg.connect(database_url)
        tx = blocker.transaction()
        await tx.start()
        # Settlement of the payer's usage waits on this row lock: a usage backlog that cannot move.
        await blocker.execute("SELECT 1 FROM pools WHERE id = $1 FOR UPDATE", payer["pool_id"])
        try:
            for a in admitted:
                await publisher.publish(Topics.USAGE, usage(a, 5), key=payer["id"])
            await publisher.publish(
                Topics.FREEZE_REQUESTS,
                RequestFreeze(target_type="user", target_id=other["id"], reason="loop", duration_s=300),
            )

            async def frozen() -> bool:
                return bool(
                    await h.service.state.redis.exists(
                        h.service.state.freeze_key(other["org_id"], "user", other["id"])
                    )
                )

            await wait_until(frozen, timeout=15, what="the freeze applied")
            assert (await h.admit(other["api_key"], max_output_tokens=20)).status_code == 403
            assert (await h.pool(payer["pool_id"]))[1] == 300 * 30  # no usage settled yet
        finally:
            await tx.rollback()
            await blocker.close()

        async def drained() -> bool:
            return await h.pool(payer["pool_id"]) == (300 * 5, 0)

        await wait_until(drained, timeout=90, what="the backlog settled")


async def test_reservation_survives_redis_loss_and_is_charged_at_expiry(settings: QuotaSettings) -> None:
    clock = ManualClock()
    async with running(settings, clock) as h:
        user = await h.create_user(quota=10_000)
        never_used = await h.admit(user["api_key"], prompt_tokens=100, max_output_tokens=900)
        assert never_used.status_code == 200
        released = (await h.admit(user["api_key"], prompt_tokens=100, max_output_tokens=900)).json()
        await h.release(released["reservation_id"], 300)
        await h.service.durable.flush()
        await lose_redis(settings)

        # The next admission finds Redis empty: open reservations are put back, counters start holding them.
        # The lost rate-limit buckets count as full from that moment: it waits for them to drain a little.
        assert (await h.admit(user["api_key"], prompt_tokens=100, max_output_tokens=900)).status_code == 429
        clock.now_ms += 1_000
        third = await h.admit(user["api_key"], prompt_tokens=100, max_output_tokens=900)
        assert third.status_code == 200
        assert await h.pool(user["pool_id"]) == (0, 1000 + 300 + 1000)  # never below what is owed

        await BatchSettlement(h.service.settlement).settle([usage(released, 300), usage(third.json(), 50)])
        assert await h.pool(user["pool_id"]) == (350, 1000)

        # The first never gets a usage event: at its expiry it is charged what it reserved.
        clock.now_ms += settings.reservation_ttl_s * 1000
        assert await h.service.settlement.sweep_expired() >= 1  # earlier tests' reservations expire too
        assert sorted(await h.ledger(user["pool_id"])) == [(50, "usage"), (300, "usage"), (1000, "expiry")]
        assert await h.pool(user["pool_id"]) == (1350, 0)
        async with h.service.db.acquire() as conn:
            open_left = "SELECT count(*) FROM open_reservations WHERE pool_id = $1"
            assert await conn.fetchval(open_left, user["pool_id"]) == 0


async def test_rate_limit_buckets_redis_lost_count_as_full_and_drain_from_then(
    settings: QuotaSettings,
) -> None:
    tight = settings.model_copy(update={"key_requests_per_period": 3, "bucket_period_s": 60.0})
    clock = ManualClock()
    async with running(tight, clock) as h:
        user = await h.create_user(quota=100_000)
        for _ in range(3):
            assert (await h.admit(user["api_key"], max_output_tokens=10)).status_code == 200
        assert (await h.admit(user["api_key"], max_output_tokens=10)).status_code == 429
        await h.service.durable.flush()
        await lose_redis(tight)
        clock.now_ms += 10_000  # Redis is gone for 10 s: nothing is admitted, the buckets would have drained

        # Redis came back empty while requests were open: the key's bucket counts as full (3 of 3) at the last
        # admission, and drained since (10 s: half a request), not as empty (3 more at once, twice the limit).
        refused = await h.admit(user["api_key"], max_output_tokens=10)
        assert refused.status_code == 429, refused.text
        assert await h.service.state.buckets_full_at() == clock.now_ms - 10_000
        # ... and drains at the usual rate: one request per 20 s.
        clock.now_ms += 10_000
        assert (await h.admit(user["api_key"], max_output_tokens=10)).status_code == 200
        assert (await h.admit(user["api_key"], max_output_tokens=10)).status_code == 429
        # A full period after the loss every bucket has drained whatever it held.
        clock.now_ms += 60_000
        for _ in range(3):
            assert (await h.admit(user["api_key"], max_output_tokens=10)).status_code == 200


async def test_a_flush_returns_once_a_write_already_in_flight_is_committed(settings: QuotaSettings) -> None:
    """Recovery flushes, then reads the records: a write the writer had in flight must be committed by then, or
    recovery misses its reservations (the holds, and the rate-limit buckets counted as full)."""
    slow = settings.model_copy(update={"reservation_record_linger_s": 5.0})  # the writer stays out of the way
    async with running(slow, ManualClock()) as h:
        user = await h.create_user(quota=10_000)
        admitted = (await h.admit(user["api_key"], max_output_tokens=100)).json()
        durable = h.service.durable
        in_flight = asyncio.create_task(durable.flush())  # the writer's write: it has taken the queue
        await asyncio.sleep(0)
        assert not in_flight.done()
        await durable.flush()  # nothing left queued, but it waits for the write in flight
        assert in_flight.done() and durable.written == 1
        async with h.service.db.acquire() as conn:
            left = "SELECT count(*) FROM open_reservations WHERE reservation_id = $1"
            assert await conn.fetchval(left, admitted["reservation_id"]) == 1


async def test_a_quiet_redis_loss_leaves_the_buckets_empty(
    settings: QuotaSettings, postgres_url: str
) -> None:
    # Its own database: nothing charged, nothing open (a first start, or a loss after a quiet spell).
    quiet = settings.model_copy(
        update={"database_url": await create_database(postgres_url, f"quota_{uuid.uuid4().hex[:10]}")}
    )
    async with running(quiet, ManualClock()) as h:
        assert await h.service.state.buckets_full_at() == 0
        user = await h.create_user(quota=100_000)
        await lose_redis(quiet)
        assert (await h.admit(user["api_key"], max_output_tokens=10)).status_code == 200
        assert await h.service.state.buckets_full_at() == 0


async def test_a_record_written_after_its_charge_holds_nothing_when_redis_is_rebuilt(
    settings: QuotaSettings,
) -> None:
    """The writer's upsert cannot see a settlement's uncommitted charge, so a record can be written while its
    reservation is being charged and outlive the transaction that deleted it. Such a record must not come back
    as a hold: neither put back into Redis nor counted when counters are rebuilt, and recovery deletes it."""
    async with running(settings, ManualClock()) as h:
        user = await h.create_user(quota=10_000)
        admitted = (await h.admit(user["api_key"], prompt_tokens=100, max_output_tokens=400)).json()
        await h.service.durable.flush()
        async with h.service.db.acquire() as conn:
            record = await conn.fetchrow(
                "SELECT * FROM open_reservations WHERE reservation_id = $1", admitted["reservation_id"]
            )
        assert record is not None and list(record["amounts"]) == [500]
        await h.service.settlement.settle_usage(usage(admitted, 321))
        assert await h.pool(user["pool_id"]) == (321, 0)
        async with h.service.db.acquire() as conn:  # the race's outcome: the record back after the charge
            await conn.execute(
                "INSERT INTO open_reservations (reservation_id, expires_ms, pool_id, keys, amounts, fields)"
                " VALUES ($1, $2, $3, $4, $5, $6)",
                *[
                    record[c]
                    for c in ("reservation_id", "expires_ms", "pool_id", "keys", "amounts", "fields")
                ],
            )
            assert (
                await repo.open_reserved(conn, list(record["keys"])) == {}
            )  # a rebuilt counter holds none of it
        await lose_redis(settings)

        assert await h.service.durable.recover() == 0  # nothing put back ...
        assert await h.service.ctx.load_pools([user["pool_id"]]) == 1
        assert await h.pool(user["pool_id"]) == (321, 0)  # ... and the rebuilt counter holds nothing
        async with h.service.db.acquire() as conn:
            left = "SELECT count(*) FROM open_reservations WHERE reservation_id = $1"
            assert await conn.fetchval(left, admitted["reservation_id"]) == 0


async def test_reservation_lost_with_redis_before_a_restart_is_still_charged(settings: QuotaSettings) -> None:
    clock = ManualClock()
    async with running(settings, clock) as h:
        user = await h.create_user(quota=10_000)
        admitted = (await h.admit(user["api_key"], prompt_tokens=10, max_output_tokens=90)).json()
        await h.release(admitted["reservation_id"], 40)
    await lose_redis(settings)  # quota stopped (its writer flushed), then Redis came back empty
    async with running(settings, clock) as h:
        assert await h.pool(user["pool_id"]) == (0, 40)  # loaded at start-up with what is still open
        clock.now_ms += settings.reservation_ttl_s * 1000
        await h.service.settlement.sweep_expired()  # (the background sweeper may be the one that charges it)
        assert await h.ledger(user["pool_id"]) == [(40, "expiry")]  # what it used, not what it reserved
        assert await h.pool(user["pool_id"]) == (40, 0)
        await h.service.settlement.settle_usage(usage(admitted, 40))  # the late event changes nothing
        assert await h.ledger(user["pool_id"]) == [(40, "expiry")]


async def test_usage_published_while_quota_is_down_is_settled_once_after_restart(
    settings: QuotaSettings, publisher: EventPublisher
) -> None:
    async with running(settings) as h:
        user = await h.create_user(quota=10_000)
        admitted = [(await h.admit(user["api_key"], max_output_tokens=90)).json() for _ in range(5)]
    for i, a in enumerate(admitted):  # quota is down: the events wait in the broker
        await publisher.publish(Topics.USAGE, usage(a, 10 + i), key=user["id"])
    async with running(settings) as h:

        async def settled() -> bool:
            return await h.pool(user["pool_id"]) == (60, 0)

        # (a fresh consumer group reads the usage topic from the start: earlier tests' events come first)
        await wait_until(settled, timeout=90, what="settled after the restart")
        assert sorted(await h.ledger(user["pool_id"])) == [(10 + i, "usage") for i in range(5)]


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_reservation_metrics_follow_admission_release_settlement_and_expiry(
    settings: QuotaSettings,
) -> None:
    clock = ManualClock()
    async with running(settings, clock) as h:
        before = {
            name: metric(name)
            for name in (
                "lt_quota_reservations_released_total",
                "lt_quota_reservations_settled_total",
                "lt_quota_reservations_expired_charged_total",
                "lt_quota_settlement_lag_seconds_count",
            )
        }
        admitted_before, denied_before = (
            metric("lt_quota_admissions_total", decision="admitted", cap="none"),
            metric("lt_quota_admissions_total", decision="insufficient_quota", cap="personal"),
        )
        user = await h.create_user(quota=2000)
        settled = (await h.admit(user["api_key"], prompt_tokens=100, max_output_tokens=500)).json()
        await h.admit(user["api_key"], prompt_tokens=100, max_output_tokens=500)  # never settled: expires
        denied = await h.admit(user["api_key"], prompt_tokens=5000, max_output_tokens=500)
        assert denied.status_code == 402
        assert metric("lt_quota_admissions_total", decision="admitted", cap="none") == admitted_before + 2
        assert (
            metric("lt_quota_admissions_total", decision="insufficient_quota", cap="personal")
            == denied_before + 1
        )

        await h.release(settled["reservation_id"], 150)
        await BatchSettlement(h.service.settlement).settle([usage(settled, 150)])
        clock.now_ms += settings.reservation_ttl_s * 1000
        expired = await h.service.settlement.sweep_expired()
        assert expired >= 1
        delta = {name: metric(name) - value for name, value in before.items()}
        assert delta == {
            "lt_quota_reservations_released_total": 1,
            "lt_quota_reservations_settled_total": 1,
            "lt_quota_reservations_expired_charged_total": expired,
            "lt_quota_settlement_lag_seconds_count": 1,
        }
        # Sampled by the sweep: what Redis still holds (nothing of this test's; earlier tests' are swept too).
        async with h.service.db.acquire() as conn:
            tags = sorted(
                {org_tag(r["id"]) for r in await conn.fetch("SELECT id FROM orgs")} | {org_tag(None)}
            )
        assert metric("lt_quota_reservations_open") == await h.service.state.open_reservations(tags)
