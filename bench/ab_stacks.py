"""Two whole stacks that differ by their environment (any service's setting), started one after the other.

    python bench/ab_stacks.py --a LT_RESERVATION_RECORD_LINGER_S=0 --b LT_RESERVATION_RECORD_LINGER_S=0.02
                              [--reps 2] [--seconds 10] [--concurrency 32] [--json PATH]

`bench/ab.py` runs two gateways on one stack, which is the fairer comparison, but it can only vary the gateway.
A setting of quota (or of any other service) needs its own stack: this script starts the stack of
`bench/hotpath.py` (model `bench-gpt` routed over HTTP to one mock upstream) with the `--a` environment, then
with `--b`, alternating (A B, then B A, ...), and in each loads c=1 then c=N for `--seconds`, twice.

This machine's speed moves by 30 % and more between stacks, so besides each process's CPU milliseconds per
request (every process of the stack with its children: PostgreSQL's backends included), it prints that CPU
relative to the gateway's: a change to quota leaves the gateway's work alone, and the ratio cancels the drift.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ab import env_pairs
from hotpath import create_bench_user, free_port, start_stack, start_upstream, stop_pid, stop_stack
from settlement import cpu_seconds

BODY = {"model": "bench-gpt", "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 16}


async def load(url: str, headers: dict[str, str], concurrency: int, seconds: float) -> tuple[int, float]:
    """Requests done and their p50 (ms) with `concurrency` clients for `seconds`; every answer must be a 200."""
    latencies: list[float] = []
    end = time.monotonic() + seconds
    async with aiohttp.ClientSession() as session:

        async def client() -> None:
            while time.monotonic() < end:
                started = time.perf_counter()
                async with session.post(url, json=BODY, headers=headers) as resp:
                    await resp.read()
                    if resp.status != 200:
                        raise RuntimeError(f"HTTP {resp.status}")
                latencies.append(time.perf_counter() - started)

        await asyncio.gather(*(client() for _ in range(concurrency)))
    return len(latencies), statistics.median(latencies) * 1000


def run_stack(env: dict[str, str], args: argparse.Namespace) -> list[dict[str, object]]:
    run_dir = Path(tempfile.mkdtemp(prefix="lt-ab-stacks-"))
    port = free_port()
    upstream = start_upstream(port)
    rows: list[dict[str, object]] = []
    try:
        gateway, admin_key, pids = start_stack(run_dir, f"http://127.0.0.1:{port}", env)
        pids["upstream"] = upstream.pid
        user_key = asyncio.run(create_bench_user(gateway, admin_key))
        url, headers = f"{gateway}/v1/chat/completions", {"Authorization": f"Bearer {user_key}"}
        asyncio.run(load(url, headers, 8, 3))  # warm-up
        for concurrency in (1, args.concurrency, 1, args.concurrency):
            before = cpu_seconds(pids)
            done, p50 = asyncio.run(load(url, headers, concurrency, args.seconds))
            time.sleep(0.5)  # what the requests set off (settlement, analytics) mostly done
            after = cpu_seconds(pids)
            per = {k: 1000 * (after[k] - before[k]) / done for k in after if k in before}
            rows.append({"c": concurrency, "rps": done / args.seconds, "p50": p50, "cpu": per})
    finally:
        stop_stack(run_dir)
        stop_pid(upstream.pid, popen=upstream)
    return rows


def show(name: str, row: dict[str, object]) -> None:
    cpu: dict[str, float] = row["cpu"]  # type: ignore[assignment]
    gw = cpu.get("gateway") or 1.0
    top = sorted(cpu.items(), key=lambda kv: -kv[1])[:6]
    parts = " ".join(f"{k}={v:.2f}({v / gw:.2f})" for k, v in top)
    print(
        f"{name} c={row['c']}: {row['rps']:5.0f} req/s p50 {row['p50']:6.2f} ms | "
        f"stack {sum(cpu.values()):.2f} ms/req | {parts}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--a", nargs="*", default=[], help="LT_NAME=value for stack A (default: the defaults)"
    )
    parser.add_argument("--b", nargs="*", default=[], help="LT_NAME=value for stack B")
    parser.add_argument("--reps", type=int, default=2, help="stacks of each (alternating)")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    envs = {"A": env_pairs(args.a), "B": env_pairs(args.b)}
    results: dict[str, list[dict[str, object]]] = {"A": [], "B": []}
    for rep in range(args.reps):
        for name in ("A", "B") if rep % 2 == 0 else ("B", "A"):
            for row in run_stack(envs[name], args):
                show(name, row)
                results[name].append(row)
    print("\nmedians (CPU ms/request; in brackets, relative to the gateway's)")
    for concurrency in (1, args.concurrency):
        for name in ("A", "B"):
            rows = [r for r in results[name] if r["c"] == concurrency]
            names = sorted({k for r in rows for k in r["cpu"]})  # type: ignore[attr-defined]
            med = {k: statistics.median(r["cpu"].get(k, 0.0) for r in rows) for k in names}  # type: ignore[attr-defined]
            rel = {
                k: statistics.median(r["cpu"].get(k, 0.0) / (r["cpu"].get("gateway") or 1.0) for r in rows)  # type: ignore[attr-defined]
                for k in names
            }
            top = sorted(med, key=lambda k: -med[k])[:7]
            print(
                f"{name} c={concurrency}: {statistics.median(r['rps'] for r in rows):.0f} req/s "  # type: ignore[misc]
                f"p50 {statistics.median(r['p50'] for r in rows):.2f} ms "  # type: ignore[misc]
                f"stack {sum(med.values()):.2f} | " + " ".join(f"{k}={med[k]:.2f}({rel[k]:.2f})" for k in top)
            )
    if args.json:
        args.json.write_text(json.dumps({"env": envs, "results": results}, indent=1))


if __name__ == "__main__":
    main()
