"""Chaos run: a steady mixed load against a whole local stack while each component goes down and comes back.

    python bench/chaos.py [--outage 6] [--settle 10] [--workers 4] [--only quota,redis] [--keep]
    make chaos

Starts its own stack (`deploy/local/stack.py up --ports auto` in a fresh run directory) with a metered fake
OpenAI upstream (`leaky_devinfra.fakes.metered`, which bills usage computed from each request and writes every
bill down) routed as `chaos-gpt`, and a short reservation TTL. Clients send plain and streamed chats, streams
they cut after the first chunk, and purchases (`bench/chaos_load.py`). In turn, each component is killed with
SIGKILL (`stack.py kill`) and restarted after `--outage` seconds (`stack.py restart`); the broker, which keeps
nothing across restarts, instead gets a `--outage`-second outage from the proxy in front of it
(`stack.py outage broker`). Then `--settle` seconds of load before the next one.

Per component it prints the outage, what the clients saw from the kill until the end of its settle period
(2xx, fail-closed answers 502/503/504 or a refused connection, and anything else, 402s and 2xx answers that
quota could not have admitted called out), when the component answered its readiness probe again and when
the clients last saw a failure after the restart (`recovered`). After the run, once the load has stopped, it
waits for the invariants (`bench/chaos_checks.py`) to hold, up to a deadline, and prints them. Exit status 1 if
an invariant fails or a client saw an answer that is not fail-closed.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from chaos_checks import Invariants, Stores, check_all
from chaos_load import Load, Op

from leaky_devinfra.infra import free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[1]
STACK = ROOT / "deploy" / "local" / "stack.py"
COMPONENTS = ("gateway", "quota", "saga", "analytics", "analytics-worker", "notifier", "fakepay",
              "redis", "postgres", "broker")  # fmt: skip
# Without these, quota cannot admit: a 2xx chat that started while one was down was never admitted.
ADMISSION = ("gateway", "quota", "redis")
FAIL_CLOSED = ("502", "503", "504")
# When the gateway itself dies, clients see their connection refused or broken (a stream cut without its
# end): a crash can do no better, and no answer is complete.
GATEWAY_CRASH = ("conn", "200/broken")


def _closed(label: str, component: str) -> bool:
    """Whether `label` (status, or status/broken) is a fail-closed answer while `component` is down."""
    return label in FAIL_CLOSED or (component == "gateway" and label in GATEWAY_CRASH)


@dataclass
class Window:
    """One component's outage and what followed."""

    name: str
    began: float  # the kill (or outage) was ordered
    down_at: float = 0.0  # the process is dead
    up_at: float = 0.0  # the restart was ordered (the outage ended)
    end_at: float = 0.0
    ready_after: float | None = None
    mode: str = "SIGKILL + restart"


@dataclass
class Row:
    """What the clients saw during one window."""

    window: Window
    seen: Counter[str] = field(default_factory=Counter)
    bad: list[str] = field(default_factory=list)
    recovered_after: float = 0.0


@dataclass(frozen=True)
class Config:
    """The knobs of a run."""

    components: tuple[str, ...] = COMPONENTS
    outage_s: float = 6.0
    settle_s: float = 10.0
    warmup_s: float = 5.0
    ready_timeout_s: float = 90.0
    workers: int = 4
    users: int = 4
    reservation_ttl_s: int = 60
    converge_s: float = 60.0
    seed: int = 7
    run_dir: Path | None = None
    keep: bool = False
    chunk_delay_ms: int = 15  # the metered provider's pause between streamed tokens
    replicas: int = 1  # instances of each service (`stack.py up --replicas`)
    env: tuple[tuple[str, str], ...] = ()  # more settings for the stack's processes


def stack_chaos() -> ModuleType:
    """deploy/local/stack_chaos.py (kill and restart one process of a stack), loaded in this process: a kill
    through it lands at once, without starting an interpreter first (seconds on a loaded machine)."""
    if "stack_chaos" in sys.modules:
        return sys.modules["stack_chaos"]
    spec = importlib.util.spec_from_file_location("stack_chaos", ROOT / "deploy" / "local" / "stack_chaos.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["stack_chaos"] = module
    spec.loader.exec_module(module)
    return module


def _stack(run_dir: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 180) -> str:
    result = subprocess.run(
        [sys.executable, str(STACK), *args, "--run-dir", str(run_dir)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        raise RuntimeError(f"stack.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


@dataclass
class Harness:
    """A stack with a metered provider, its users, and the way to reach each component."""

    config: Config
    run_dir: Path
    provider: subprocess.Popen[bytes] | None = None
    gateway: str = ""
    admin_key: str = ""
    keys: list[str] = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def provider_log(self) -> Path:
        return self.run_dir / "provider-usage.jsonl"

    def up(self) -> None:
        """The metered provider, then the stack routed to it."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        port = free_port()
        with (self.run_dir / "provider.log").open("ab") as log:
            self.provider = subprocess.Popen(
                [sys.executable, "-m", "leaky_devinfra.fakes.metered", "--port", str(port),
                 "--log", str(self.provider_log), "--chunk-delay-ms",
                 str(self.config.chunk_delay_ms)],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        wait_for_port(port, popen=self.provider)
        models = self.run_dir / "models.json"
        models.write_text(json.dumps([{
            "name": "chaos-gpt", "provider": "openai_compatible", "upstream_model": "chaos-gpt",
            "base_url": f"http://127.0.0.1:{port}/v1", "input_usd_micros_per_mtok": 150_000,
            "output_usd_micros_per_mtok": 600_000, "max_retries": 0,
        }]))  # fmt: skip
        env = {
            **os.environ,
            "LT_MODELS_FILE": str(models),
            "LT_RESERVATION_TTL_S": str(self.config.reservation_ttl_s),
            "LT_SWEEP_INTERVAL_S": "1",
            # Rate limits far above the load (a closed loop that speeds up on every fast refusal): a 429 is not
            # what this run judges, and after Redis loses its data the buckets count as full at the last
            # admission, so a load above the sustained rate is refused there by design (quota's integration
            # test `test_rate_limit_buckets_redis_lost_count_as_full_and_drain_from_then`).
            "LT_KEY_REQUESTS_PER_PERIOD": "600000",
            "LT_USER_REQUESTS_PER_PERIOD": "600000",
            "LT_KEY_TOKENS_PER_PERIOD": "1000000000",
            "LT_USER_TOKENS_PER_PERIOD": "1000000000",
        }
        env.update(self.config.env)
        for name in ("LT_GATEWAY_URL", "LT_ADMIN_KEY"):
            env.pop(name, None)
        _stack(self.run_dir, "up", "--ports", "auto", "--replicas", str(self.config.replicas), env=env)
        self.state = json.loads((self.run_dir / "stack.json").read_text())
        self.gateway = str(self.state["gateway_url"])
        self.admin_key = (self.run_dir / "admin_key").read_text().strip()

    def down(self) -> None:
        """Stop the stack and the provider."""
        try:
            _stack(self.run_dir, "down")
        finally:
            if self.provider is not None:
                self.provider.terminate()
                self.provider.wait(timeout=10)

    async def make_users(self) -> None:
        """Users with a large personal token pool: any 402 they get is spurious. The anomaly detectors still
        run but freeze nobody (the steady load is a request-rate anomaly; a 403 `frozen` is not chaos)."""
        headers = {"Authorization": f"Bearer {self.admin_key}"}
        async with aiohttp.ClientSession(headers=headers) as session:
            async with session.put(f"{self.gateway}/v1/analytics/thresholds", json={"freeze_on": []}) as r:
                if r.status != 200:
                    raise RuntimeError(f"could not turn freezes off: {r.status} {await r.text()}")
            for _ in range(self.config.users):
                body = {"email": f"chaos-{uuid.uuid4().hex[:8]}@example.com", "name": "Chaos",
                        "personal_quota": 10**12}  # fmt: skip
                async with session.post(f"{self.gateway}/v1/admin/users", json=body) as r:
                    created = await r.json()
                    if r.status != 201:
                        raise RuntimeError(f"could not create a user: {r.status} {created}")
                    self.keys.append(str(created["api_key"]))

    def url_of(self, name: str) -> str:
        return f"http://127.0.0.1:{self.state['ports'][name]}"

    def stores(self) -> Stores:
        return Stores(
            postgres=str(self.state["postgres"]),
            redis=str(self.state["redis"]),
            fakepay=self.url_of("fakepay"),
            provider_log=str(self.provider_log),
            reservation_grace_s=3.0,
        )

    async def ready(self, name: str, session: aiohttp.ClientSession) -> bool:
        """Whether `name` answers its readiness probe again."""
        probes = {
            "fakepay": "/health",
            "analytics-worker": None,
            "redis": None,
            "postgres": None,
            "broker": None,
        }
        path = probes.get(name, "/ready")
        target = name if path is not None else "quota"  # infrastructure: quota's readiness checks it
        try:
            async with session.get(self.url_of(target) + (path or "/ready")) as r:
                return r.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False


async def _await_ready(h: Harness, window: Window, deadline: float) -> None:
    if window.name == "analytics-worker":  # no port: its recovery shows in the invariants
        return
    timeout = aiohttp.ClientTimeout(total=2)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while time.monotonic() < deadline:
            if await h.ready(window.name, session):
                window.ready_after = time.monotonic() - window.up_at
                return
            await asyncio.sleep(0.1)


async def _take_down(h: Harness, name: str) -> Window:
    cfg = h.config
    window = Window(name, time.monotonic())
    if name == "broker":
        window.mode = "proxy drops traffic"
        await asyncio.to_thread(_stack, h.run_dir, "outage", "broker", "--seconds", str(cfg.outage_s))
        window.down_at = time.monotonic()
        await asyncio.sleep(cfg.outage_s)
    else:
        await asyncio.to_thread(_stack, h.run_dir, "kill", name)
        window.down_at = time.monotonic()
        await asyncio.sleep(cfg.outage_s)
        window.up_at = time.monotonic()
        await asyncio.to_thread(_stack, h.run_dir, "restart", name)
    window.up_at = window.up_at or time.monotonic()
    # The next component goes down only once this one is back (or given up on): outages never overlap.
    await _await_ready(h, window, window.up_at + cfg.ready_timeout_s)
    await asyncio.sleep(cfg.settle_s)
    window.end_at = time.monotonic()
    return window


def _verdicts(windows: list[Window], ops: list[Op], started: float) -> tuple[list[Row], list[str]]:
    """Attribute every op to the window it started in; the ops outside every window must all succeed."""
    rows = [Row(w) for w in windows]
    outside: list[str] = []
    for op in ops:
        row = next((r for r in rows if r.window.began <= op.start < r.window.end_at), None)
        label = op.status + ("/broken" if op.broken else "")
        if row is None:
            if not op.ok:
                outside.append(f"{op.kind} {op.rid} at +{op.start - started:.1f}s: {label}")
            continue
        w = row.window
        row.seen["2xx" if op.ok else label] += 1
        if op.ok:
            # Started after the process died, before it was back: nothing could have admitted it.
            if w.name in ADMISSION and op.kind != "purchase" and w.down_at <= op.start < w.up_at:
                row.bad.append(f"{op.kind} {op.rid}: {op.status} while {w.name} was down (never admitted)")
            continue
        if op.start >= w.up_at:
            row.recovered_after = max(row.recovered_after, op.end - w.up_at)
        if op.status == "402":
            row.bad.append(f"{op.kind} {op.rid}: 402 with budget left")
        elif not _closed(label, w.name):
            row.bad.append(f"{op.kind} {op.rid}: {label} (not fail-closed)")
    return rows, outside


def _table(rows: list[Row]) -> list[str]:
    head = f"{'component':17} {'outage':>7} {'ready':>6} {'recov':>6} {'reqs':>5} {'2xx':>5} {'fail-closed':>11}  other"
    lines = [head, "-" * len(head)]
    for row in rows:
        w, seen = row.window, row.seen
        closed = sum(n for s, n in seen.items() if _closed(s, w.name))
        other = {s: n for s, n in seen.items() if s != "2xx" and not _closed(s, w.name)}
        ready = f"{w.ready_after:.1f}s" if w.ready_after is not None else "never"
        ready = "n/a" if w.name == "analytics-worker" else ready
        lines.append(
            f"{w.name:17} {w.up_at - w.down_at:6.1f}s {ready:>6} {row.recovered_after:5.1f}s "
            f"{sum(seen.values()):5} {seen['2xx']:5} {closed:11}  {other or '-'}"
        )
    return lines


def _annotate(inv: Invariants, windows: list[Window], ops: list[Op]) -> None:
    """Suffix each violation about a request with the outage it started in."""
    where = {}
    for op in ops:
        w = next((w for w in windows if w.began <= op.start < w.end_at), None)
        where[op.rid] = f" [{op.kind}, during the {w.name} outage]" if w else f" [{op.kind}]"
    for found in inv.violations.values():
        found[:] = [v + where.get(v.split(":", 1)[0], "") for v in found]


def in_transit(ops: list[Op]) -> frozenset[str]:
    """Requests whose connection broke before any answer: a gateway died with them (see `check_ledger`)."""
    return frozenset(op.rid for op in ops if op.status == "conn")


async def _converge(
    h: Harness, cut: set[str], answered: dict[str, float], transit: frozenset[str] = frozenset()
) -> Invariants:
    deadline = time.monotonic() + h.config.converge_s
    while True:
        inv = await check_all(h.stores(), cut, answered, transit)
        if not inv.failed() or time.monotonic() > deadline:
            return inv
        await asyncio.sleep(2)


@dataclass
class Report:
    """A run's outcome: exit status, the printed lines, per-component rows and the invariants."""

    status: int
    lines: list[str]
    rows: list[Row]
    invariants: Invariants


async def run(config: Config) -> Report:
    """One chaos run."""
    run_dir = config.run_dir or Path(tempfile.mkdtemp(prefix="lt-chaos-"))
    h = Harness(config, run_dir)
    try:
        h.up()
        await h.make_users()
        load = Load(h.gateway, h.keys, workers=config.workers, seed=config.seed)
        started = time.monotonic()
        load.start()
        await asyncio.sleep(config.warmup_s)
        windows = [await _take_down(h, name) for name in config.components]
        await load.stop()
        load_s = time.monotonic() - started
        rows, outside = _verdicts(windows, load.ops, started)
        # Streams the client never read to the end: cut by the client, or broken by a gateway killed mid-stream.
        cut = {op.rid for op in load.ops if op.kind == "cut" or op.broken}
        inv = await _converge(h, cut, {op.rid: op.answered for op in load.ops}, in_transit(load.ops))
    finally:
        if not config.keep:
            h.down()
    _annotate(inv, windows, load.ops)
    kinds = Counter(op.kind for op in load.ops)
    lines = [f"chaos run: {len(load.ops)} requests in {load_s:.0f}s ({len(load.ops) / load_s:.1f}/s) "
             f"{dict(kinds)}; run dir {run_dir}", "", *_table(rows), ""]  # fmt: skip
    bad = [b for row in rows for b in row.bad] + [f"outside any outage: {o}" for o in outside]
    lines += [f"clients: {'fail closed everywhere' if not bad else f'{len(bad)} answers not fail-closed'}"]
    lines += [f"  - {b}" for b in bad[:20]] + ["", "invariants:", *inv.lines()]
    return Report(1 if bad or inv.failed() else 0, lines, rows, inv)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--outage", type=float, default=6.0, help="seconds each component stays down")
    parser.add_argument("--settle", type=float, default=10.0, help="seconds of load after each restart")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--only", default="", help="comma-separated components (default: all, in order)")
    parser.add_argument("--ttl", type=int, default=60, help="quota's reservation TTL for the run (s)")
    parser.add_argument("--run-dir", type=Path, default=None)
    parser.add_argument("--keep", action="store_true", help="leave the stack running afterwards")
    args = parser.parse_args()
    components = tuple(args.only.split(",")) if args.only else COMPONENTS
    unknown = set(components) - set(COMPONENTS)
    if unknown:
        parser.error(f"unknown components {sorted(unknown)}; choose from {', '.join(COMPONENTS)}")
    config = Config(components, args.outage, args.settle, workers=args.workers, reservation_ttl_s=args.ttl,
                    converge_s=max(60.0, 2.0 * args.ttl), run_dir=args.run_dir, keep=args.keep)  # fmt: skip
    report = asyncio.run(run(config))
    sys.stdout.write("\n".join(report.lines) + "\n")
    sys.exit(report.status)


if __name__ == "__main__":
    main()
