"""Two gateway builds or settings on ONE stack, load alternating between them: the reliable way to compare them.

    python bench/ab.py --b LT_RELEASE_LINGER_S=0 [--a K=V ...] [--phases 6] [--requests 2000]
                       [--concurrency 32] [--sequential 300] [--stream N] [--json PATH]

Separate stacks, started one after the other, differ by more than most changes (this machine's speed moves by
30 % and more within minutes). Here one stack (`deploy/local/stack.py`, as `bench/hotpath.py` starts it, model
`bench-gpt` routed over HTTP to one mock upstream) gets two more gateway processes, A and B, started like its
own gateway but each with its own port, usage spool and `--a`/`--b` environment (`--a` defaults to nothing:
the stack's settings). They share quota, Redis, PostgreSQL, the broker, settlement and analytics, so the only
difference is the gateway's environment.

Each phase loads A then B (B then A in every other phase, so drift falls on both alike):
- c=1: `--sequential` requests one at a time: p50 and p99;
- c=N: `--requests` requests at `--concurrency`: req/s, p50, and CPU milliseconds per request of every process
  of the stack (the idle side's gateway included, so nothing is missed), counted from quiet to quiet again, so
  settlement and analytics of those requests are in it; the gateway under load is reported as `gateway`;
- `--stream N`: then N streamed requests one at a time: time to the first token (the first content chunk),
  p50 and p99.

Prints every phase, then the medians of A and B and how many phases B won on req/s and on CPU. `--json` writes
the phases and medians.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hotpath import (
    BenchPath,
    cpu_seconds,
    create_bench_user,
    measure,
    percentile,
    start_gateway_like,
    start_stack,
    start_upstream,
    stop_stack,
    wait_quiet,
)

from leaky_devinfra.infra import free_port, stop_pid

FIGURES = ("rps", "p50_c1", "p99_c1", "p50_cN", "cpu_gateway", "cpu_quota", "cpu_all")
STREAM_FIGURES = ("ttft50_c1", "ttft99_c1")


def env_pairs(values: list[str]) -> dict[str, str]:
    """`K=V` arguments as a dict (a clear error for anything else): LT_ settings, or PYTHONPATH (to run one
    service from another checkout: `PYTHONPATH=/tmp/old/services/quota/src` compares that commit's quota)."""
    out = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not (key.startswith("LT_") or key == "PYTHONPATH"):
            raise SystemExit(f"expected LT_NAME=value or PYTHONPATH=dir, got {value!r}")
        out[key] = val
    return out


def one_phase(path: BenchPath, watched: dict[str, int], args: argparse.Namespace) -> dict[str, float]:
    """c=1 latency, then c=N throughput and CPU per process from quiet to quiet."""
    seq, _ = asyncio.run(measure(path, args.sequential, 1))
    wait_quiet(watched)
    before = cpu_seconds(watched)
    latencies, rps = asyncio.run(measure(path, args.requests, args.concurrency))
    wait_quiet(watched)
    after = cpu_seconds(watched)
    per = {k: (after[k] - before[k]) * 1000 / args.requests for k in watched}
    streamed: dict[str, float] = {}
    if args.stream:
        ttft, _ = asyncio.run(measure(path, args.stream, 1, stream=True))
        if path.stream_errors:
            raise SystemExit(
                f"{path.name}: {path.stream_errors} streamed requests failed: {path.error_samples}"
            )
        streamed = {"ttft50_c1": percentile(ttft, 0.5) * 1000, "ttft99_c1": percentile(ttft, 0.99) * 1000}
    return {
        **streamed,
        "rps": rps,
        "p50_c1": percentile(seq, 0.5) * 1000,
        "p99_c1": percentile(seq, 0.99) * 1000,
        "p50_cN": percentile(latencies, 0.5) * 1000,
        "cpu_gateway": per[path.name],
        "cpu_quota": per.get("quota", 0.0),
        "cpu_all": sum(per.values()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--a", action="append", default=[], metavar="LT_K=V", help="environment of gateway A")
    parser.add_argument("--b", action="append", default=[], metavar="LT_K=V", help="environment of gateway B")
    parser.add_argument("--phases", type=int, default=6)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--sequential", type=int, default=300)
    parser.add_argument(
        "--stream",
        type=int,
        default=0,
        metavar="N",
        help="also N streamed requests one at a time per phase: time to the first token, p50 and p99",
    )
    parser.add_argument("--json", type=Path, help="also write every figure here")
    args = parser.parse_args()
    shown = FIGURES + (STREAM_FIGURES if args.stream else ())
    envs = {"A": env_pairs(args.a), "B": env_pairs(args.b)}
    if envs["A"] == envs["B"]:
        print("note: A and B have the same environment (an A/A run: the spread is the noise)")

    run_dir = Path(tempfile.mkdtemp(prefix="lt-ab-"))
    up_port = free_port()
    upstream = start_upstream(up_port)
    sides: dict[str, subprocess.Popen[bytes]] = {}
    stack_pids: dict[str, int] = {}
    phases: list[dict[str, object]] = []
    try:
        gateway, admin_key, stack_pids = start_stack(run_dir, f"http://127.0.0.1:{up_port}", {})
        user_key = asyncio.run(create_bench_user(gateway, admin_key))
        paths = {}
        for name, env in envs.items():
            proc, url = start_gateway_like(run_dir, stack_pids["gateway"], name, env)
            sides[name] = proc
            paths[name] = BenchPath(
                f"gateway-{name}", f"{url}/v1/chat/completions", {"Authorization": f"Bearer {user_key}"}
            )
        watched = {
            **stack_pids,
            **{f"gateway-{n}": p.pid for n, p in sides.items()},
            "upstream": upstream.pid,
        }
        for path in paths.values():  # warm both up (connections, caches, the JIT-less parts of start-up)
            asyncio.run(measure(path, 300, 8))
        print(f"A: {envs['A'] or '(the stack settings)'}\nB: {envs['B']}\nload average {os.getloadavg()}")
        print(f"{'phase':<8}{'side':<6}" + "".join(f"{f:>13}" for f in shown))
        for i in range(args.phases):
            order = ("A", "B") if i % 2 == 0 else ("B", "A")
            for name in order:
                figures = one_phase(paths[name], watched, args)
                phases.append({"phase": i + 1, "side": name, **figures})
                print(f"{i + 1:<8}{name:<6}" + "".join(f"{figures[f]:>13.2f}" for f in shown), flush=True)
    finally:
        for proc in sides.values():
            stop_pid(proc.pid, popen=proc)
        if stack_pids:
            stop_stack(run_dir)
        stop_pid(upstream.pid, popen=upstream)

    medians = {
        name: {f: statistics.median(float(p[f]) for p in phases if p["side"] == name) for f in shown}  # type: ignore[arg-type]
        for name in ("A", "B")
    }
    print("\nmedians over the phases (req/s; ms; CPU ms per request):")
    for name in ("A", "B"):
        print(f"{name:<14}" + "".join(f"{medians[name][f]:>13.2f}" for f in shown))
    by_phase = {(p["phase"], p["side"]): p for p in phases}
    won_rps = sum(by_phase[(i, "B")]["rps"] > by_phase[(i, "A")]["rps"] for i in range(1, args.phases + 1))  # type: ignore[operator]
    won_cpu = sum(
        by_phase[(i, "B")]["cpu_all"] < by_phase[(i, "A")]["cpu_all"]  # type: ignore[operator]
        for i in range(1, args.phases + 1)
    )
    print(f"B beat A on req/s in {won_rps} of {args.phases} phases, on CPU per request (all) in {won_cpu}")
    print(f"load average at the end {os.getloadavg()}; logs in {run_dir / 'logs'}")
    if args.json:
        args.json.write_text(json.dumps({"env": envs, "phases": phases, "medians": medians}, indent=2))


if __name__ == "__main__":
    main()
