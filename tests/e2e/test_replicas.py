"""Two instances of every service (`stack.py up --replicas 2`): the work is shared, and the invariants hold with
two of each, then with one instance of each kind SIGKILLed mid-load and restarted.

One stack for the module, started by the chaos harness (`bench/chaos.py`: a metered fake provider billing every
request, clients sending plain, streamed and cut chats and purchases, the invariant checker of
`bench/chaos_checks.py`). Beside that load: a runaway agent looping one prompt in a session (frozen exactly
once), a user spending a small pool past 80/90/100% (one alert per threshold and period, at a local webhook
receiver: the only stand-in besides the providers). Figures (requests, each instance's share of the CPU, time
to recover) are printed (`-s`) for the closing note.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from aiohttp import web

from leaky_devinfra.testing import eventually

from .chaos_harness import load_chaos

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
REPLICAS = 2
# Every kind of service process; `<kind>-2` is its second instance.
KINDS = ("gateway", "quota", "saga", "analytics", "analytics-worker", "notifier")
HTTP_KINDS = ("gateway", "quota", "saga", "analytics", "notifier")
# Quota's reservation TTL here: a reservation nothing settles (its admission's answer lost with a killed quota
# instance) is charged at expiry within it. A killed gateway's journal is taken over by the gateway that starts
# next, which must come before it: so above the 60 s the kill test allows a restart (CI saw 27.8 s once, and a
# stream cut by the kill was charged at expiry before its journal was replayed, with a TTL of 30 s).
TTL_S = 90
LOOP_COUNT = 4  # analytics' default: the same prompt 4 times in a row is a loop
THRESHOLDS = (80, 90, 100)  # quota's announcements
EVENTS = ["QuotaThresholdReached.v1", "AnomalyDetected.v1", "PurchaseCompleted.v1"]


def _cpu_ticks(pid: int) -> int:
    """User + system CPU ticks of a process so far (/proc; 0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])


def _listeners(port: int) -> int:
    """Sockets listening on `port` (IPv4)."""
    lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return sum(1 for f in map(str.split, lines) if f[3] == "0A" and int(f[1].rsplit(":", 1)[1], 16) == port)


@dataclass
class Hooks:
    """The local webhook receiver: every notification body it got."""

    url: str
    received: list[dict[str, Any]] = field(default_factory=list)

    def of(self, event_type: str) -> list[dict[str, Any]]:
        return [r for r in self.received if r.get("type") == event_type]


@dataclass
class Replicas:
    """The running stack, its clients and what the module measured."""

    chaos: ModuleType
    h: Any  # chaos.Harness
    admin: httpx.AsyncClient
    hooks: Hooks
    figures: list[str] = field(default_factory=list)
    ops: list[Any] = field(default_factory=list)  # every chaos.Op of the module's loads

    def pids(self) -> dict[str, int]:
        state = json.loads((self.h.run_dir / "stack.json").read_text())
        return {name: int(pid) for name, pid in state["pids"].items()}


@pytest.fixture(scope="module")
async def hooks(fakes_port: int) -> AsyncIterator[Hooks]:
    found = Hooks(f"http://127.0.0.1:{fakes_port}/hook")

    async def hook(request: web.Request) -> web.Response:
        found.received.append(json.loads(await request.read()))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", fakes_port).start()
    try:
        yield found
    finally:
        await runner.cleanup()


@pytest.fixture(scope="module")
async def replicas(
    tmp_path_factory: pytest.TempPathFactory, fakes_port: int, hooks: Hooks
) -> AsyncIterator[Replicas]:
    chaos = load_chaos()
    config = chaos.Config(
        workers=4,
        users=2,
        reservation_ttl_s=TTL_S,
        converge_s=90.0,
        run_dir=tmp_path_factory.mktemp("replicas") / "run",
        replicas=REPLICAS,
        env=(("LT_OUTBOUND_ALLOW_NETWORKS", json.dumps([f"127.0.0.1:{fakes_port}"])),),
    )
    h = chaos.Harness(config, config.run_dir)
    started = time.monotonic()
    try:
        await asyncio.to_thread(h.up)
        up_s = time.monotonic() - started
        async with httpx.AsyncClient(
            base_url=h.gateway, headers={"Authorization": f"Bearer {h.admin_key}"}, timeout=30
        ) as admin:
            # Loops freeze; the steady load (a request-rate anomaly by design) is only alerted on.
            r = await admin.put("/v1/analytics/thresholds", json={"freeze_on": ["loop"]})
            assert r.status_code == 200, r.text
            r = await admin.post(
                "/v1/admin/notifications/webhooks", json={"url": hooks.url, "event_types": EVENTS}
            )
            assert r.status_code == 201, r.text
            for _ in range(config.users):
                h.keys.append((await _user(admin, 10**12))["api_key"])
            found = Replicas(chaos, h, admin, hooks, [f"stack with {REPLICAS} of each up in {up_s:.1f}s"])
            yield found
            sys.stdout.write("\n" + "\n".join(found.figures) + "\n")
    finally:
        await asyncio.to_thread(h.down)


async def _user(admin: httpx.AsyncClient, quota: int) -> dict[str, Any]:
    body = {"email": f"rep-{uuid.uuid4().hex[:8]}@example.com", "name": "Replicas", "personal_quota": quota}
    r = await admin.post("/v1/admin/users", json=body)
    assert r.status_code == 201, r.text
    user: dict[str, Any] = r.json()
    return user


def _chat(content: str, session: str | None = None) -> dict[str, Any]:
    return {"model": "chaos-gpt", "messages": [{"role": "user", "content": content}], "max_tokens": 24}


async def _runaway_loop(r: Replicas) -> str:
    """A user's agent sends one prompt LOOP_COUNT times in a row in a session, then once more after the freeze
    (refused); the session id."""
    user = await _user(r.admin, 10**9)
    session = f"loop-{uuid.uuid4().hex[:10]}"
    headers = {"Authorization": f"Bearer {user['api_key']}", "X-Session-ID": session}
    async with httpx.AsyncClient(base_url=r.h.gateway, headers=headers, timeout=30) as agent:
        sent = 0
        while sent < LOOP_COUNT:
            resp = await agent.post("/v1/chat/completions", json=_chat("try again, same as before"))
            # While an instance is down, an answer may fail closed; anything else is a failure.
            assert resp.status_code in (200, 502, 503, 504), resp.text
            sent += resp.status_code == 200

        async def frozen() -> bool:
            freezes = (await r.admin.get("/v1/admin/freezes")).json()["data"]
            return any((f["target_type"], f["target_id"]) == ("session", session) for f in freezes)

        await eventually(frozen, timeout=45, what=f"session {session} frozen")
        resp = await agent.post("/v1/chat/completions", json=_chat("try again, same as before"))
        assert resp.status_code == 403 and resp.json()["error"]["code"] == "frozen", resp.text
    return session


async def _spend_past_thresholds(r: Replicas) -> tuple[str, list[int]]:
    """A user spends a small pool until refused (402); its id and the thresholds its final usage reached."""
    user = await _user(r.admin, 600)
    headers = {"Authorization": f"Bearer {user['api_key']}"}
    async with httpx.AsyncClient(base_url=r.h.gateway, headers=headers, timeout=30) as me:

        async def one(i: int) -> int:
            resp = await me.post("/v1/chat/completions", json=_chat(f"spend {i} " + "words " * 12))
            assert resp.status_code in (200, 402, 502, 503, 504), resp.text
            return resp.status_code

        for round_ in range(40):
            if 402 in await asyncio.gather(*(one(round_ * 3 + k) for k in range(3))):
                break

        async def settled() -> dict[str, Any] | None:
            pool = (await me.get("/v1/users/me/quota")).json()["pools"][0]
            return pool if pool["reserved"] == 0 else None

        pool = await eventually(settled, timeout=30, what="the pool settled")
    reached = [p for p in THRESHOLDS if pool["used"] * 100 >= pool["limit"] * p]
    assert 80 in reached, pool
    return str(user["id"]), reached


async def _one_alert_per_threshold(r: Replicas, user_id: str, reached: list[int]) -> None:
    def alerts() -> list[int]:
        return [
            a["data"]["percent"]
            for a in r.hooks.of("QuotaThresholdReached.v1")
            if a["data"]["owner_id"] == user_id and a["data"]["owner_type"] == "user"
        ]

    await eventually(lambda: sorted(set(alerts())) == reached, timeout=45, what="threshold alerts")
    assert sorted(alerts()) == reached  # once each


async def _frozen_once(r: Replicas, session: str) -> None:
    freezes = (await r.admin.get("/v1/admin/freezes")).json()["data"]
    assert [f["target_id"] for f in freezes if f["target_type"] == "session"].count(session) == 1

    def loops() -> list[dict[str, Any]]:
        return [
            a
            for a in r.hooks.of("AnomalyDetected.v1")
            if a["data"].get("session_id") == session and a["data"]["kind"] == "loop"
        ]

    await eventually(loops, timeout=45, what="the loop's alert")
    assert len(loops()) == 1
    assert loops()[0]["data"]["frozen"] is True


async def _open_reservations(r: Replicas) -> int:
    client = aioredis.from_url(str(r.h.state["redis"]), decode_responses=True)
    try:
        return sum([await client.zcard(k) async for k in client.scan_iter(match="lt:*res:by_expiry")])
    finally:
        await client.aclose()  # type: ignore[attr-defined]  # stubs predate aclose


async def _open_at_the_end(r: Replicas) -> list[str]:
    """Reservations still open once the load stopped: whose request, and what its client saw."""
    client = aioredis.from_url(str(r.h.state["redis"]), decode_responses=True)
    seen = {op.rid: f"{op.kind} {op.status}{'/broken' if op.broken else ''}" for op in r.ops}
    try:
        found = []
        async for key in client.scan_iter(match="lt:*res:by_expiry"):
            for rid in await client.zrange(key, 0, -1):
                request = await client.hget(key.replace("by_expiry", rid), "request")
                found.append(
                    f"  open after the load: reservation {rid} of {request} ({seen.get(str(request))})"
                )
        return found
    finally:
        await client.aclose()  # type: ignore[attr-defined]  # stubs predate aclose


async def _invariants(r: Replicas, load: Any, *, all_settled: bool = False) -> Any:
    """Every invariant over every request of the module so far (this load's included); with `all_settled`,
    once no reservation is open any more (those nothing settled are charged at expiry, within the TTL)."""
    r.ops += load.ops
    if all_settled:
        r.figures += await _open_at_the_end(r)
        waited = time.monotonic()
        await eventually(lambda: _zero(_open_reservations(r)), timeout=TTL_S + 20, what="no reservation open")
        r.figures.append(
            f"every reservation settled or expired {time.monotonic() - waited:.1f}s after the load"
        )
    cut = {op.rid for op in r.ops if op.kind == "cut" or op.broken}
    started = time.monotonic()
    # A reservation whose answer a dying quota never sent is released at zero; one a dying gateway held with its
    # request on the way to or from the provider is charged at expiry (a known gap, shown in the figures).
    transit = r.chaos.in_transit(r.ops)
    inv = await r.chaos._converge(r.h, cut, {op.rid: op.answered for op in r.ops}, transit)
    report = "\n".join(inv.lines())
    assert inv.failed() == [], report
    r.figures.append(f"invariants held {time.monotonic() - started:.1f}s after the load stopped:")
    r.figures += [f"  {line}" for line in inv.lines()]
    return inv


async def _zero(count: Any) -> bool:
    return bool(await count == 0)


def _share(before: dict[str, int], after: dict[str, int], pids: dict[str, int]) -> list[str]:
    lines = []
    for kind in KINDS:
        names = [kind] + [f"{kind}-{i}" for i in range(2, REPLICAS + 1)]
        used = [after[n] - before[n] for n in names]
        total = sum(used) or 1
        shares = ", ".join(
            f"{n} (pid {pids[n]}) {u * 100 / total:.0f}%" for n, u in zip(names, used, strict=True)
        )
        lines.append(f"  {kind:16} {total / 100:5.1f} CPU-s: {shares}")
    return lines


async def test_two_of_each_share_the_work_and_keep_the_invariants(replicas: Replicas) -> None:
    r = replicas
    pids = r.pids()
    assert all(f"{kind}-2" in pids for kind in KINDS)
    ports = json.loads((r.h.run_dir / "stack.json").read_text())["ports"]
    assert {kind: _listeners(ports[kind]) for kind in HTTP_KINDS} == dict.fromkeys(HTTP_KINDS, REPLICAS)
    before = {n: _cpu_ticks(p) for n, p in pids.items()}
    load = r.chaos.Load(r.h.gateway, r.h.keys, workers=4, seed=11)
    started = time.monotonic()
    load.start()
    try:
        session, (user_id, reached) = await asyncio.gather(_runaway_loop(r), _spend_past_thresholds(r))
        await asyncio.sleep(max(0.0, 8 - (time.monotonic() - started)))  # at least 8 s of steady load
    finally:
        await load.stop()
    load_s = time.monotonic() - started
    after = {n: _cpu_ticks(p) for n, p in pids.items()}
    failed = Counter(op.status + ("/broken" if op.broken else "") for op in load.ops if not op.ok)
    r.figures.append(
        f"two of each: {len(load.ops)} requests in {load_s:.1f}s ({len(load.ops) / load_s:.0f}/s) "
        f"{dict(Counter(op.kind for op in load.ops))}, not 2xx: {dict(failed) or 'none'}; CPU per instance:"
    )
    r.figures += _share(before, after, pids)
    assert not failed
    # The kernel spread the connections: each gateway and each quota did a fair part of the work.
    for kind in ("gateway", "quota"):
        used = [after[n] - before[n] for n in (kind, f"{kind}-2")]
        assert min(used) >= 0.2 * sum(used), (kind, used)
    await _frozen_once(r, session)
    await _one_alert_per_threshold(r, user_id, reached)
    inv = await _invariants(r, load)
    assert inv.figures["purchases"].get("COMPLETED", 0) > 0, inv.figures


# The restarted processes outlive their Popen objects here (`stack.py down` stops them, by PID).
@pytest.mark.filterwarnings("ignore:subprocess .* is still running:ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
# Its own waits add up past the default 120 s on a loaded machine: the restart of one of each (up to 60 s; 18-32 s
# seen in CI), the freeze and the alerts (45 s each at most), the TTL of a reservation nothing settled, the checks.
@pytest.mark.timeout(300)
async def test_one_of_each_killed_mid_load_the_invariants_still_hold(replicas: Replicas) -> None:
    r = replicas
    chaos = r.chaos
    victims = [f"{kind}-2" for kind in KINDS]
    state = json.loads((r.h.run_dir / "stack.json").read_text())
    load = chaos.Load(r.h.gateway, r.h.keys, workers=3, seed=12)
    load.start()
    try:
        await asyncio.sleep(2)  # the load is under way
        killed_at = time.monotonic()
        for victim in victims:
            await asyncio.to_thread(r.chaos.stack_chaos().kill, r.h.run_dir, victim)
        dead_after = time.monotonic() - killed_at
        # With one of each down: a runaway loop and a pool spent past its thresholds.
        session, (user_id, reached) = await asyncio.gather(_runaway_loop(r), _spend_past_thresholds(r))
        restart_at = time.monotonic()
        for victim in victims:  # one at a time (each rewrites stack.json), the gateway (its journal) first
            await asyncio.to_thread(r.chaos.stack_chaos().restart, r.h.run_dir, victim)

        async def back() -> bool:
            listening = all(_listeners(state["ports"][k]) == REPLICAS for k in HTTP_KINDS)
            worker = f"http://127.0.0.1:{state['instance_ports']['analytics-worker-2']}/health"
            async with httpx.AsyncClient(timeout=2) as c:
                try:
                    return listening and (await c.get(worker)).status_code == 200
                except httpx.HTTPError:
                    return False

        await eventually(back, timeout=60, what="the restarted instances listening")
        back_after = time.monotonic() - restart_at
        await asyncio.sleep(3)  # load on the whole stack again
    finally:
        await load.stop()
    ops = load.ops
    # In flight at the kill, or started before every instance was back.
    during = [op for op in ops if op.end >= killed_at and op.start < restart_at + back_after]
    outside = [op for op in ops if op not in during]
    bad = [
        f"{op.kind} {op.rid}: {op.status}"
        for op in during
        if not op.ok and not chaos._closed(op.status + ("/broken" if op.broken else ""), "gateway")
    ]
    failed = [op for op in during if not op.ok]
    recovered = max((op.end - killed_at for op in failed), default=0.0)
    r.figures.append(
        f"one of each killed: {len(ops)} requests, {len(during)} while an instance of each was down or "
        f"restarting, {len(failed)} of them failed closed "
        f"{dict(Counter(op.status + ('/broken' if op.broken else '') for op in failed))}; "
        f"all dead {dead_after:.1f}s after the kill order, last client failure {recovered:.1f}s after the kill, "
        f"restarted instances listening {back_after:.1f}s after the restart order"
    )
    assert bad == []
    assert [f"{op.kind} {op.rid}: {op.status}" for op in outside if not op.ok] == []  # which, if one fails
    # A failure is a request the killed instance held (a gateway's connection, quota's admission), not an outage.
    assert len(failed) <= 0.2 * len(during), (len(failed), len(during))
    await _frozen_once(r, session)
    await _one_alert_per_threshold(r, user_id, reached)
    await _invariants(r, load, all_settled=True)
