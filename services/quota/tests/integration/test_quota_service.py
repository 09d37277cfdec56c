import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaConsumer
from redis.asyncio import Redis

from leaky_common.auth import Principal
from leaky_common.db import create_database
from leaky_common.events import (
    CreditTokens,
    DebitTokens,
    FreezeChanged,
    RequestFreeze,
    TokensCredited,
    TokensDebited,
    Topics,
    UsageRecorded,
    parse_message,
)
from leaky_common.kafka import EventPublisher
from leaky_devinfra.infra import free_port
from leaky_devinfra.testing import TEST_KEYS, InternalKeys, ManualClock
from leaky_devinfra.testing import eventually as wait_until
from lt_quota.adapters.redis_state import RedisState
from lt_quota.main import create_app
from lt_quota.settings import QuotaSettings

pytestmark = pytest.mark.integration

ADMIN_KEY = "lt-test-admin-" + uuid.uuid4().hex


@dataclass
class Harness:
    client: httpx.AsyncClient
    settings: QuotaSettings
    service: Any

    async def principal_header(self, api_key: str) -> str:
        r = await self.client.post(
            "/internal/authenticate", json={"api_key": api_key}, headers=TEST_KEYS.headers("quota")
        )
        assert r.status_code == 200, r.text
        return r.text

    async def as_key(self, api_key: str) -> dict[str, str]:
        return TEST_KEYS.headers("quota", Principal.model_validate_json(await self.principal_header(api_key)))

    async def create_user(self, quota: int | None = None, **extra: Any) -> dict[str, Any]:
        body: dict[str, Any] = {"email": f"{uuid.uuid4().hex[:8]}@example.com", "name": "Someone", **extra}
        if quota is not None:
            body["personal_quota"] = quota
        r = await self.client.post("/v1/admin/users", json=body, headers=await self.as_key(ADMIN_KEY))
        assert r.status_code == 201, r.text
        return dict(r.json())

    async def admit(self, api_key: str, **fields: Any) -> httpx.Response:
        body = {
            "api_key": api_key,
            "request_id": uuid.uuid4().hex,
            "model": "mock-gpt",
            "provider": "mock",
            **fields,
        }
        body.setdefault("prompt_tokens", 10)
        return await self.client.post("/internal/admit", json=body, headers=TEST_KEYS.headers("quota"))

    async def quota(self, api_key: str) -> dict[str, Any]:
        r = await self.client.get("/v1/users/me/quota", headers=await self.as_key(api_key))
        assert r.status_code == 200, r.text
        return dict(r.json())


@pytest.fixture(scope="module")
async def database_url(postgres_url: str) -> str:
    return await create_database(postgres_url, f"quota_{uuid.uuid4().hex[:10]}")


@pytest.fixture(scope="module")
def group() -> str:
    return f"quota-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def settings(database_url: str, redis_url: str, kafka_bootstrap: str, group: str) -> QuotaSettings:
    return QuotaSettings(
        _env_file=None,
        environment="test",
        database_url=database_url,
        redis_url=redis_url,
        kafka_bootstrap=kafka_bootstrap,
        **TEST_KEYS.settings(),
        bootstrap_admin_key=ADMIN_KEY,
        redis_prefix=f"lt:{uuid.uuid4().hex[:8]}:",
        consumer_group=group,
        sweep_interval_s=3600,
        log_json=False,
    )


@contextlib.asynccontextmanager
async def running(settings: QuotaSettings, clock: ManualClock | None = None) -> AsyncIterator[Harness]:
    app = create_app(settings, clock=clock)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://quota") as client:
            yield Harness(client, settings, app.state.quota)


@pytest.fixture
async def publisher(settings: QuotaSettings) -> AsyncIterator[EventPublisher]:
    pub = EventPublisher(settings)
    await pub.start()
    yield pub
    await pub.stop()


async def test_a_signed_assertion_is_required(settings: QuotaSettings) -> None:
    async with running(settings) as h:
        body = {"api_key": ADMIN_KEY}
        r = await h.client.post("/internal/authenticate", json=body)
        assert r.status_code == 401
        r = await h.client.post(
            "/internal/authenticate", json=body, headers=InternalKeys.generate().headers("quota")
        )
        assert r.status_code == 401
        assert r.json()["error"]["type"] == "authentication_error"
        r = await h.client.get("/v1/users/me", headers=TEST_KEYS.headers("quota"))  # a caller names no user
        assert r.status_code == 401
        admin = Principal.model_validate_json(await h.principal_header(ADMIN_KEY))
        r = await h.client.get("/v1/users/me", headers=TEST_KEYS.headers("analytics", admin))
        assert r.status_code == 401
        r = await h.client.get("/v1/users/me", headers=TEST_KEYS.headers("quota", admin))
        assert r.status_code == 200
        r = await h.client.get("/ready")
        assert r.status_code == 200, r.text
        assert r.json()["checks"] == {"postgres": True, "redis": True, "consumer": True}


async def _probe_visible_keys(redis: Any, prefix: str) -> list[str]:
    """Every key but freezes: those come from commands on the shared broker (earlier tests' freeze requests,
    replayed by this quota's command consumer), never from a probe."""
    return sorted(k for k in await redis.keys(prefix + "*") if ":freeze:" not in k)


async def _nothing_left_to_sweep(h: Any) -> bool:
    return bool(await h.service.settlement.sweep_expired() == 0)


async def test_the_probe_needs_a_caller_assertion_and_records_nothing(settings: QuotaSettings) -> None:
    async with running(settings) as h:
        redis = h.service.state.redis
        # The database is shared with earlier tests: the start-up sweep charges their expired reservations
        # (writing counters and ledger rows). Let that finish before taking the snapshot the probe must keep.
        await wait_until(lambda: _nothing_left_to_sweep(h), what="the start-up sweep done")
        before = await _probe_visible_keys(redis, settings.redis_prefix)
        async with h.service.db.acquire() as conn:
            ledger_before = await conn.fetchval("SELECT count(*) FROM ledger")
        r = await h.client.post("/internal/probe", headers=TEST_KEYS.headers("quota"))
        assert (r.status_code, r.json()) == (200, {"postgres": True, "redis": True})
        # Only a caller assertion opens it: none, one from an untrusted key, or a user's (an admin's) are refused.
        admin = await h.principal_header(ADMIN_KEY)
        user_assertion = TEST_KEYS.headers("quota", Principal.model_validate_json(admin))
        for headers in ({}, InternalKeys.generate().headers("quota"), user_assertion):
            r = await h.client.post("/internal/probe", headers=headers)
            assert r.status_code == 401, headers
        # A zero-cost check: no bucket, reservation or counter appeared, and the ledger is as it was.
        assert await _probe_visible_keys(redis, settings.redis_prefix) == before
        async with h.service.db.acquire() as conn:
            assert await conn.fetchval("SELECT count(*) FROM ledger") == ledger_before
        # Redis gone: the check says so (quota answers 503), rather than passing.
        gone: Redis[str] = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", decode_responses=True)
        assert await RedisState(gone).admission_script_ready() is False
        closable: Any = gone  # aclose is missing from types-redis
        await closable.aclose()


async def test_admin_creates_user_whose_key_authenticates(settings: QuotaSettings) -> None:
    async with running(settings) as h:
        user = await h.create_user(quota=5000)
        assert user["api_key"].startswith("lt-") and user["key_prefix"] == user["api_key"][:11]
        principal = (
            await h.client.post(
                "/internal/authenticate",
                json={"api_key": user["api_key"]},
                headers=TEST_KEYS.headers("quota"),
            )
        ).json()
        assert principal["user_id"] == user["id"] and principal["role"] == "user"

        r = await h.client.post(
            "/internal/authenticate", json={"api_key": "lt-nope"}, headers=TEST_KEYS.headers("quota")
        )
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"

        admin = await h.as_key(ADMIN_KEY)
        dup = await h.client.post(
            "/v1/admin/users", json={"email": user["email"].upper(), "name": "x"}, headers=admin
        )
        assert dup.status_code == 409
        bad = await h.client.post("/v1/admin/users", json={"email": "nope", "name": "x"}, headers=admin)
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "email"

        quota = await h.quota(user["api_key"])
        assert quota["personal_quota"] == 5000 and quota["available_quota"] == 5000
        assert quota["pools"][0]["id"] == user["pool_id"] and quota["pools"][0]["resets_at"] is None

        listed = (await h.client.get("/v1/admin/users", headers=admin)).json()["data"]
        assert user["id"] in {u["id"] for u in listed}

        default_user = await h.create_user()
        assert (await h.quota(default_user["api_key"]))["personal_quota"] == 100_000


async def test_non_admin_forbidden_and_users_see_only_their_own_data(settings: QuotaSettings) -> None:
    async with running(settings) as h:
        alice = await h.create_user(quota=100)
        bob = await h.create_user(quota=200)
        as_alice = await h.as_key(alice["api_key"])

        r = await h.client.post("/v1/admin/users", json={"email": "x@y.z", "name": "x"}, headers=as_alice)
        assert r.status_code == 403 and r.json()["error"]["code"] == "admin_required"
        assert (
            await h.client.post("/v1/admin/teams", json={"name": "t"}, headers=as_alice)
        ).status_code == 403

        me = (await h.client.get("/v1/users/me", headers=as_alice)).json()
        assert me["id"] == alice["id"] and me["email"] == alice["email"] and me["status"] == "active"
        assert (await h.quota(alice["api_key"]))["personal_quota"] == 100
        assert (await h.quota(bob["api_key"]))["personal_quota"] == 200

        bob_keys = (await h.client.get("/v1/users/me/keys", headers=await h.as_key(bob["api_key"]))).json()[
            "data"
        ]
        r = await h.client.delete(f"/v1/users/me/keys/{bob_keys[0]['id']}", headers=as_alice)
        assert r.status_code == 404
        assert (await h.admit(bob["api_key"], max_output_tokens=16)).status_code == 200

        created = await h.client.post("/v1/users/me/keys", json={"name": "ci"}, headers=as_alice)
        assert created.status_code == 201
        second = created.json()
        assert (await h.admit(second["api_key"], max_output_tokens=16)).status_code == 200
        r = await h.client.delete(f"/v1/users/me/keys/{second['id']}", headers=as_alice)
        assert r.status_code == 200
        r = await h.admit(second["api_key"], max_output_tokens=16)
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"


async def test_teams_and_members(settings: QuotaSettings) -> None:
    async with running(settings) as h:
        admin = await h.as_key(ADMIN_KEY)
        r = await h.client.post(
            "/v1/admin/teams", json={"name": f"team-{uuid.uuid4().hex[:6]}", "pool": 1000}, headers=admin
        )
        assert r.status_code == 201 and r.json()["pool_id"]
        team = r.json()
        user = await h.create_user(quota=10)
        url = f"/v1/admin/teams/{team['id']}/members/{user['id']}"
        assert (await h.client.post(url, headers=admin)).status_code == 201
        again = await h.client.post(url, json={"role": "manager"}, headers=admin)
        assert again.status_code == 200 and again.json()["role"] == "manager"
        me = (await h.client.get("/v1/users/me", headers=await h.as_key(user["api_key"]))).json()
        assert me["team_id"] == team["id"]
        assert (
            await h.client.post(f"/v1/admin/teams/{team['id']}/members/nobody", headers=admin)
        ).status_code == 404
        assert (
            await h.client.post(f"/v1/admin/teams/none/members/{user['id']}", headers=admin)
        ).status_code == 404
        r = await h.client.post(
            "/v1/admin/users", json={"email": "t@x.y", "name": "t", "team_id": "none"}, headers=admin
        )
        assert r.status_code == 404
        member = await h.create_user(team_id=team["id"])
        assert member["team_id"] == team["id"]


async def test_admit_then_settlement_over_the_broker_charges_once(
    settings: QuotaSettings, publisher: EventPublisher
) -> None:
    async with running(settings) as h:
        user = await h.create_user(quota=10_000)
        r = await h.admit(user["api_key"], prompt_tokens=100, max_output_tokens=200)
        assert r.status_code == 200, r.text
        admitted = r.json()
        assert admitted["reserved_tokens"] == 300 and admitted["granted_output_tokens"] == 200
        assert admitted["quota_source"] == "personal" and admitted["pool_id"] == user["pool_id"]
        assert (
            admitted["ratelimit"]["limit_requests"] == 600
            and admitted["ratelimit"]["remaining_requests"] == 599
        )
        q = await h.quota(user["api_key"])
        assert (q["pools"][0]["reserved"], q["used_tokens"], q["available_quota"]) == (300, 0, 9700)

        event = UsageRecorded(
            request_id="req-1",
            reservation_id=admitted["reservation_id"],
            user_id=user["id"],
            model="mock-gpt",
            provider="mock",
            prompt_tokens=100,
            completion_tokens=150,
            total_tokens=250,
        )
        await publisher.publish(Topics.USAGE, event, key=user["id"])
        await publisher.publish(Topics.USAGE, event, key=user["id"])  # redelivery: same event id
        await publisher.publish(
            Topics.USAGE, event.model_copy(update={"event_id": uuid.uuid4().hex}), key=user["id"]
        )

        # A marker settled after the duplicates proves they were consumed before we look.
        marker = (await h.admit(user["api_key"], prompt_tokens=10, max_output_tokens=16)).json()
        marker_event = UsageRecorded(
            request_id="req-2",
            reservation_id=marker["reservation_id"],
            user_id=user["id"],
            model="mock-gpt",
            provider="mock",
            total_tokens=20,
        )
        await publisher.publish(Topics.USAGE, marker_event, key=user["id"])

        async def settled() -> dict[str, Any] | None:
            q = await h.quota(user["api_key"])
            return q if q["pools"][0]["reserved"] == 0 else None

        q = await wait_until(settled, what="both reservations settled")
        assert q["used_tokens"] == 250 + 20
        assert q["available_quota"] == 10_000 - 270
        async with h.service.db.acquire() as conn:
            rows = await conn.fetch(
                "SELECT amount, kind FROM ledger WHERE pool_id = $1 ORDER BY id", user["pool_id"]
            )
        assert [(r["amount"], r["kind"]) for r in rows] == [(250, "usage"), (20, "usage")]


async def test_concurrent_admissions_never_overspend(settings: QuotaSettings) -> None:
    async with running(settings) as h:
        user = await h.create_user(quota=20 * 50)  # exactly 20 requests of 10 prompt + 40 output tokens
        results = await asyncio.gather(
            *(
                h.admit(user["api_key"], prompt_tokens=10, max_output_tokens=40, min_output_tokens=40)
                for _ in range(200)
            )
        )
        codes = [r.status_code for r in results]
        assert codes.count(200) == 20
        assert codes.count(402) == 180
        denial = next(r for r in results if r.status_code == 402).json()["error"]
        assert denial["type"] == "insufficient_quota" and denial["code"] == "personal_pool_exhausted"
        assert denial["approval"]["endpoint"] == "POST /v1/approvals" and denial["approval"]["message"]
        assert {r.json()["reserved_tokens"] for r in results if r.status_code == 200} == {50}
        q = await h.quota(user["api_key"])
        assert q["pools"][0]["reserved"] == 1000 and q["available_quota"] == 0


async def test_partial_grant_fits_remaining_budget(settings: QuotaSettings) -> None:
    async with running(settings) as h:
        user = await h.create_user(quota=500)
        r = await h.admit(user["api_key"], prompt_tokens=100)  # no max_tokens: the model's 4096 is capped
        assert r.status_code == 200
        assert (r.json()["reserved_tokens"], r.json()["granted_output_tokens"]) == (500, 400)
        assert (await h.admit(user["api_key"], prompt_tokens=0)).status_code == 402


async def test_small_max_tokens_is_granted_not_denied(settings: QuotaSettings) -> None:
    async with running(settings) as h:
        user = await h.create_user(quota=1000)
        # max_output_tokens below the default minimum (16) is what the client wants: grant it.
        r = await h.admit(user["api_key"], prompt_tokens=10, max_output_tokens=5)
        assert r.status_code == 200, r.text
        assert (r.json()["reserved_tokens"], r.json()["granted_output_tokens"]) == (15, 5)


async def test_leaky_bucket_denies_with_retry_after_and_leaks(settings: QuotaSettings) -> None:
    clock = ManualClock()
    tight = settings.model_copy(update={"key_requests_per_period": 3, "bucket_period_s": 60.0})
    async with running(tight, clock) as h:
        user = await h.create_user(quota=100_000)
        for _ in range(3):
            assert (await h.admit(user["api_key"], max_output_tokens=16)).status_code == 200
        r = await h.admit(user["api_key"], max_output_tokens=16)
        assert r.status_code == 429
        assert r.json()["error"]["code"] == "rate_limited" and r.json()["error"]["type"] == "rate_limit_error"
        assert int(r.headers["retry-after"]) == 20  # one request leaks every 60/3 s
        clock.now_ms += 10_000
        r = await h.admit(user["api_key"], max_output_tokens=16)
        assert r.status_code == 429 and int(r.headers["retry-after"]) == 10
        clock.now_ms += 10_000
        r = await h.admit(user["api_key"], max_output_tokens=16)
        assert r.status_code == 200
        assert r.json()["ratelimit"]["remaining_requests"] == 0


async def test_token_bucket_denies_instead_of_shrinking_and_is_refunded_at_settlement(
    settings: QuotaSettings,
) -> None:
    clock = ManualClock()
    tight = settings.model_copy(update={"key_tokens_per_period": 2000, "bucket_output_estimate_tokens": 1024})
    async with running(tight, clock) as h:
        user = await h.create_user(quota=100_000)
        # No max_tokens: the pool reserves the model's maximum, the bucket is charged prompt + 1024 expected.
        r = await h.admit(user["api_key"], prompt_tokens=100)
        assert r.status_code == 200, r.text
        first = r.json()
        assert (first["reserved_tokens"], first["granted_output_tokens"]) == (100 + 4096, 4096)
        assert first["ratelimit"]["remaining_tokens"] == 2000 - 1124
        # The next one does not fit the bucket: 429 with Retry-After, not a silently tiny grant.
        r = await h.admit(user["api_key"], prompt_tokens=100)
        assert r.status_code == 429 and r.json()["error"]["limit"] == "key_tokens"
        assert int(r.headers["retry-after"]) >= 1
        # Settled at 124 tokens: the unused 1000 go back to the bucket at once.
        await h.service.settlement.settle_usage(
            UsageRecorded(
                request_id="r1",
                reservation_id=first["reservation_id"],
                user_id=user["id"],
                model="mock-gpt",
                provider="mock",
                total_tokens=124,
            )
        )
        r = await h.admit(user["api_key"], prompt_tokens=100)
        assert r.status_code == 200, r.text
        assert r.json()["ratelimit"]["remaining_tokens"] == 2000 - 124 - 1124
        # With max_tokens the bucket is charged the grant.
        r = await h.admit(user["api_key"], prompt_tokens=100, max_output_tokens=700)
        assert r.status_code == 429


async def test_unsettled_reservation_is_charged_at_ttl_and_late_settlement_is_noop(
    settings: QuotaSettings,
) -> None:
    clock = ManualClock()
    async with running(settings, clock) as h:
        user = await h.create_user(quota=1000)
        admitted = (await h.admit(user["api_key"], prompt_tokens=10, max_output_tokens=90)).json()
        assert await h.service.settlement.sweep_expired() == 0
        clock.now_ms += settings.reservation_ttl_s * 1000
        # Earlier tests' open reservations (same database, other Redis prefixes) are charged too.
        assert await h.service.settlement.sweep_expired() >= 1
        late = UsageRecorded(
            request_id="late",
            reservation_id=admitted["reservation_id"],
            user_id=user["id"],
            model="m",
            provider="p",
            total_tokens=30,
        )
        await h.service.settlement.settle_usage(late)
        q = await h.quota(user["api_key"])
        assert (q["used_tokens"], q["pools"][0]["reserved"]) == (100, 0)


async def test_freeze_command_blocks_admission(settings: QuotaSettings, publisher: EventPublisher) -> None:
    async with running(settings) as h:
        user = await h.create_user(quota=1000)
        await publisher.publish(
            Topics.FREEZE_REQUESTS,
            RequestFreeze(target_type="user", target_id=user["id"], reason="loop", duration_s=300),
        )

        async def frozen() -> httpx.Response | None:
            r = await h.admit(user["api_key"], max_output_tokens=16)
            return r if r.status_code == 403 else None

        r = await wait_until(frozen, what="freeze applied")
        assert r.json()["error"]["code"] == "frozen"
        r = await h.admit(user["api_key"], max_output_tokens=16, session_id="s1")
        assert r.status_code == 403


async def read_replies(bootstrap: str, saga_id: str, count: int) -> list[TokensCredited | TokensDebited]:
    consumer = AIOKafkaConsumer(
        Topics.SAGA_REPLIES, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    found: list[TokensCredited | TokensDebited] = []
    try:
        deadline = time.monotonic() + 30
        while len(found) < count and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for record in records:
                    message = parse_message(record.value or b"")
                    if isinstance(message, TokensCredited | TokensDebited) and message.saga_id == saga_id:
                        found.append(message)
    finally:
        await consumer.stop()
    return found


async def test_credit_command_raises_limit_once_and_replies_through_outbox(
    settings: QuotaSettings, publisher: EventPublisher, kafka_bootstrap: str
) -> None:
    async with running(settings) as h:
        user = await h.create_user(quota=1000)
        saga_id = uuid.uuid4().hex
        cmd = CreditTokens(
            saga_id=saga_id, step="credit", purchase_id="p-" + saga_id, user_id=user["id"], amount=500
        )
        await publisher.publish(Topics.QUOTA_COMMANDS, cmd, key=cmd.purchase_id)
        replies = await read_replies(kafka_bootstrap, saga_id, 1)
        assert len(replies) == 1
        assert replies[0].success and replies[0].new_limit == 1500 and replies[0].pool_id == user["pool_id"]
        assert (await h.quota(user["api_key"]))["personal_quota"] == 1500

        # A retried command (new event id) and a redelivery (same event id): limit raised once, same reply.
        await publisher.publish(Topics.QUOTA_COMMANDS, cmd.model_copy(update={"event_id": uuid.uuid4().hex}))
        await publisher.publish(Topics.QUOTA_COMMANDS, cmd)
        replies = await read_replies(kafka_bootstrap, saga_id, 3)
        assert len(replies) == 3
        assert {r.event_id for r in replies} == {replies[0].event_id}
        assert all(r.new_limit == 1500 for r in replies)
        assert (await h.quota(user["api_key"]))["personal_quota"] == 1500
        async with h.service.db.acquire() as conn:
            assert await conn.fetchval('SELECT "limit" FROM pools WHERE id = $1', user["pool_id"]) == 1500

        unknown = CreditTokens(
            saga_id=uuid.uuid4().hex, step="credit", purchase_id="p", user_id="ghost", amount=5
        )
        await publisher.publish(Topics.QUOTA_COMMANDS, unknown)
        failed = await read_replies(kafka_bootstrap, unknown.saga_id, 1)
        assert len(failed) == 1 and not failed[0].success and "unknown user" in (failed[0].reason or "")

        # A usd credit goes to the buyer's usd pool: none yet is a clear refusal, the token pool is untouched.
        usd = CreditTokens(
            saga_id=uuid.uuid4().hex,
            step="credit",
            purchase_id="p-usd",
            user_id=user["id"],
            amount=7,
            unit="usd",
        )
        await publisher.publish(Topics.QUOTA_COMMANDS, usd)
        (refused,) = await read_replies(kafka_bootstrap, usd.saga_id, 1)
        assert not refused.success and "has no usd pool" in (refused.reason or "")
        assert (await h.quota(user["api_key"]))["personal_quota"] == 1500


async def test_debit_undoes_only_an_applied_credit_and_blocks_a_late_one(
    settings: QuotaSettings, publisher: EventPublisher, kafka_bootstrap: str
) -> None:
    async with running(settings) as h:
        user = await h.create_user(quota=1000)

        async def limit() -> int:
            return int((await h.quota(user["api_key"]))["personal_quota"])

        # Credit then compensate: the limit goes up and back down exactly.
        paid = uuid.uuid4().hex
        credit = CreditTokens(
            saga_id=paid, step="credit_tokens", purchase_id=paid, user_id=user["id"], amount=300
        )
        await publisher.publish(Topics.QUOTA_COMMANDS, credit, key=paid)
        assert (await read_replies(kafka_bootstrap, paid, 1))[0].success
        debit = DebitTokens(
            saga_id=paid, step="debit_tokens", purchase_id=paid, user_id=user["id"], amount=300
        )
        await publisher.publish(Topics.QUOTA_COMMANDS, debit, key=paid)
        replies = await read_replies(kafka_bootstrap, paid, 2)
        assert isinstance(replies[1], TokensDebited) and replies[1].success and replies[1].new_limit == 1000
        assert await limit() == 1000

        # The credit was lost or is late: the compensation takes nothing the user had...
        lost = uuid.uuid4().hex
        debit = DebitTokens(
            saga_id=lost, step="debit_tokens", purchase_id=lost, user_id=user["id"], amount=300
        )
        await publisher.publish(Topics.QUOTA_COMMANDS, debit, key=lost)
        (refused,) = await read_replies(kafka_bootstrap, lost, 1)
        assert isinstance(refused, TokensDebited) and not refused.success
        assert await limit() == 1000
        # ...and the late credit is refused, so nothing is given away either; a retry gets the same answer.
        late = CreditTokens(
            saga_id=lost, step="credit_tokens", purchase_id=lost, user_id=user["id"], amount=300
        )
        await publisher.publish(Topics.QUOTA_COMMANDS, late, key=lost)
        await publisher.publish(Topics.QUOTA_COMMANDS, late.model_copy(update={"event_id": uuid.uuid4().hex}))
        replies = await read_replies(kafka_bootstrap, lost, 3)
        assert [type(r).__name__ for r in replies] == ["TokensDebited", "TokensCredited", "TokensCredited"]
        assert not replies[1].success and "compensated" in (replies[1].reason or "")
        assert replies[2].event_id == replies[1].event_id
        assert await limit() == 1000


async def test_flushed_redis_is_rebuilt_from_the_ledger_on_restart(
    settings: QuotaSettings, publisher: EventPublisher, redis_url: str
) -> None:
    async with running(settings) as h:
        user = await h.create_user(quota=10_000)
        admitted = (await h.admit(user["api_key"], prompt_tokens=100, max_output_tokens=400)).json()
        await publisher.publish(
            Topics.USAGE,
            UsageRecorded(
                request_id="r",
                reservation_id=admitted["reservation_id"],
                user_id=user["id"],
                model="m",
                provider="p",
                total_tokens=321,
            ),
        )

        async def used() -> bool:
            return bool((await h.quota(user["api_key"]))["used_tokens"] == 321)

        await wait_until(used, what="settled")

    redis: Redis[bytes] = Redis.from_url(redis_url)
    try:
        await redis.flushall()
        assert await redis.dbsize() == 0
    finally:
        await redis.aclose()  # type: ignore[attr-defined]  # the stubs predate aclose

    async with running(settings) as h:
        state = await h.service.state.pool_states(user["org_id"], [user["pool_id"]])
        assert state[user["pool_id"]].used == 321  # loaded at start-up, before any request
        q = await h.quota(user["api_key"])
        assert (q["used_tokens"], q["personal_quota"], q["available_quota"]) == (321, 10_000, 10_000 - 321)
        assert (
            await h.admit(ADMIN_KEY, max_output_tokens=16)
        ).status_code == 200  # bootstrap admin still works


async def test_bootstrap_is_idempotent(settings: QuotaSettings, database_url: str) -> None:
    async with running(settings):
        pass
    async with running(settings):
        pass
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM users WHERE email = 'admin@localhost'") == 1
        assert await conn.fetchval("SELECT count(*) FROM orgs WHERE name = 'default'") == 1
        assert await conn.fetchval("SELECT count(*) FROM api_keys WHERE name = 'bootstrap'") == 1
        limit = await conn.fetchval(
            "SELECT p.\"limit\" FROM pools p JOIN users u ON u.id = p.owner_id WHERE u.email = 'admin@localhost'"
        )
        assert limit == 10**12
    finally:
        await conn.close()


async def read_quota_events(bootstrap: str, target_id: str, count: int) -> list[FreezeChanged]:
    """`FreezeChanged` events about `target_id` on quota.events, waiting for `count` of them."""
    consumer = AIOKafkaConsumer(
        Topics.QUOTA_EVENTS, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    found: list[FreezeChanged] = []
    try:
        deadline = time.monotonic() + 30
        while len(found) < count and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for record in records:
                    message = parse_message(record.value or b"")
                    if isinstance(message, FreezeChanged) and message.target_id == target_id:
                        found.append(message)
    finally:
        await consumer.stop()
    return found


async def test_admin_freezes_and_unfreezes_a_key_with_events(
    settings: QuotaSettings, kafka_bootstrap: str
) -> None:
    clock = ManualClock()
    async with running(settings, clock) as h:
        admin = await h.as_key(ADMIN_KEY)
        user = await h.create_user(quota=10_000)
        as_user = await h.as_key(user["api_key"])
        second = (await h.client.post("/v1/users/me/keys", json={"name": "b"}, headers=as_user)).json()
        key_id = (
            await h.client.post(
                "/internal/authenticate",
                json={"api_key": user["api_key"]},
                headers=TEST_KEYS.headers("quota"),
            )
        ).json()["key_id"]
        body = {"target_type": "key", "target_id": key_id, "reason": "runaway loop", "duration_s": 300}
        assert (await h.client.post("/v1/admin/freezes", json=body, headers=as_user)).status_code == 403
        r = await h.client.post("/v1/admin/freezes", json=body, headers=admin)
        assert r.status_code == 201, r.text
        assert r.json()["expires_at"] is not None and r.json()["user_id"] == user["id"]

        # Frozen now, and still frozen well inside the duration (the seed's freeze expired at once).
        for _ in range(2):
            r = await h.admit(user["api_key"], max_output_tokens=16)
            assert r.status_code == 403, r.text
            error = r.json()["error"]
            assert (
                error["code"] == "frozen" and "runaway loop" in error["message"] and error["frozen"] == "key"
            )
            clock.now_ms += 60_000
        assert (await h.admit(second["api_key"], max_output_tokens=16)).status_code == 200  # other key

        listed = (await h.client.get("/v1/admin/freezes", headers=admin)).json()["data"]
        assert [(f["target_type"], f["reason"]) for f in listed if f["target_id"] == key_id] == [
            ("key", "runaway loop")
        ]
        url = f"/v1/admin/freezes/key/{key_id}"
        r = await h.client.delete(url, headers=admin)
        assert r.status_code == 200 and r.json()["lifted"] == 1
        assert (await h.client.delete(url, headers=admin)).json()["lifted"] == 0  # idempotent
        assert (await h.admit(user["api_key"], max_output_tokens=16)).status_code == 200
        assert not [
            f
            for f in (await h.client.get("/v1/admin/freezes", headers=admin)).json()["data"]
            if f["target_id"] == key_id
        ]

        events = await read_quota_events(kafka_bootstrap, key_id, 2)
        assert [(e.frozen, e.source, e.user_id) for e in events] == [
            (True, "admin", user["id"]),
            (False, "admin", user["id"]),
        ]
        assert events[0].reason == "runaway loop" and events[0].expires_at is not None

        # A freeze past its duration is no longer listed.
        await h.client.post("/v1/admin/freezes", json=body, headers=admin)
        clock.now_ms += 301_000
        assert not [
            f
            for f in (await h.client.get("/v1/admin/freezes", headers=admin)).json()["data"]
            if f["target_id"] == key_id
        ]


async def test_freeze_until_lifted_validation_and_rebuild_after_redis_loss(
    settings: QuotaSettings, redis_url: str
) -> None:
    session = "sess-" + uuid.uuid4().hex
    async with running(settings) as h:
        admin = await h.as_key(ADMIN_KEY)
        user = await h.create_user(quota=10_000)
        bad = [
            {"target_type": "team", "target_id": "x", "reason": "r"},
            {"target_type": "session", "target_id": "x", "reason": ""},
            {"target_type": "session", "target_id": "x", "reason": "r", "duration_s": 0},
        ]
        for body in bad:
            r = await h.client.post("/v1/admin/freezes", json=body, headers=admin)
            assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error", r.text
        r = await h.client.post(
            "/v1/admin/freezes",
            json={"target_type": "user", "target_id": "ghost", "reason": "r"},
            headers=admin,
        )
        assert r.status_code == 404
        r = await h.client.post(
            "/v1/admin/freezes",
            json={"target_type": "session", "target_id": session, "reason": "budget review"},
            headers=admin,
        )
        assert r.status_code == 201 and r.json()["expires_at"] is None
        r = await h.admit(user["api_key"], max_output_tokens=16, session_id=session)
        assert r.status_code == 403 and r.json()["error"]["frozen"] == "session"
        assert (await h.admit(user["api_key"], max_output_tokens=16, session_id="other")).status_code == 200

    redis: Redis[bytes] = Redis.from_url(redis_url)
    try:
        await redis.flushall()
    finally:
        await redis.aclose()  # type: ignore[attr-defined]  # the stubs predate aclose

    async with running(settings) as h:
        r = await h.admit(user["api_key"], max_output_tokens=16, session_id=session)
        assert r.status_code == 403 and "budget review" in r.json()["error"]["message"]
        admin = await h.as_key(ADMIN_KEY)
        assert (
            await h.client.delete(f"/v1/admin/freezes/session/{session}", headers=admin)
        ).status_code == 200
        assert (await h.admit(user["api_key"], max_output_tokens=16, session_id=session)).status_code == 200


async def test_freeze_command_announces_the_freeze(
    settings: QuotaSettings, publisher: EventPublisher, kafka_bootstrap: str
) -> None:
    async with running(settings) as h:
        user = await h.create_user(quota=1000)
        cmd = RequestFreeze(target_type="user", target_id=user["id"], reason="spend velocity", duration_s=300)
        await publisher.publish(Topics.FREEZE_REQUESTS, cmd)
        await publisher.publish(Topics.FREEZE_REQUESTS, cmd)  # redelivery: one freeze, one event
        (event,) = await read_quota_events(kafka_bootstrap, user["id"], 1)
        assert event.frozen and event.source == "anomaly" and event.causation_id == cmd.event_id
        r = await h.admit(user["api_key"], max_output_tokens=16)
        assert r.status_code == 403 and "spend velocity" in r.json()["error"]["message"]
        listed = (await h.client.get("/v1/admin/freezes", headers=await h.as_key(ADMIN_KEY))).json()["data"]
        assert len([f for f in listed if f["target_id"] == user["id"]]) == 1


async def test_credit_to_a_pool_the_buyer_may_not_top_up_is_refused(
    settings: QuotaSettings, publisher: EventPublisher, kafka_bootstrap: str
) -> None:
    async with running(settings) as h:
        buyer = await h.create_user(quota=1000)
        other = await h.create_user(quota=1000)
        saga_id = uuid.uuid4().hex
        cmd = CreditTokens(
            saga_id=saga_id,
            step="credit_tokens",
            purchase_id=saga_id,
            user_id=buyer["id"],
            pool_id=other["pool_id"],
            amount=500,
        )
        await publisher.publish(Topics.QUOTA_COMMANDS, cmd, key=saga_id)
        (reply,) = await read_replies(kafka_bootstrap, saga_id, 1)
        assert not reply.success and "may not top up" in (reply.reason or "")
        assert (await h.quota(other["api_key"]))["personal_quota"] == 1000
        # The buyer's own pool, named explicitly, is fine.
        own = cmd.model_copy(
            update={"event_id": uuid.uuid4().hex, "saga_id": saga_id + "b", "purchase_id": saga_id + "b"}
        )
        await publisher.publish(Topics.QUOTA_COMMANDS, own.model_copy(update={"pool_id": buyer["pool_id"]}))
        (reply,) = await read_replies(kafka_bootstrap, saga_id + "b", 1)
        assert reply.success and reply.new_limit == 1500
