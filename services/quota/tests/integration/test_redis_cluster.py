"""Quota on a real 3-master Redis Cluster: every key of one admission lies in its org's hash slot (the scripts
run unchanged), orgs spread over the nodes, and admission, freezes, release, settlement and expiry stay exact.
(test_settlement_core.py runs its whole suite on the cluster as well.) Last, a single Redis that stops
answering: quota gives up after `redis_timeout_s` instead of waiting for ever."""

import asyncio
import contextlib
import os
import signal
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.crc import key_slot

from leaky_common.auth import Principal
from leaky_common.db import create_database
from leaky_common.events import RequestFreeze, UsageRecorded
from leaky_devinfra.infra import free_port
from leaky_devinfra.proxy import FaultyProxy
from leaky_devinfra.redis_cluster import start_redis_cluster
from leaky_devinfra.testing import TEST_KEYS, ManualClock, eventually
from lt_quota.main import create_app
from lt_quota.settings import QuotaSettings
from lt_quota.usecases.settlement_batch import BatchSettlement

pytestmark = pytest.mark.integration

ADMIN_KEY = "lt-test-admin-" + uuid.uuid4().hex


def _as(principal_json: str | None = None) -> dict[str, str]:
    if principal_json is None:
        return TEST_KEYS.headers("quota")
    return TEST_KEYS.headers("quota", Principal.model_validate_json(principal_json))


@dataclass
class Harness:
    client: httpx.AsyncClient
    service: Any

    async def principal(self, api_key: str) -> dict[str, str]:
        r = await self.client.post("/internal/authenticate", json={"api_key": api_key}, headers=_as())
        assert r.status_code == 200, r.text
        return _as(r.text)

    async def org_with_user(self, quota: int) -> dict[str, Any]:
        """A new org (by the platform admin), and a user of it with a personal pool of `quota` tokens."""
        platform = await self.principal(ADMIN_KEY)
        body = {"name": f"org-{uuid.uuid4().hex[:8]}", "timezone": "UTC", "admin_email": "a@b.example"}
        r = await self.client.post("/v1/admin/orgs", json=body, headers=platform)
        assert r.status_code == 201, r.text
        admin = await self.principal(r.json()["admin"]["api_key"])
        user = {"email": f"{uuid.uuid4().hex[:8]}@example.com", "name": "Someone", "personal_quota": quota}
        r = await self.client.post("/v1/admin/users", json=user, headers=admin)
        assert r.status_code == 201, r.text
        return dict(r.json())

    async def admit(self, api_key: str, **fields: Any) -> httpx.Response:
        body = {"api_key": api_key, "request_id": uuid.uuid4().hex, "model": "mock-gpt", "provider": "mock"}
        return await self.client.post(
            "/internal/admit", json={**body, "prompt_tokens": 10, **fields}, headers=_as()
        )

    async def used_reserved(self, user: dict[str, Any]) -> tuple[int, int]:
        state = (await self.service.state.pool_states(user["org_id"], [user["pool_id"]]))[user["pool_id"]]
        return state.used, state.reserved

    async def ledger(self, pool_id: str) -> int:
        async with self.service.db.acquire() as conn:
            return int(
                await conn.fetchval("SELECT coalesce(sum(amount), 0) FROM ledger WHERE pool_id = $1", pool_id)
            )


def _usage(admitted: dict[str, Any], user: dict[str, Any], tokens: int) -> UsageRecorded:
    return UsageRecorded(
        request_id=uuid.uuid4().hex,
        reservation_id=admitted["reservation_id"],
        org_id=user["org_id"],
        user_id=user["id"],
        model="mock-gpt",
        provider="mock",
        total_tokens=tokens,
    )


@pytest.fixture
async def database_url(postgres_url: str) -> str:
    return await create_database(postgres_url, f"quota_cluster_{uuid.uuid4().hex[:10]}")


@pytest.fixture
def settings(database_url: str, redis_cluster_url: str, kafka_bootstrap: str) -> QuotaSettings:
    return QuotaSettings(
        _env_file=None,
        environment="test",
        database_url=database_url,
        redis_url=redis_cluster_url,
        redis_cluster=True,
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
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)  # 5xx as the network sees them
        async with httpx.AsyncClient(transport=transport, base_url="http://quota") as client:
            yield Harness(client, app.state.quota)


async def test_each_orgs_admission_keys_share_one_slot_and_orgs_spread_over_the_nodes(
    settings: QuotaSettings,
) -> None:
    clock = ManualClock()
    async with running(settings, clock) as h:
        # Twelve random orgs: all on one of three nodes has odds of 3 / 3**12 (six gave 1 in 243, and failed in CI).
        users = [await h.org_with_user(quota=10_000) for _ in range(12)]
        slots: dict[str, int] = {}
        for user in users:
            r = await h.admit(user["api_key"], session_id="s1", max_output_tokens=90)
            assert r.status_code == 200, r.text
            rid = r.json()["reservation_id"]
            fields = await h.service.state.reservation(rid)
            assert fields is not None
            # The reservation, its legs' counters and its buckets: one slot.
            keys = [h.service.state.reservation_key(rid), h.service.state.expiry_key(rid)]
            keys += [v for k, v in fields.items() if k[0] in "kb" and k[1:].isdigit() and v]
            keys += [h.service.state.freeze_key(user["org_id"], "user", user["id"])]
            assert len({key_slot(k.encode()) for k in keys}) == 1, keys
            slots[user["org_id"]] = key_slot(keys[0].encode())
        cluster: Any = h.service.state.redis  # the service's own cluster client (slots already mapped)
        nodes = {cluster.nodes_manager.get_node_from_slot(slot).name for slot in slots.values()}
        assert len(nodes) >= 2, "twelve orgs should not all hash to one of three nodes"


async def test_admission_freeze_release_settlement_and_expiry_are_exact_on_the_cluster(
    settings: QuotaSettings,
) -> None:
    clock = ManualClock()
    async with running(settings, clock) as h:
        a, b, c = [await h.org_with_user(quota=1_000) for _ in range(3)]
        # Admission to the limit, per org, each on its own node's counters.
        held = [(await h.admit(a["api_key"], max_output_tokens=90)).json() for _ in range(10)]  # 10 x 100
        assert (await h.admit(a["api_key"], max_output_tokens=90)).status_code == 402  # insufficient quota
        assert await h.used_reserved(a) == (0, 1_000)
        # A batch settling reservations of three orgs at once (one script per slot).
        b1 = (await h.admit(b["api_key"], max_output_tokens=190)).json()
        c1 = (await h.admit(c["api_key"], max_output_tokens=290)).json()
        events = [_usage(x, a, 40) for x in held[:5]] + [_usage(b1, b, 150), _usage(c1, c, 7)]
        await BatchSettlement(h.service.settlement).settle([*events, *events[:3]])  # duplicates are no-ops
        assert (await h.ledger(a["pool_id"]), await h.ledger(b["pool_id"]), await h.ledger(c["pool_id"])) == (
            200,
            150,
            7,
        )
        assert await h.used_reserved(a) == (200, 500)
        assert await h.used_reserved(b) == (150, 0) and await h.used_reserved(c) == (7, 0)
        # A release frees the unused part on its org's node.
        r = await h.client.post(
            "/internal/release",
            json={"reservation_id": held[5]["reservation_id"], "total_tokens": 30, "cost_usd_micros": 0},
            headers=_as(),
        )
        assert r.json() == {"released": True}
        assert await h.used_reserved(a) == (200, 430)
        # A freeze from a detector is kept in the org's slot and refuses the next admission.
        await h.service.freezes.freeze(
            RequestFreeze(
                target_type="user", target_id=c["id"], reason="loop", duration_s=300, org_id=c["org_id"]
            )
        )
        assert (await h.admit(c["api_key"], max_output_tokens=10)).status_code == 403
        # Past their TTL, the rest are charged: the released one what it used, the others what they held.
        clock.now_ms += (settings.reservation_ttl_s + 1) * 1000
        # (The sweep's count also includes no-op charges of records whose settlement it saw before their durable
        # record was deleted; the ledger below is what must be exact.)
        assert await h.service.settlement.sweep_expired() >= 5
        assert await h.ledger(a["pool_id"]) == 200 + 30 + 4 * 100
        assert await h.used_reserved(a) == (630, 0)


async def test_a_dead_primary_fails_only_its_orgs_closed(
    database_url: str, kafka_bootstrap: str, settings: QuotaSettings
) -> None:
    nodes = start_redis_cluster()
    try:
        own = settings.model_copy(update={"redis_url": nodes[0].url})
        async with running(own) as h:
            users = [await h.org_with_user(quota=10_000) for _ in range(6)]
            cluster: Any = h.service.state.redis
            port_of = {
                u["org_id"]: cluster.nodes_manager.get_node_from_slot(
                    key_slot(h.service.state.pool_key(u["org_id"], u["pool_id"]).encode())
                ).port
                for u in users
            }
            for u in users:
                assert (await h.admit(u["api_key"], max_output_tokens=10)).status_code == 200
            victim_port = port_of[users[0]["org_id"]]
            victim = next(n for n in nodes if n.port == victim_port)
            os.kill(victim.pid, signal.SIGKILL)
            hit = [u for u in users if port_of[u["org_id"]] == victim_port]
            spared = [u for u in users if port_of[u["org_id"]] != victim_port]
            assert spared, "twelve orgs should not all hash to one of three nodes"

            async def spared_admitted() -> bool:
                codes = [(await h.admit(u["api_key"], max_output_tokens=10)).status_code for u in spared]
                return codes == [200] * len(spared)

            await eventually(spared_admitted, timeout=30, what="the other orgs admitted")
            for u in hit:  # fail closed: a retryable 503, never an admission without its counters
                r = await h.admit(u["api_key"], max_output_tokens=10)
                assert r.status_code == 503, r.text
                assert r.headers["retry-after"] == "1"
    finally:
        for node in nodes:
            node.stop()


async def test_a_redis_that_stops_answering_is_a_503_not_a_hang(
    settings: QuotaSettings, redis_url: str, tmp_path: Path
) -> None:
    # A single server behind a proxy that, on `hang`, keeps every connection open and moves no byte: a
    # dropped network path. Without a socket timeout the admission would wait for ever.
    target = redis_url.split("//", 1)[1].split("/", 1)[0]
    host, port = target.rsplit(":", 1)
    proxy = FaultyProxy(free_port(), host, int(port))
    control = tmp_path / "proxy.sock"
    serving = asyncio.create_task(proxy.serve(control))
    await eventually(control.exists)
    own = settings.model_copy(
        update={
            "redis_url": f"redis://127.0.0.1:{proxy.listen_port}/0",
            "redis_cluster": False,
            "redis_timeout_s": 0.5,
        }
    )
    try:
        async with running(own) as h:
            user = await h.org_with_user(quota=10_000)
            assert (await h.admit(user["api_key"], max_output_tokens=10)).status_code == 200
            proxy.set_fault("hang", 60)
            r = await asyncio.wait_for(h.admit(user["api_key"], max_output_tokens=10), timeout=20)
            assert r.status_code == 503, r.text
            assert r.headers["retry-after"] == "1"
            proxy.set_fault("none", 0)

            async def admitted() -> bool:
                return (await h.admit(user["api_key"], max_output_tokens=10)).status_code == 200

            await eventually(admitted, timeout=30, what="admitted once Redis answers again")
            # (The held script of the 503 may still reach Redis when the path heals: a reservation nobody
            # holds, charged at expiry. A timeout cannot tell whether the server ran the command.)
    finally:
        serving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await serving
