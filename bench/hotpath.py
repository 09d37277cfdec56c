"""Hot-path benchmark: direct vs the governed gateway vs Portkey and LiteLLM, against ONE mock upstream.

    python bench/hotpath.py [--requests 2000] [--concurrency 32] [--sequential 500] [--runs 3]
                            [--no-litellm] [--no-portkey] [--no-install] [--trace off|on|no-client-spans]
                            [--no-twin] [--memory-requests N] [--memory-rounds K] [--event-benches]
                            [--json PATH]

Starts one mock OpenAI upstream process (bench/mock_upstream.py), then:
- direct: the client calls the upstream;
- gateway: its own stack on free ports (buckets raised so the run measures governance rather than 429s),
  model `bench-gpt` routed to the upstream as an OpenAI-compatible provider. Governance is fully on: auth,
  leaky buckets, reservation, pricing, usage event and its settlement;
- litellm: LiteLLM proxy 1.106.2 (1 worker, master key, no database: governance off), installed on demand
  into .run/litellm-venv (never into the workspace); skipped with a message if it cannot be installed;
- portkey: the Portkey OSS gateway 1.15.2 (`@portkey-ai/gateway` from npm, Node, governance off), installed on
  demand into .run/portkey with `npm install --prefix`, started as `node build/start-server.js --port=N
  --headless` with NODE_ENV=production; requests carry `x-portkey-provider: openai` and
  `x-portkey-custom-host: <upstream>/v1`; skipped with a message if node/npm or the install fail. Its streamed
  path fails on Node 20 and on Node 22.23 alike (undici `TypeError: immutable`: Portkey's `updateHeaders` appends
  to the headers of a fetch Response), so its TTFT is reported as failed, not measured;
- gateway, no release before the end: a second gateway process of the same stack started with
  LT_RELEASE_BEFORE_END=false (the unused part of a reservation is freed only by the usage event), so the
  difference between the two gateways is what releasing before the last bytes costs.

- `--trace on`: the stack exports every trace (`LT_TRACE_SAMPLE_RATIO=1.0`) over OTLP/HTTP to an in-process fake
  collector (leaky_devinfra.fakes.otlp, in a thread of this script, so its CPU is not the stack's), with the
  Redis, PostgreSQL and HTTP client spans in every trace (`LT_TRACE_CLIENT_SPAN_RATIO=1.0`); `--trace default`
  the same with the default client span ratio; `--trace no-client-spans` with `LT_TRACE_CLIENT_SPANS=false`. `bench/client_spans.py` alternates the two and compares the CPU.

Figures are medians of `--runs` interleaved runs. Prints for each path: p50/p99 latency at concurrency 1
(non-streamed) and the added latency vs direct, streamed time-to-first-token p50, req/s at the given
concurrency, and CPU milliseconds per request of the c=N phase (until the path's processes are quiet again):
- own: summed over the path's hot-path processes (gateway: gateway, quota, Redis, broker; peers: their process
  and its children);
- all: every process of the path (gateway: every service of its stack, settlement and analytics included) plus
  the shared mock upstream;
- machine: total machine CPU time (psutil.cpu_times, every process) minus this load generator's own CPU. On a
  machine shared with other work this also counts that work: compare it only between runs on a quiet machine.
Then every service's idle RSS after start-up (idle: the whole stack under 10% of a core for 2.5 s), the memory check (`--memory-requests N`: N requests through the
governed gateway at c=N, every service's RSS before, after and the growth; `--memory-rounds K` repeats it K
times on the same stack, telling growth that levels off, as caches fill, from growth that goes on), and the issue-14 targets table
(target | measured | met?). `--event-benches` also runs bench/settlement.py and bench/analytics.py after the
stack is stopped, for the settlement and analytics events/s rows. `--json PATH` writes everything.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "deploy" / "local"))

from leaky_devinfra.fakes.otlp import FakeCollector  # noqa: E402
from leaky_devinfra.infra import free_port, stop_pid, wait_for_port  # noqa: E402

LITELLM_VERSION = "1.106.2"
LITELLM_VENV = ROOT / ".run" / "litellm-venv"
PORTKEY_VERSION = "1.15.2"
PORTKEY_DIR = ROOT / ".run" / "portkey"
PORTKEY_SCRIPT = PORTKEY_DIR / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"
# Portkey 1.15.2 asks for @hono/node-server ^1.3.3, and npm picks the newest 1.x. From 1.14 on, a streamed answer
# fails on Node (500 "Something went wrong", `TypeError: immutable` in its `updateHeaders`: Portkey-AI/gateway
# issues 1389 and 1550). Pinned to the last 1.13 its streamed path works; its unstreamed path measured the same
# with either (docs/benchmarks.md, twelfth pass).
PORTKEY_HONO_NODE_SERVER = "1.13.8"
PORTKEY_HONO_PACKAGE = PORTKEY_DIR / "node_modules" / "@hono" / "node-server" / "package.json"
GATEWAY = "gateway (governance on)"
# Infrastructure the stack starts, not the project's services: outside the RSS targets (PostgreSQL's RSS is
# summed over its processes, so its shared buffers count once per backend).
INFRA = frozenset({"broker", "broker-proxy", "postgres", "redis"})
MODEL = "bench-gpt"
NO_RELEASE = "gateway, no release before the end"
BODY = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "benchmark"}], "max_tokens": 16})
STREAM_BODY = json.dumps(
    {"model": MODEL, "messages": [{"role": "user", "content": "benchmark"}], "max_tokens": 16, "stream": True}
)
# The benchmark measures governance, not the default per-key bucket (600 requests/min) it would hit, nor the
# loop detector, which rightly freezes a key sending one prompt thousands of times (detectors still run; they
# only send no freeze command).
BENCH_LIMITS = {
    # The local stack's broker without its chaos proxy: a deployment has none, and the peers have no such hop.
    "LT_STACK_BROKER_PROXY": "false",
    "LT_ANOMALY_THRESHOLDS": json.dumps({"freeze_on": []}),
    "LT_KEY_REQUESTS_PER_PERIOD": "1000000000",
    "LT_KEY_TOKENS_PER_PERIOD": "1000000000000",
    "LT_USER_REQUESTS_PER_PERIOD": "1000000000",
    "LT_USER_TOKENS_PER_PERIOD": "1000000000000",
}


@dataclass
class BenchPath:
    """One measured path: where to send requests and which processes are its own."""

    name: str
    url: str
    headers: dict[str, str]
    pids: dict[str, int] = field(default_factory=dict)
    off_path: dict[str, int] = field(default_factory=dict)
    p50: float = 0.0
    p99: float = 0.0
    ttft50: float | None = None
    rps: float = 0.0
    cpu_ms: float | None = None
    cpu_all_ms: float | None = None
    machine_ms: float | None = None
    breakdown: dict[str, float] = field(default_factory=dict)
    errors: int = 0
    # Streamed answers that were not 200 (Portkey's streamed path fails, on Node 20 and 22): TTFT is then not reported.
    stream_errors: int = 0
    # First few non-200 answers (status and body head), so a broken run says why.
    error_samples: dict[int, str] = field(default_factory=dict)
    runs: list[dict[str, float]] = field(default_factory=list)

    def summarise(self) -> None:
        """Each figure is the median over the runs (the machine is noisy; TARGETS.md asks for medians)."""
        for name in ("p50", "p99", "ttft50", "rps", "cpu_ms", "cpu_all_ms", "machine_ms"):
            values = [r[name] for r in self.runs if name in r]
            if values:
                setattr(self, name, statistics.median(values))
        keys = {k for r in self.runs for k in r if k.startswith("cpu:")}
        self.breakdown = {k[4:]: statistics.median(r[k] for r in self.runs) for k in sorted(keys)}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(
    path: BenchPath, requests: int, concurrency: int, stream: bool = False
) -> tuple[list[float], float]:
    """Latencies (full response, or first content chunk when streaming) and req/s."""
    latencies: list[float] = []
    connector = aiohttp.TCPConnector(limit=concurrency)
    body = STREAM_BODY if stream else BODY
    headers = {"Content-Type": "application/json", **path.headers}
    async with aiohttp.ClientSession(connector=connector) as session:
        queue = iter(range(requests))

        async def worker() -> None:
            for _ in queue:
                t0 = time.perf_counter()
                async with session.post(path.url, data=body, headers=headers) as resp:
                    if resp.status != 200:
                        text = (await resp.read())[:300].decode(errors="replace")
                        if stream:
                            path.stream_errors += 1
                            path.error_samples.setdefault(-resp.status, f"(streamed) {text}")
                        else:
                            path.errors += 1
                            path.error_samples.setdefault(resp.status, text)
                    elif stream:
                        first = None
                        async for line in resp.content:
                            if first is None and b'"content":"' in line and b'"content":""' not in line:
                                first = time.perf_counter() - t0
                        latencies.append(first if first is not None else time.perf_counter() - t0)
                    else:
                        await resp.read()
                        latencies.append(time.perf_counter() - t0)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    return latencies, requests / elapsed


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    out = {}
    for name, pid in pids.items():
        try:
            proc = psutil.Process(pid)
            # PostgreSQL and LiteLLM work in child processes; count them with their parent.
            procs = [proc, *proc.children(recursive=True)]
            out[name] = sum(t.user + t.system for t in (p.cpu_times() for p in procs))
        except psutil.NoSuchProcess:
            out[name] = 0.0
    return out


def machine_busy_s() -> float:
    """CPU seconds the whole machine has been busy (every process, every core): all but idle and iowait;
    guest time is already inside user on Linux."""
    t = psutil.cpu_times()
    skip = {"idle", "iowait", "guest", "guest_nice"}
    return float(sum(v for k, v in t._asdict().items() if k not in skip))


def own_cpu_s() -> float:
    """CPU seconds of this process (the load generator: its event loop and every thread)."""
    t = psutil.Process().cpu_times()
    return float(t.user + t.system)


def wait_quiet(
    pids: dict[str, int], deadline_s: float = 8.0, step_s: float = 0.25, quiet_s: float = 0.25
) -> None:
    """Wait until `pids` have used under 10% of a core for `quiet_s` (their off-path work, settlement and
    analytics, drained), or the deadline: the CPU window then covers the whole cost of the requests sent.

    RSS is read after `IDLE_S` of quiet: a service gives the heap pages a burst freed back once a quiet second
    has passed (`LT_HEAP_TRIM_INTERVAL_S`), so a reading a quarter second after the last request shows a
    service just done with work, not an idle one."""
    end = time.monotonic() + deadline_s
    last = sum(cpu_seconds(pids).values())
    quiet_for = 0.0
    while time.monotonic() < end:
        time.sleep(step_s)
        now = sum(cpu_seconds(pids).values())
        quiet_for = quiet_for + step_s if now - last < 0.1 * step_s else 0.0
        if quiet_for >= quiet_s:
            return
        last = now


IDLE_S = 2.5


def rss_mb(pid: int) -> float:
    try:
        proc = psutil.Process(pid)
        return float(sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)])) / 1e6
    except psutil.NoSuchProcess:
        return 0.0


def run_path(path: BenchPath, args: argparse.Namespace) -> None:
    """One run of every measurement on `path`, appended to `path.runs`."""
    run: dict[str, float] = {}
    asyncio.run(measure(path, 200, 8))  # warm-up
    seq, _ = asyncio.run(measure(path, args.sequential, 1))
    run["p50"], run["p99"] = percentile(seq, 0.5) * 1000, percentile(seq, 0.99) * 1000
    failed = path.stream_errors
    ttft, _ = asyncio.run(measure(path, max(args.sequential // 2, 50), 1, stream=True))
    if path.stream_errors == failed:
        run["ttft50"] = percentile(ttft, 0.5) * 1000
    watched = {**path.pids, **path.off_path, "upstream": args.upstream_pid}
    wait_quiet(watched)
    cpu0, machine0, own0 = cpu_seconds(watched), machine_busy_s(), own_cpu_s()
    _, run["rps"] = asyncio.run(measure(path, args.requests, args.concurrency))
    wait_quiet(watched)
    cpu1, machine1, own1 = cpu_seconds(watched), machine_busy_s(), own_cpu_s()
    per_request = 1000 / args.requests
    run["machine_ms"] = ((machine1 - machine0) - (own1 - own0)) * per_request
    run["cpu_all_ms"] = sum(cpu1[k] - cpu0[k] for k in watched) * per_request
    run["cpu:upstream"] = (cpu1["upstream"] - cpu0["upstream"]) * per_request
    if path.pids:
        run["cpu_ms"] = sum(cpu1[k] - cpu0[k] for k in path.pids) * per_request
        run.update({f"cpu:{k}": (cpu1[k] - cpu0[k]) * per_request for k in watched})
    path.runs.append(run)


def start_upstream(port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, str(ROOT / "bench" / "mock_upstream.py"), str(port)])
    wait_for_port(port, popen=proc)
    return proc


def start_collector() -> tuple[FakeCollector, str]:
    """A fake OTLP collector served by its own event loop in a daemon thread (the benchmark runs several
    `asyncio.run` in turn); returns it and its URL."""
    collector = FakeCollector()
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True, name="otlp-collector").start()
    url = asyncio.run_coroutine_threadsafe(collector.start(), loop).result(timeout=30)
    return collector, url


def trace_env(mode: str, collector_url: str) -> dict[str, str]:
    """The stack's environment for `--trace on|no-client-spans`."""
    return {
        "LT_OTLP_ENDPOINT": collector_url,
        "LT_TRACE_SAMPLE_RATIO": "1.0",
        "LT_TRACE_CLIENT_SPANS": "false" if mode == "no-client-spans" else "true",
        # `on`: client spans in every trace; `default`: in the default share of them.
        **({"LT_TRACE_CLIENT_SPAN_RATIO": "1.0"} if mode == "on" else {}),
    }


def start_stack(run_dir: Path, upstream: str, extra_env: dict[str, str]) -> tuple[str, str, dict[str, int]]:
    models = run_dir / "bench-models.json"
    models.write_text(
        json.dumps(
            [
                {
                    "name": MODEL,
                    "provider": "openai_compatible",
                    "upstream_model": MODEL,
                    "base_url": f"{upstream}/v1",
                    "pricing_model": "gpt-4o-mini",
                }
            ]
        )
    )
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
        env={**os.environ, **BENCH_LIMITS, "LT_MODELS_FILE": str(models), **extra_env},
        stdout=subprocess.DEVNULL,
    )
    env = dict(line.split("=", 1) for line in (run_dir / "stack.env").read_text().split())
    state = json.loads((run_dir / "stack.json").read_text())
    return env["LT_GATEWAY_URL"], env["LT_ADMIN_KEY"], state["pids"]


def start_gateway_like(
    run_dir: Path, gateway_pid: int, name: str, env: dict[str, str]
) -> tuple[subprocess.Popen[bytes], str]:
    """Another gateway of the same stack (same quota, broker and models), started as the stack's own was but on
    its own port and spool, with `env` on top; returns it and its URL."""
    proc = psutil.Process(gateway_pid)
    port = free_port()
    full = {
        **proc.environ(),
        "LT_PORT": str(port),
        "LT_USAGE_SPOOL_PATH": str(run_dir / f"gateway-{name}-spool.sqlite"),
        **env,
    }
    log = (run_dir / "logs" / f"gateway-{name}.log").open("ab")
    side = subprocess.Popen(proc.cmdline(), env=full, cwd=proc.cwd(), stdout=log, stderr=subprocess.STDOUT)
    wait_for_port(port, timeout=60, popen=side)
    return side, f"http://127.0.0.1:{port}"


def start_twin_gateway(run_dir: Path, gateway_pid: int) -> tuple[subprocess.Popen[bytes], str]:
    """A second gateway of the stack without the release before the end."""
    return start_gateway_like(run_dir, gateway_pid, "twin", {"LT_RELEASE_BEFORE_END": "false"})


def stop_stack(run_dir: Path) -> None:
    """Stop what `start_stack` started (and only that)."""
    subprocess.run(
        [sys.executable, str(ROOT / "deploy/local/stack.py"), "down", "--run-dir", str(run_dir)], check=False
    )


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


def ensure_litellm(install: bool) -> Path | None:
    """The litellm executable of the private venv, installing it on first use; None (with a message) if not."""
    exe = LITELLM_VENV / "bin" / "litellm"
    if exe.exists():
        return exe
    if not install:
        print(f"LiteLLM proxy skipped: {exe} not found (run without --no-litellm to install it)")
        return None
    print(
        f"installing litellm[proxy]=={LITELLM_VERSION} into {LITELLM_VENV} (first run only) ...", flush=True
    )
    uv = shutil.which("uv") or str(ROOT / ".tools" / "bin" / "uv")
    try:
        if Path(uv).exists():
            env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never"}
            subprocess.run([uv, "venv", "-q", "-p", sys.executable, str(LITELLM_VENV)], check=True, env=env)
            subprocess.run(
                [uv, "pip", "install", "-q", "--python", str(LITELLM_VENV / "bin" / "python"),
                 f"litellm[proxy]=={LITELLM_VERSION}"],
                check=True, env=env, timeout=900,
            )  # fmt: skip
        else:
            subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True)
            subprocess.run(
                [str(LITELLM_VENV / "bin" / "pip"), "install", "-q", f"litellm[proxy]=={LITELLM_VERSION}"],
                check=True, timeout=900,
            )  # fmt: skip
    except (subprocess.SubprocessError, OSError) as exc:
        print(f"LiteLLM proxy skipped: could not install litellm[proxy]=={LITELLM_VERSION} ({exc})")
        shutil.rmtree(LITELLM_VENV, ignore_errors=True)
        return None
    return exe if exe.exists() else None


def start_litellm(exe: Path, upstream: str, run_dir: Path) -> tuple[subprocess.Popen[bytes], str, str]:
    port, key = free_port(), "sk-litellm-bench"
    config = run_dir / "litellm.yaml"
    config.write_text(
        f"""model_list:
  - model_name: {MODEL}
    litellm_params:
      model: openai/{MODEL}
      api_base: {upstream}/v1
      api_key: sk-upstream
general_settings:
  master_key: {key}
litellm_settings:
  telemetry: false
"""
    )
    log = (run_dir / "litellm.log").open("ab")
    env = {
        **os.environ,
        "LITELLM_LOG": "ERROR",
        "LITELLM_TELEMETRY": "False",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    }
    env.pop("DATABASE_URL", None)
    proc = subprocess.Popen(
        [str(exe), "--config", str(config), "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=run_dir,
    )  # fmt: skip
    wait_for_port(port, timeout=180, popen=proc)
    return proc, f"http://127.0.0.1:{port}", key


def _portkey_installed() -> bool:
    """Whether .run/portkey holds Portkey with the pinned @hono/node-server (an older install lacks the pin)."""
    try:
        hono = json.loads(PORTKEY_HONO_PACKAGE.read_text())["version"]
    except (OSError, ValueError, KeyError):
        return False
    return PORTKEY_SCRIPT.exists() and hono == PORTKEY_HONO_NODE_SERVER


def ensure_portkey(install: bool) -> Path | None:
    """Portkey's start-server.js under .run/portkey, installing it with npm on first use (again if the install
    there predates the @hono/node-server pin); None (with a message) if node or npm is missing or the install
    fails."""
    if _portkey_installed() and shutil.which("node"):
        return PORTKEY_SCRIPT
    if not shutil.which("node") or not shutil.which("npm"):
        print("Portkey gateway skipped: node and npm are needed (Node 20 or later)")
        return None
    if not install:
        print(
            f"Portkey gateway skipped: no install with @hono/node-server {PORTKEY_HONO_NODE_SERVER} in {PORTKEY_DIR}"
            " (run without --no-install to install it)"
        )
        return None
    print(
        f"installing @portkey-ai/gateway@{PORTKEY_VERSION} (@hono/node-server {PORTKEY_HONO_NODE_SERVER}) into"
        f" {PORTKEY_DIR} ...",
        flush=True,
    )
    PORTKEY_DIR.mkdir(parents=True, exist_ok=True)
    manifest = {
        "private": True,
        "dependencies": {"@portkey-ai/gateway": PORTKEY_VERSION},
        "overrides": {"@hono/node-server": PORTKEY_HONO_NODE_SERVER},
    }
    (PORTKEY_DIR / "package.json").write_text(json.dumps(manifest, indent=2) + "\n")
    try:
        subprocess.run(
            ["npm", "install", "--prefix", str(PORTKEY_DIR), "--no-audit", "--no-fund", "--loglevel=error"],
            check=True, timeout=900, stdout=subprocess.DEVNULL,
        )  # fmt: skip
    except (subprocess.SubprocessError, OSError) as exc:
        print(f"Portkey gateway skipped: could not install @portkey-ai/gateway@{PORTKEY_VERSION} ({exc})")
        return None
    if not _portkey_installed():
        print(f"Portkey gateway skipped: {PORTKEY_SCRIPT} or the pinned @hono/node-server not installed")
        return None
    return PORTKEY_SCRIPT


def start_portkey(script: Path, run_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    log = (run_dir / "portkey.log").open("ab")
    proc = subprocess.Popen(
        [shutil.which("node") or "node", str(script), f"--port={port}", "--headless"],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "NODE_ENV": "production"}, cwd=PORTKEY_DIR,
    )  # fmt: skip
    wait_for_port(port, timeout=120, popen=proc)
    return proc, f"http://127.0.0.1:{port}"


def portkey_path(url: str, upstream_url: str, pid: int) -> BenchPath:
    """Portkey at `url` in front of the mock upstream, as an OpenAI provider with a custom host."""
    return BenchPath(
        f"Portkey gateway {PORTKEY_VERSION} (gov. off)",
        f"{url}/v1/chat/completions",
        {
            "Authorization": "Bearer sk-upstream",
            "x-portkey-provider": "openai",
            "x-portkey-custom-host": f"{upstream_url}/v1",
        },
        pids={"portkey": pid},
    )


def fmt(value: float | None, unit: str = "", width: int = 9, digits: int = 2) -> str:
    return (
        f"{'-':>{width}}"
        if value is None or math.isnan(value)
        else f"{value:{width - len(unit)}.{digits}f}{unit}"
    )


def report(paths: list[BenchPath], args: argparse.Namespace, stack_pids: dict[str, int]) -> None:
    direct = paths[0]
    c = args.concurrency
    print(
        f"\nmedians of {args.runs} interleaved runs; {args.sequential} sequential requests, {args.requests} at c={c}"
        f"; load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}"
    )
    print(
        f"{'path':38} {'p50 c=1':>9} {'p99 c=1':>9} {'+p50':>8} {'+p99':>8} {'TTFT p50':>9} {'+TTFT':>8} "
        f"{'req/s c=' + str(c):>11} {'CPU own':>8} {'CPU all':>8} {'machine':>8} {'RSS MB':>7}"
    )
    for p in paths:
        own = p is direct
        ttft_added = None if p.ttft50 is None or direct.ttft50 is None or own else p.ttft50 - direct.ttft50
        rss = f"{sum(rss_mb(pid) for pid in p.pids.values()):7.0f}" if p.pids else f"{'-':>7}"
        ttft = fmt(p.ttft50, "ms") if p.ttft50 is not None else f"{'failed':>9}"
        print(
            f"{p.name:38} {fmt(p.p50, 'ms')} {fmt(p.p99, 'ms')} {fmt(None if own else p.p50 - direct.p50, 'ms', 8)} "
            f"{fmt(None if own else p.p99 - direct.p99, 'ms', 8)} "
            f"{ttft} "
            f"{fmt(ttft_added, 'ms', 8)} {p.rps:11.0f} {fmt(p.cpu_ms, '', 8)} {fmt(p.cpu_all_ms, '', 8)} "
            f"{fmt(p.machine_ms, '', 8)} {rss}"
        )
        if p.errors:
            print(f"  !! {p.errors} non-200 responses; the figures above are not valid")
        if p.stream_errors:
            print(f"  !! {p.stream_errors} streamed requests failed; no TTFT for this path")
        for status, sample in list(p.error_samples.items())[:3]:
            print(f"     {abs(status)}: {sample.strip()[:200]}")
    print(
        "CPU ms/request of the c=32 phase: own = the path's hot-path processes; all = every process of the path"
        " (the gateway's whole stack) plus the mock upstream; machine = every process on the machine minus the"
        " load generator (includes other work on a shared machine)"
    )
    for p in paths:
        if p.breakdown:
            print(
                f"{p.name} CPU ms/request by process: "
                + ", ".join(f"{k} {v:.2f}" for k, v in p.breakdown.items())
            )
    print(
        "RSS (MB) of the gateway stack now: "
        + ", ".join(f"{k} {rss_mb(v):.0f}" for k, v in stack_pids.items())
    )
    gw = paths[1]
    base = next((p for p in paths if p.name == NO_RELEASE), None)
    if base is not None:
        ttft = "-" if gw.ttft50 is None or base.ttft50 is None else f"{gw.ttft50 - base.ttft50:+.2f} ms"
        print(
            f"the release before the end costs p50 {gw.p50 - base.p50:+.2f} ms, TTFT p50 {ttft}, "
            f"CPU {(gw.cpu_ms or 0.0) - (base.cpu_ms or 0.0):+.2f} ms/request"
        )


def memory_check(gw: BenchPath, stack_pids: dict[str, int], args: argparse.Namespace) -> dict[str, object]:
    """`--memory-requests` requests through the governed gateway at c=N; every service's RSS before and after
    (each idle: its off-path work drained, then 2.5 s under 10% of a core)."""
    wait_quiet(stack_pids, deadline_s=15, quiet_s=IDLE_S)
    before = {k: rss_mb(v) for k, v in stack_pids.items()}
    n = args.memory_requests
    print(
        f"\nmemory check: {n} requests through the governed gateway at c={args.concurrency} ...", flush=True
    )
    errors0 = gw.errors
    _, rps = asyncio.run(measure(gw, n, args.concurrency))
    wait_quiet(stack_pids, deadline_s=30, quiet_s=IDLE_S)
    after = {k: rss_mb(v) for k, v in stack_pids.items()}
    growth = {k: after[k] - before[k] for k in before}
    print(f"memory check: {n} requests at {rps:.0f} req/s, {gw.errors - errors0} non-200")
    print(f"{'service':18} {'idle before MB':>15} {'idle after MB':>14} {'growth MB':>10}")
    for k, mb in before.items():
        note = " (infrastructure)" if k in INFRA else ""
        note += " (summed over its processes)" if k == "postgres" else ""
        print(f"{k:18} {mb:15.1f} {after[k]:14.1f} {growth[k]:+10.1f}{note}")
    return {
        "requests": n,
        "rps": rps,
        "errors": gw.errors - errors0,
        "before": before,
        "after": after,
        "growth": growth,
    }


def event_benches() -> dict[str, float | None]:
    """Settlement and analytics events/s from their own benchmarks (each starts its own infrastructure)."""
    out: dict[str, float | None] = {}
    runs = {
        # Sustained, end to end: a burst's figure depends on where quota's batches fall (bench/settlement.py).
        "settlement": (
            ["bench/settlement.py", "--releases", "200", "--rate", "6000", "--steady-events", "24000"],
            r"steady: .* ([\d,]+) events/s settled",
        ),
        "analytics": (
            ["bench/analytics.py", "--rates", "1000", "--seconds", "5"],
            r"drain: .* at ([\d,]+) events/s",
        ),
    }
    for name, (argv, pattern) in runs.items():
        print(f"running {' '.join(argv)} ...", flush=True)
        done = subprocess.run([sys.executable, *argv], capture_output=True, text=True, cwd=ROOT, check=False)
        print(done.stdout.rstrip())
        found = re.search(pattern, done.stdout)
        out[name] = float(found.group(1).replace(",", "")) if found else None
        if found is None:
            print(f"{name}: no events/s figure (exit {done.returncode}): {done.stderr.strip()[-400:]}")
    return out


def targets(
    paths: list[BenchPath],
    idle_rss: dict[str, float],
    memory: dict[str, object] | None,
    events: dict[str, float | None] | None,
) -> list[tuple[str, str, str]]:
    """Issue 14's targets: (target, measured, met?) — `n/a` where the run did not measure it."""
    direct, gw = paths[0], paths[1]
    portkey = next((p for p in paths if p.name.startswith("Portkey")), None)
    litellm = next((p for p in paths if p.name.startswith("LiteLLM")), None)
    rows: list[tuple[str, str, str]] = []

    def met(ok: bool | None) -> str:
        return "n/a" if ok is None else ("yes" if ok else "NO")

    if portkey is not None and portkey.rps:
        rows.append(
            (
                "req/s at c=32 >= Portkey's",
                f"{gw.rps:.0f} vs {portkey.rps:.0f} ({gw.rps / portkey.rps:.2f}x)",
                met(gw.rps >= portkey.rps),
            )
        )
    else:
        rows.append(("req/s at c=32 >= Portkey's", "Portkey not run", "n/a"))
    if litellm is not None and litellm.rps:
        ratio = gw.rps / litellm.rps
        rows.append(
            (
                ">= 10x LiteLLM's req/s at c=32",
                f"{gw.rps:.0f} vs {litellm.rps:.0f} ({ratio:.1f}x)",
                met(ratio >= 10),
            )
        )
    else:
        rows.append((">= 10x LiteLLM's req/s at c=32", "LiteLLM not run", "n/a"))
    added50, added99 = gw.p50 - direct.p50, gw.p99 - direct.p99
    rows.append(("added p50 at c=1 <= 1.0 ms", f"{added50:.2f} ms", met(added50 <= 1.0)))
    rows.append(("added p99 at c=1 <= 4 ms", f"{added99:.2f} ms", met(added99 <= 4.0)))
    if gw.ttft50 is not None and direct.ttft50 is not None:
        added_ttft = gw.ttft50 - direct.ttft50
        rows.append(("added TTFT p50 <= 1.0 ms", f"{added_ttft:.2f} ms", met(added_ttft <= 1.0)))
    else:
        rows.append(("added TTFT p50 <= 1.0 ms", "not measured", "n/a"))
    if portkey is not None and portkey.machine_ms is not None and gw.machine_ms is not None:
        rows.append(
            (
                "machine CPU per governed request <= Portkey's + 0.5 ms",
                f"{gw.machine_ms:.2f} vs {portkey.machine_ms:.2f} + 0.5 ms (every process of the path + upstream: "
                f"{gw.cpu_all_ms or 0.0:.2f} vs {portkey.cpu_all_ms or 0.0:.2f})",
                met(gw.machine_ms <= portkey.machine_ms + 0.5),
            )
        )
    else:
        rows.append(("machine CPU per governed request <= Portkey's + 0.5 ms", "Portkey not run", "n/a"))
    services = {k: v for k, v in idle_rss.items() if k not in INFRA}
    over = ", ".join(f"{k} {v:.0f}" for k, v in services.items() if v >= 120)
    top = max(services, key=lambda k: services[k])
    rows.append(
        (
            "every service idle < 120 MB RSS",
            f"largest {top} {services[top]:.0f} MB" + (f"; at or over 120: {over}" if over else ""),
            met(not over),
        )
    )
    if memory is not None:
        rounds: list[dict[str, Any]] = memory["rounds"]  # type: ignore[assignment]
        growths = [{k: v for k, v in r["growth"].items() if k not in INFRA} for r in rounds]
        worst = max(growths[-1], key=lambda k: growths[-1][k])
        per_round = ", ".join(f"{g.get(worst, 0.0):+.1f}" for g in growths)
        label = "round" if len(rounds) == 1 else f"rounds, the last judged: {per_round} MB"
        rows.append(
            (
                f"no RSS growth over {memory['requests']} requests (<= 5 MB each)",
                f"largest {worst} {growths[-1][worst]:+.1f} MB ({len(rounds)} {label})",
                met(growths[-1][worst] <= 5.0),
            )
        )
    else:
        rows.append(("no RSS growth over 100k requests", "not run (--memory-requests N)", "n/a"))
    for name, script in (("settlement", "bench/settlement.py"), ("analytics", "bench/analytics.py")):
        value = None if events is None else events.get(name)
        if value is None:
            where = "not run (--event-benches)" if events is None else "no figure"
            rows.append((f"{name} >= 5,000 events/s", f"{where}; see {script}", "n/a"))
        else:
            rows.append(
                (f"{name} >= 5,000 events/s", f"{value:,.0f} events/s ({script})", met(value >= 5000))
            )
    return rows


def print_targets(rows: list[tuple[str, str, str]]) -> None:
    w0, w1 = max(len(r[0]) for r in rows), max(len(r[1]) for r in rows)
    print(f"\n{'target':{w0}} | {'measured':{w1}} | met?")
    print(f"{'-' * w0}-|-{'-' * w1}-|-----")
    for target, measured, ok in rows:
        print(f"{target:{w0}} | {measured:{w1}} | {ok}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--sequential", type=int, default=500)
    parser.add_argument("--runs", type=int, default=3, help="figures are medians over this many runs")
    parser.add_argument("--no-litellm", action="store_true", help="skip the LiteLLM proxy")
    parser.add_argument("--no-portkey", action="store_true", help="skip the Portkey gateway")
    parser.add_argument(
        "--no-install", action="store_true", help="do not install LiteLLM or Portkey if missing"
    )
    parser.add_argument(
        "--trace",
        choices=("off", "on", "default", "no-client-spans"),
        default="off",
        help="export every trace to a fake OTLP collector, with or without the Redis/PostgreSQL/HTTP spans",
    )
    parser.add_argument("--no-twin", action="store_true", help="skip the gateway without the release")
    parser.add_argument(
        "--memory-requests",
        type=int,
        default=0,
        help="after the runs, send this many requests (issue 14: 100000) through the governed gateway and print "
        "every service's RSS before and after (default 0: off)",
    )
    parser.add_argument(
        "--memory-rounds",
        type=int,
        default=1,
        help="repeat the memory check this many times on the same stack (the last round is judged)",
    )
    parser.add_argument(
        "--event-benches",
        action="store_true",
        help="afterwards run bench/settlement.py and bench/analytics.py for the events/s targets",
    )
    parser.add_argument("--json", type=Path, help="also write every figure here")
    args = parser.parse_args()
    collector: FakeCollector | None = None
    extra_env: dict[str, str] = {}
    if args.trace != "off":
        collector, collector_url = start_collector()
        extra_env = trace_env(args.trace, collector_url)
        print(
            f"tracing: every trace exported to {collector_url}, client spans {extra_env['LT_TRACE_CLIENT_SPANS']}"
        )

    run_dir = Path(tempfile.mkdtemp(prefix="lt-bench-"))
    up_port = free_port()
    upstream_url = f"http://127.0.0.1:{up_port}"
    upstream = start_upstream(up_port)
    args.upstream_pid = upstream.pid
    litellm: subprocess.Popen[bytes] | None = None
    portkey: subprocess.Popen[bytes] | None = None
    twin: subprocess.Popen[bytes] | None = None
    stack_pids: dict[str, int] = {}
    paths: list[BenchPath] = []
    idle_rss: dict[str, float] = {}
    memory: dict[str, object] | None = None
    loads: list[tuple[float, float, float]] = [os.getloadavg()]
    try:
        gateway, admin_key, stack_pids = start_stack(run_dir, upstream_url, extra_env)
        wait_quiet(stack_pids, deadline_s=15, quiet_s=IDLE_S)
        idle_rss = {k: rss_mb(v) for k, v in stack_pids.items()}
        user_key = asyncio.run(create_bench_user(gateway, admin_key))
        hot = ("gateway", "quota", "redis", "broker")
        paths = [
            BenchPath("direct mock upstream", f"{upstream_url}/v1/chat/completions", {}),
            BenchPath(
                GATEWAY,
                f"{gateway}/v1/chat/completions",
                {"Authorization": f"Bearer {user_key}"},
                pids={k: v for k, v in stack_pids.items() if k in hot},
                # Settlement, aggregation, PostgreSQL and the rest run off the request path; shown separately.
                off_path={k: v for k, v in stack_pids.items() if k not in hot},
            ),
        ]
        script = None if args.no_portkey else ensure_portkey(not args.no_install)
        if args.no_portkey:
            print("Portkey gateway skipped (--no-portkey)")
        if script is not None:
            portkey, url = start_portkey(script, run_dir)
            idle_rss_peer = rss_mb(portkey.pid)
            paths.append(portkey_path(url, upstream_url, portkey.pid))
            print(f"Portkey gateway idle RSS {idle_rss_peer:.0f} MB")
        exe = None if args.no_litellm else ensure_litellm(not args.no_install)
        if args.no_litellm:
            print("LiteLLM proxy skipped (--no-litellm)")
        if exe is not None:
            litellm, url, key = start_litellm(exe, upstream_url, run_dir)
            paths.append(
                BenchPath(
                    f"LiteLLM proxy {LITELLM_VERSION} (gov. off)",
                    f"{url}/v1/chat/completions",
                    {"Authorization": f"Bearer {key}"},
                    pids={"litellm": litellm.pid},
                )
            )
        if not args.no_twin:
            twin, twin_url = start_twin_gateway(run_dir, stack_pids["gateway"])
            paths.append(
                BenchPath(
                    NO_RELEASE,
                    f"{twin_url}/v1/chat/completions",
                    {"Authorization": f"Bearer {user_key}"},
                    pids={"gateway-twin": twin.pid, **{k: v for k, v in stack_pids.items() if k in hot[1:]}},
                    off_path={k: v for k, v in stack_pids.items() if k not in hot},
                )
            )
        # Runs interleave the paths so machine noise falls on all of them alike.
        for i in range(args.runs):
            for path in paths:
                print(f"run {i + 1}/{args.runs}: measuring {path.name} ...", flush=True)
                run_path(path, args)
            loads.append(os.getloadavg())
        for path in paths:
            path.summarise()
        report(paths, args, stack_pids)
        if collector is not None:
            print(f"spans received by the collector: {len(collector.spans)}")
        print(
            "idle RSS (MB) after start-up, services (target < 120 each): "
            + ", ".join(f"{k} {v:.0f}" for k, v in idle_rss.items() if k not in INFRA)
            + "; infrastructure: "
            + ", ".join(f"{k} {v:.0f}" for k, v in idle_rss.items() if k in INFRA)
        )
        if args.memory_requests > 0:
            rounds = [memory_check(paths[1], stack_pids, args) for _ in range(args.memory_rounds)]
            memory = {**rounds[-1], "rounds": rounds}
            loads.append(os.getloadavg())
    finally:
        if twin is not None:
            stop_pid(twin.pid, popen=twin)
        for peer in (litellm, portkey):
            if peer is not None:
                for child in psutil.Process(peer.pid).children(recursive=True):
                    child.terminate()
                stop_pid(peer.pid, popen=peer)
        stop_pid(upstream.pid, popen=upstream)
        stop_stack(run_dir)
    if len(paths) < 2 or not paths[1].runs:
        sys.exit("no run completed; nothing to report")
    events = event_benches() if args.event_benches else None
    rows = targets(paths, idle_rss, memory, events)
    print_targets(rows)
    print(f"load average (1, 5, 15 min) at start, after each run and after the memory check: {loads}")
    if args.json is not None:
        figures = {
            "trace": args.trace,
            "args": {k: v for k, v in vars(args).items() if k != "json"},
            "paths": {
                p.name: {
                    "p50": p.p50,
                    "p99": p.p99,
                    "ttft50": p.ttft50,
                    "rps": p.rps,
                    "cpu_ms": p.cpu_ms,
                    "cpu_all_ms": p.cpu_all_ms,
                    "machine_ms": p.machine_ms,
                    "breakdown": p.breakdown,
                    "errors": p.errors,
                    "stream_errors": p.stream_errors,
                    "runs": p.runs,
                }
                for p in paths
            },
            "idle_rss_mb": idle_rss,
            "memory": memory,
            "events": events,
            "targets": [{"target": t, "measured": m, "met": ok} for t, m, ok in rows],
            # Kept for bench/client_spans.py: the governed gateway's figures at the top level.
            "cpu_ms": paths[1].cpu_ms,
            "breakdown": paths[1].breakdown,
            "p50": paths[1].p50,
            "p99": paths[1].p99,
            "rps": paths[1].rps,
            "direct_p50": paths[0].p50,
            "spans": len(collector.spans) if collector is not None else 0,
            "load": loads,
        }
        args.json.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
