"""Hot-path benchmark: a direct mock OpenAI upstream vs the governed gateway, in one run.

    python bench/hotpath.py [--requests 2000] [--concurrency 32]

Starts its own stack on free ports (with per-key buckets raised so the run measures governance rather than
429s) and stops it afterwards. Prints, for each path: p50/p99 latency at concurrency 1, req/s at the given concurrency, and
for the gateway the CPU milliseconds per request summed over every gateway-side process (gateway, quota,
Redis, broker) and each one's RSS. Governance is fully on: auth, leaky buckets, reservation, pricing, usage
event and its settlement.

Caveat (walking skeleton): the gateway answers `mock-gpt` with its in-process mock provider, while "direct"
is a separate uvicorn server; the comparison through a shared upstream comes with the provider adapters.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "deploy" / "local"))

from leaky_common.testing.infra import free_port, stop_pid, wait_for_port  # noqa: E402

_DIRECT_APP = """
import orjson, time
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route
BODY = orjson.dumps({"id": "chatcmpl-x", "object": "chat.completion", "created": 0, "model": "mock",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11}})
async def chat(request):
    await request.body()
    return Response(BODY, media_type="application/json")
app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])
"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(
    url: str, headers: dict[str, str], requests: int, concurrency: int
) -> tuple[list[float], float]:
    body = json.dumps(
        {"model": "mock-gpt", "messages": [{"role": "user", "content": "benchmark"}], "max_tokens": 16}
    )
    latencies: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        queue = iter(range(requests))

        async def worker() -> None:
            nonlocal errors
            for _ in queue:
                t0 = time.perf_counter()
                async with session.post(url, data=body, headers=headers) as resp:
                    await resp.read()
                    if resp.status != 200:
                        errors += 1
                latencies.append(time.perf_counter() - t0)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    if errors:
        print(f"  !! {errors} non-200 responses")
    return latencies, requests / elapsed


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    out = {}
    for name, pid in pids.items():
        try:
            proc = psutil.Process(pid)
            # PostgreSQL works in its backend children; count them with the postmaster.
            procs = [proc, *proc.children(recursive=True)] if name == "postgres" else [proc]
            out[name] = sum(t.user + t.system for t in (p.cpu_times() for p in procs))
        except psutil.NoSuchProcess:
            out[name] = 0.0
    return out


def rss_mb(pid: int) -> float:
    try:
        return psutil.Process(pid).memory_info().rss / 1e6
    except psutil.NoSuchProcess:
        return 0.0


# The benchmark measures governance, not the default per-key bucket (600 requests/min) it would hit.
BENCH_LIMITS = {
    "LT_KEY_REQUESTS_PER_PERIOD": "1000000000",
    "LT_KEY_TOKENS_PER_PERIOD": "1000000000000",
    "LT_USER_REQUESTS_PER_PERIOD": "1000000000",
    "LT_USER_TOKENS_PER_PERIOD": "1000000000000",
}


def start_stack() -> tuple[str, str, dict[str, int], Path]:
    run_dir = Path(tempfile.mkdtemp(prefix="lt-bench-"))
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "deploy/local/stack.py"),
            "up",
            "--run-dir",
            str(run_dir),
            "--ports",
            "auto",
        ],
        check=True,
        env={**os.environ, **BENCH_LIMITS},
        stdout=subprocess.DEVNULL,
    )
    env = dict(line.split("=", 1) for line in (run_dir / "stack.env").read_text().split())
    state = json.loads((run_dir / "stack.json").read_text())
    return env["LT_GATEWAY_URL"], env["LT_ADMIN_KEY"], state["pids"], run_dir


async def create_bench_user(gateway: str, admin_key: str) -> str:
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            f"{gateway}/v1/admin/users",
            headers={"Authorization": f"Bearer {admin_key}"},
            json={
                "email": f"bench-{uuid.uuid4().hex[:8]}@example.com",
                "name": "bench",
                "personal_quota": 10**12,
            },
        ) as resp,
    ):
        assert resp.status == 201, await resp.text()
        return str((await resp.json())["api_key"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--sequential", type=int, default=500)
    args = parser.parse_args()

    gateway, admin_key, pids, own_run_dir = start_stack()
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "direct_app.py").write_text(_DIRECT_APP)
        port = free_port()
        direct = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "direct_app:app",
                "--port",
                str(port),
                "--loop",
                "uvloop",
                "--http",
                "httptools",
                "--no-access-log",
                "--log-level",
                "warning",
            ],
            cwd=tmp,
            env={**os.environ, "PYTHONPATH": tmp},
        )
        try:
            wait_for_port(port)
            user_key = asyncio.run(create_bench_user(gateway, admin_key))
            rows = []
            gw_side = {k: v for k, v in pids.items() if k in ("gateway", "quota", "redis", "broker")}
            # Settlement and aggregation run off the request path; shown separately.
            off_path = {k: v for k, v in pids.items() if k in ("postgres", "analytics-worker")}
            breakdown: dict[str, float] = {}
            for name, url, headers in (
                ("direct mock upstream", f"http://127.0.0.1:{port}/v1/chat/completions", {}),
                (
                    "gateway (governance on)",
                    f"{gateway}/v1/chat/completions",
                    {"Authorization": f"Bearer {user_key}", "Content-Type": "application/json"},
                ),
            ):
                asyncio.run(measure(url, headers, 200, 8))  # warm-up
                seq, _ = asyncio.run(measure(url, headers, args.sequential, 1))
                watched = {**gw_side, **off_path}
                cpu0 = cpu_seconds(watched)
                _, rps = asyncio.run(measure(url, headers, args.requests, args.concurrency))
                cpu1 = cpu_seconds(watched)
                cpu_ms = sum(cpu1[k] - cpu0[k] for k in gw_side) * 1000 / args.requests
                if name.startswith("gateway"):
                    breakdown = {k: (cpu1[k] - cpu0[k]) * 1000 / args.requests for k in watched}
                rows.append(
                    (
                        name,
                        percentile(seq, 0.5) * 1000,
                        percentile(seq, 0.99) * 1000,
                        rps,
                        cpu_ms if name.startswith("gateway") else None,
                    )
                )
            print(
                f"\n{'path':28} {'p50 c=1':>9} {'p99 c=1':>9} {'req/s c=' + str(args.concurrency):>12} {'CPU ms/req':>11}"
            )
            for name, p50, p99, rps, cpu in rows:
                cpu_s = f"{cpu:11.2f}" if cpu is not None else f"{'-':>11}"
                print(f"{name:28} {p50:8.2f}ms {p99:8.2f}ms {rps:12.0f} {cpu_s}")
            added50 = rows[1][1] - rows[0][1]
            added99 = rows[1][2] - rows[0][2]
            print(f"\nadded latency vs direct: p50 {added50:.2f} ms, p99 {added99:.2f} ms")
            print("CPU ms/request by process: " + ", ".join(f"{k} {v:.2f}" for k, v in breakdown.items()))
            print("RSS (MB): " + ", ".join(f"{k} {rss_mb(v):.0f}" for k, v in pids.items()))
        finally:
            stop_pid(direct.pid, popen=direct)
            subprocess.run(
                [
                    sys.executable,
                    str(ROOT / "deploy/local/stack.py"),
                    "down",
                    "--run-dir",
                    str(own_run_dir),
                ],
                check=False,
            )


if __name__ == "__main__":
    main()
