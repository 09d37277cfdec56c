"""Capacity figures for docs/scaling.md and the Kubernetes requests/limits in deploy/k8s: CPU per request and
memory of EVERY process of the local stack under load through the gateway.

    python bench/capacity.py [--requests 6000] [--concurrency 32] [--runs 3] [--json PATH]

Starts the mock OpenAI upstream (bench/mock_upstream.py, not counted) and a whole local stack on free ports
(deploy/local/stack.py, buckets raised and the loop detector's freeze off, as in bench/hotpath.py), creates
one user, then for each run sends `--requests` non-streamed and `--requests / 2` streamed chat completions at
`--concurrency` through the gateway, and reads for every process (children included: PostgreSQL's
backends) the CPU seconds (user + system, psutil, i.e. /proc/PID/stat) before and after each phase, and its RSS
sampled every 0.2 s. After each phase it waits until the analytics worker has stopped working (settlement and
aggregation run off the request path and must be counted), then also reads Redis commands (INFO
commandstats) and PostgreSQL transactions and tuples written (pg_stat_database) per request.

Prints medians over the runs: CPU ms per request by process, req/s, RSS idle / peak by process, Redis
commands and PostgreSQL commits per request, and the instances per 1,000 req/s that follow (CPU ms per request
= CPU ms per second at 1 req/s; at 1,000 req/s a process needs `cpu_ms` cores, and an instance is planned at
70 % of one core, its HPA target).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import asyncpg
import psutil
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))

from hotpath import (
    BenchPath,
    cpu_seconds,
    create_bench_user,
    measure,
    rss_mb,
    start_stack,
    start_upstream,
)

from leaky_devinfra.infra import free_port, stop_pid

ROOT = Path(__file__).resolve().parents[1]
APPS = ("gateway", "quota", "analytics", "analytics-worker", "saga", "notifier")
# A pod is planned at this share of one core (the HPA's CPU target in deploy/k8s).
TARGET_UTILISATION = 0.7


class RssSampler:
    """Peak RSS (MB) of each process, sampled in a thread."""

    def __init__(self, pids: dict[str, int], interval: float = 0.2) -> None:
        self.pids = pids
        self.peak: dict[str, float] = dict.fromkeys(pids, 0.0)
        self._stop = threading.Event()
        self._interval = interval
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for name, pid in self.pids.items():
                self.peak[name] = max(self.peak[name], rss_mb(pid))
            self._stop.wait(self._interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def wait_quiet(pid: int, deadline_s: float = 30.0, idle_cpu_s: float = 0.02) -> None:
    """Wait until `pid` uses less than `idle_cpu_s` CPU in 0.5 s (the worker has drained the topic)."""
    proc = psutil.Process(pid)
    deadline = time.monotonic() + deadline_s
    last = sum(proc.cpu_times()[:2])
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = sum(proc.cpu_times()[:2])
        if now - last < idle_cpu_s:
            return
        last = now


def redis_commands(url: str) -> dict[str, int]:
    """Calls by command (INFO commandstats: commands run inside Lua scripts are counted too)."""
    client = redis.Redis.from_url(url)
    try:
        stats = client.info("commandstats")
        return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}
    finally:
        client.close()


async def pg_counters(url: str) -> dict[str, tuple[int, int]]:
    """(commits, tuples written) by database."""
    conn = await asyncpg.connect(url)
    try:
        # Statistics are flushed by each backend at most once a second.
        await asyncio.sleep(1.2)
        rows = await conn.fetch(
            "SELECT datname, xact_commit, tup_inserted + tup_updated + tup_deleted AS written "
            "FROM pg_stat_database WHERE datname LIKE 'lt_%'"
        )
        return {r["datname"]: (int(r["xact_commit"]), int(r["written"])) for r in rows}
    finally:
        await conn.close()


def phase(
    path: BenchPath,
    pids: dict[str, int],
    state: dict[str, Any],
    requests: int,
    concurrency: int,
    stream: bool,
) -> dict[str, Any]:
    """One load phase: CPU ms per request by process, req/s, Redis commands and PostgreSQL commits per request."""
    redis_url, pg_url = state["redis"], state["postgres"]
    cpu0 = cpu_seconds(pids)
    r0 = redis_commands(redis_url)
    pg0 = asyncio.run(pg_counters(pg_url))
    _, rps = asyncio.run(measure(path, requests, concurrency, stream=stream))
    wait_quiet(pids["analytics-worker"])
    wait_quiet(pids["quota"])
    cpu1 = cpu_seconds(pids)
    r1 = redis_commands(redis_url)
    pg1 = asyncio.run(pg_counters(pg_url))
    return {
        "rps": rps,
        "cpu_ms": {k: (cpu1[k] - cpu0[k]) * 1000 / requests for k in pids},
        "redis_cmds": {k: (n - r0.get(k, 0)) / requests for k, n in r1.items() if k != "info"},
        "pg_commits": {db: (pg1[db][0] - pg0[db][0]) / requests for db in pg1 if db in pg0},
        "pg_written": {db: (pg1[db][1] - pg0[db][1]) / requests for db in pg1 if db in pg0},
    }


def median_of(runs: list[dict[str, Any]], key: str) -> Any:
    first = runs[0][key]
    if isinstance(first, dict):
        keys = {k for r in runs for k in r[key]}
        return {k: statistics.median(r[key].get(k, 0.0) for r in runs) for k in keys}
    return statistics.median(r[key] for r in runs)


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {key: median_of(runs, key) for key in runs[0]}


def print_phase(name: str, figures: dict[str, Any]) -> None:
    print(f"\n{name}: {figures['rps']:.0f} req/s")
    print(f"  {'process':18} {'CPU ms/req':>10} {'cores @1k/s':>11} {'pods @1k/s':>10}")
    for proc, ms in sorted(figures["cpu_ms"].items(), key=lambda kv: -kv[1]):
        cores = ms  # ms per request x 1,000 req/s / 1,000 ms per core-second
        pods = cores / TARGET_UTILISATION
        print(f"  {proc:18} {ms:10.3f} {cores:11.2f} {pods:10.1f}")
    total = sum(figures["cpu_ms"].values())
    print(f"  {'total':18} {total:10.3f}")
    top = sorted(figures["redis_cmds"].items(), key=lambda kv: -kv[1])
    print(
        f"  Redis commands/request {sum(figures['redis_cmds'].values()):.1f}: "
        + ", ".join(f"{k} {v:.2f}" for k, v in top[:8])
    )
    print(
        "  PostgreSQL commits/request " + ", ".join(f"{k} {v:.2f}" for k, v in figures["pg_commits"].items())
    )
    print(
        "  PostgreSQL rows written/request "
        + ", ".join(f"{k} {v:.2f}" for k, v in figures["pg_written"].items())
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=6000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    run_dir = Path(tempfile.mkdtemp(prefix="lt-capacity-"))
    up_port = free_port()
    upstream = start_upstream(up_port)
    stack_pids: dict[str, int] = {}
    try:
        t0 = time.monotonic()
        gateway, admin_key, stack_pids = start_stack(run_dir, f"http://127.0.0.1:{up_port}", {})
        print(f"stack up in {time.monotonic() - t0:.1f}s ({run_dir})")
        state = json.loads((run_dir / "stack.json").read_text())
        pids = {k: int(v) for k, v in stack_pids.items()}
        user_key = asyncio.run(create_bench_user(gateway, admin_key))
        path = BenchPath("gateway", f"{gateway}/v1/chat/completions", {"Authorization": f"Bearer {user_key}"})
        asyncio.run(measure(path, 300, 8))  # warm-up
        wait_quiet(pids["analytics-worker"])
        idle = {k: rss_mb(v) for k, v in pids.items()}
        plain: list[dict[str, Any]] = []
        streamed: list[dict[str, Any]] = []
        with RssSampler(pids) as sampler:
            for _ in range(args.runs):
                plain.append(phase(path, pids, state, args.requests, args.concurrency, stream=False))
                streamed.append(phase(path, pids, state, args.requests // 2, args.concurrency, stream=True))
        if path.errors:
            print(f"!! {path.errors} non-200 answers, e.g. {path.error_samples}; figures are not valid")
        result = {
            "requests": args.requests,
            "concurrency": args.concurrency,
            "runs": args.runs,
            "cpus": psutil.cpu_count(),
            "non_streamed": summarise(plain),
            "streamed": summarise(streamed),
            "rss_idle_mb": idle,
            "rss_peak_mb": sampler.peak,
            "errors": path.errors,
        }
        print(
            f"\nmedians of {args.runs} runs, {args.requests} requests (streamed: half) at c={args.concurrency}"
        )
        print_phase("non-streamed", result["non_streamed"])
        print_phase("streamed", result["streamed"])
        print(
            "\nRSS MB idle -> peak: " + ", ".join(f"{k} {idle[k]:.0f} -> {sampler.peak[k]:.0f}" for k in pids)
        )
        if args.json:
            args.json.write_text(json.dumps(result, indent=2))
    finally:
        if stack_pids:
            subprocess.run(
                [sys.executable, str(ROOT / "deploy/local/stack.py"), "down", "--run-dir", str(run_dir)],
                check=False,
                stdout=subprocess.DEVNULL,
            )
        stop_pid(upstream.pid)


if __name__ == "__main__":
    main()
