"""Where the governed gateway's added latency at c=1 goes: the same stack measured with parts of the path taken away.

    python bench/floor.py [--phases 6] [--sequential 2000] [--no-portkey] [--no-install] [--json PATH]

One stack (`deploy/local/stack.py`, as `bench/hotpath.py` starts it: model `bench-gpt` routed over HTTP to one
mock upstream), and in front of the same upstream, each measured with `--sequential` requests one at a time:

- `direct`: the mock upstream itself;
- `governed`: the stack's gateway, as shipped;
- `admission 1 Redis trip`: a second gateway of the stack whose admission is one Redis round trip from the
  gateway (the real admission script, its keys and arguments replayed from a real admission captured with
  MONITOR), no quota hop: about what admission inside the gateway would cost (`bench/floor_stub`);
- `admission free`: a third gateway whose admission costs nothing (everything else as shipped);
- `bare Python proxy`: uvicorn and aiohttp forwarding the body, nothing else (`bench/bare_proxy.py`);
- `Portkey`: the Portkey gateway (Node, no governance), as `bench/hotpath.py` runs it, unless `--no-portkey`.

The paths take turns in every phase (a different one first each time, so the machine's drift falls on all), and
every figure is a median over the phases of that path's p50 or p99 minus the direct path's in the same phase.
The differences between the rows are what the quota hop, the admission's Redis trip, the gateway's own work and
a Python hop cost on this machine. The stub gateways still publish every request's usage event, which quota
settles as usual, so quota's background work is there for every gateway path. They are for this measurement
only: never in a stack.
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
from pathlib import Path
from typing import Any

import psutil
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hotpath import (
    BenchPath,
    create_bench_user,
    ensure_portkey,
    measure,
    percentile,
    portkey_path,
    start_gateway_like,
    start_portkey,
    start_stack,
    start_upstream,
    stop_stack,
)

from leaky_devinfra.infra import free_port, stop_pid, wait_for_port

BENCH = Path(__file__).resolve().parent


def capture_admission(redis_url: str, path: BenchPath) -> dict[str, Any]:
    """One governed request, and the admission script's call quota sent for it to Redis (seen with MONITOR):
    its words and its reservation id (the word that a `...:res:<id>` key ends with)."""
    seen: dict[str, Any] = {}
    listening = threading.Event()

    def monitor() -> None:
        client = redis.Redis.from_url(redis_url, decode_responses=True, socket_timeout=30)
        with client.monitor() as m:
            listening.set()
            for command in m.listen():
                words = str(command.get("command", "")).split(" ")
                # the admission: the EVALSHA with the most keys (a riding release has one)
                if command.get("client_type") == "tcp" and words[0].upper() == "EVALSHA" and len(words) > 20:
                    seen["argv"] = words
                    return

    thread = threading.Thread(target=monitor, daemon=True)
    thread.start()
    if not listening.wait(10):
        raise SystemExit("could not start MONITOR on the stack's Redis")
    asyncio.run(measure(path, 1, 1))
    thread.join(30)
    if "argv" not in seen:
        raise SystemExit("no admission seen on the stack's Redis")
    words: list[str] = seen["argv"]
    ids = [w for w in words if any(k.endswith(":res:" + w) for k in words)]
    if not ids:
        raise SystemExit("no reservation id in the captured admission")
    return {"argv": words, "reservation_id": ids[0]}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--phases", type=int, default=6)
    parser.add_argument(
        "--sequential", type=int, default=2000, help="requests one at a time per path and phase"
    )
    parser.add_argument("--no-portkey", action="store_true", help="skip the Portkey gateway")
    parser.add_argument("--no-install", action="store_true", help="do not install Portkey if missing")
    parser.add_argument("--json", type=Path, help="also write every figure here")
    args = parser.parse_args()
    if args.phases < 1 or args.sequential < 100:
        parser.error("--phases must be at least 1 and --sequential at least 100")

    run_dir = Path(tempfile.mkdtemp(prefix="lt-floor-"))
    up_port = free_port()
    upstream_url = f"http://127.0.0.1:{up_port}"
    procs: list[subprocess.Popen[bytes]] = [start_upstream(up_port)]
    try:
        gateway, admin_key, pids = start_stack(run_dir, upstream_url, {})
        auth = {"Authorization": f"Bearer {asyncio.run(create_bench_user(gateway, admin_key))}"}
        governed = BenchPath("governed (as shipped)", f"{gateway}/v1/chat/completions", auth)
        redis_url = psutil.Process(pids["quota"]).environ()["LT_REDIS_URL"]
        capture = run_dir / "admission.json"
        capture.write_text(json.dumps(capture_admission(redis_url, governed)))
        stub = {"PYTHONPATH": str(BENCH / "floor_stub")}
        trip, trip_url = start_gateway_like(
            run_dir, pids["gateway"], "admission-redis",
            {**stub, "LT_BENCH_STUB_ADMISSION": "redis", "LT_BENCH_REDIS_URL": redis_url,
             "LT_BENCH_CAPTURE": str(capture)},
        )  # fmt: skip
        procs.append(trip)
        free, free_url = start_gateway_like(
            run_dir, pids["gateway"], "admission-free", {**stub, "LT_BENCH_STUB_ADMISSION": "free"}
        )
        procs.append(free)
        bare_port = free_port()
        bare = subprocess.Popen([sys.executable, str(BENCH / "bare_proxy.py"), str(bare_port), upstream_url])
        procs.append(bare)
        wait_for_port(bare_port, popen=bare)
        paths = [
            BenchPath("direct mock upstream", f"{upstream_url}/v1/chat/completions", {}),
            governed,
            BenchPath("admission 1 Redis trip", f"{trip_url}/v1/chat/completions", auth),
            BenchPath("admission free", f"{free_url}/v1/chat/completions", auth),
            BenchPath("bare Python proxy", f"http://127.0.0.1:{bare_port}/v1/chat/completions", {}),
        ]
        script = None if args.no_portkey else ensure_portkey(not args.no_install)
        if script is not None:
            portkey, portkey_url = start_portkey(script, run_dir)
            procs.append(portkey)
            paths.append(portkey_path(portkey_url, upstream_url, portkey.pid))
        for path in paths:  # warm up (connections, caches, the stubs' first real admission)
            asyncio.run(measure(path, 300, 1))
        figures: dict[str, dict[str, list[float]]] = {p.name: {"p50": [], "p99": []} for p in paths}
        for phase in range(args.phases):
            turn = phase % len(paths)
            for path in paths[turn:] + paths[:turn]:
                latencies, _ = asyncio.run(measure(path, args.sequential, 1))
                figures[path.name]["p50"].append(percentile(latencies, 0.5) * 1000)
                figures[path.name]["p99"].append(percentile(latencies, 0.99) * 1000)
            print(
                f"phase {phase + 1}: "
                + ", ".join(f"{name} {f['p50'][-1]:.2f}/{f['p99'][-1]:.2f}" for name, f in figures.items()),
                flush=True,
            )
        failed = {p.name: (p.errors, p.error_samples) for p in paths if p.errors}
        if failed:
            raise SystemExit(f"requests failed: {failed}")
        direct = figures[paths[0].name]
        summary = {}
        print(
            f"\nms at c=1, medians over {args.phases} phases of {args.sequential} requests; added = minus direct:"
        )
        print(f"{'path':32} {'p50':>7} {'p99':>7} {'added p50':>10} {'added p99':>10}")
        for name, f in figures.items():
            row = {
                "p50": statistics.median(f["p50"]),
                "p99": statistics.median(f["p99"]),
                "added_p50": statistics.median(a - d for a, d in zip(f["p50"], direct["p50"], strict=True)),
                "added_p99": statistics.median(a - d for a, d in zip(f["p99"], direct["p99"], strict=True)),
            }
            summary[name] = row
            print(
                f"{name:32} {row['p50']:7.2f} {row['p99']:7.2f} {row['added_p50']:10.2f} {row['added_p99']:10.2f}"
            )
        if args.json:
            args.json.write_text(json.dumps({"phases": figures, "medians": summary}, indent=2))
    finally:
        for proc in reversed(procs):
            stop_pid(proc.pid)
        stop_stack(run_dir)


if __name__ == "__main__":
    main()
