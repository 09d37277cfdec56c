"""Hot-path benchmark: direct vs the governed gateway vs the LiteLLM proxy, against ONE mock upstream.

    python bench/hotpath.py [--requests 2000] [--concurrency 32] [--sequential 500] [--no-litellm]
                            [--trace off|on|no-client-spans] [--no-twin] [--json PATH]

Starts one mock OpenAI upstream process (bench/mock_upstream.py), then:
- direct: the client calls the upstream;
- gateway: its own stack on free ports (buckets raised so the run measures governance rather than 429s),
  model `bench-gpt` routed to the upstream as an OpenAI-compatible provider. Governance is fully on: auth,
  leaky buckets, reservation, pricing, usage event and its settlement;
- litellm: LiteLLM proxy 1.106.2 (1 worker, master key, no database: governance off), installed on demand
  into .run/litellm-venv (never into the workspace); skipped with a message if it cannot be installed;
- gateway, no release before the end: a second gateway process of the same stack started with
  LT_RELEASE_BEFORE_END=false (the unused part of a reservation is freed only by the usage event), so the
  difference between the two gateways is what releasing before the last bytes costs.

- `--trace on`: the stack exports every trace (`LT_TRACE_SAMPLE_RATIO=1.0`) over OTLP/HTTP to an in-process fake
  collector (leaky_devinfra.fakes.otlp, in a thread of this script, so its CPU is not the stack's), with the
  Redis, PostgreSQL and HTTP client spans in every trace (`LT_TRACE_CLIENT_SPAN_RATIO=1.0`); `--trace default`
  the same with the default client span ratio; `--trace no-client-spans` with `LT_TRACE_CLIENT_SPANS=false`. `bench/client_spans.py` alternates the two and compares the CPU.

Figures are medians of `--runs` interleaved runs. Prints for each path: p50/p99 latency at concurrency 1 (non-streamed) and the added latency vs direct,
streamed time-to-first-token p50, req/s at the given concurrency, CPU milliseconds per request summed over
the path's own processes (gateway: gateway, quota, Redis, broker; litellm: its proxy), and RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
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

import aiohttp
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "deploy" / "local"))

from leaky_devinfra.fakes.otlp import FakeCollector  # noqa: E402
from leaky_devinfra.infra import free_port, stop_pid, wait_for_port  # noqa: E402

LITELLM_VERSION = "1.106.2"
LITELLM_VENV = ROOT / ".run" / "litellm-venv"
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
    ttft50: float = 0.0
    rps: float = 0.0
    cpu_ms: float | None = None
    breakdown: dict[str, float] = field(default_factory=dict)
    errors: int = 0
    # First few non-200 answers (status and body head), so a broken run says why.
    error_samples: dict[int, str] = field(default_factory=dict)
    runs: list[dict[str, float]] = field(default_factory=list)

    def summarise(self) -> None:
        """Each figure is the median over the runs (the machine is noisy; TARGETS.md asks for medians)."""
        for name in ("p50", "p99", "ttft50", "rps", "cpu_ms"):
            values = [r[name] for r in self.runs if name in r]
            if values:
                setattr(self, name, statistics.median(values))
        keys = {k for r in self.runs for k in r if k.startswith("cpu:")}
        self.breakdown = {k[4:]: statistics.median(r[k] for r in self.runs) for k in sorted(keys)}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
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
                    if stream:
                        first = None
                        async for line in resp.content:
                            if first is None and b'"content":"' in line and b'"content":""' not in line:
                                first = time.perf_counter() - t0
                        latencies.append(first if first is not None else time.perf_counter() - t0)
                    else:
                        payload = await resp.read()
                        latencies.append(time.perf_counter() - t0)
                        if resp.status != 200:
                            path.error_samples.setdefault(resp.status, payload[:300].decode(errors="replace"))
                    if resp.status != 200:
                        path.errors += 1

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


def rss_mb(pid: int) -> float:
    try:
        proc = psutil.Process(pid)
        return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)]) / 1e6
    except psutil.NoSuchProcess:
        return 0.0


def run_path(path: BenchPath, args: argparse.Namespace) -> None:
    """One run of every measurement on `path`, appended to `path.runs`."""
    run: dict[str, float] = {}
    asyncio.run(measure(path, 200, 8))  # warm-up
    seq, _ = asyncio.run(measure(path, args.sequential, 1))
    run["p50"], run["p99"] = percentile(seq, 0.5) * 1000, percentile(seq, 0.99) * 1000
    ttft, _ = asyncio.run(measure(path, max(args.sequential // 2, 50), 1, stream=True))
    run["ttft50"] = percentile(ttft, 0.5) * 1000
    watched = {**path.pids, **path.off_path}
    cpu0 = cpu_seconds(watched)
    _, run["rps"] = asyncio.run(measure(path, args.requests, args.concurrency))
    cpu1 = cpu_seconds(watched)
    if path.pids:
        run["cpu_ms"] = sum(cpu1[k] - cpu0[k] for k in path.pids) * 1000 / args.requests
        run.update({f"cpu:{k}": (cpu1[k] - cpu0[k]) * 1000 / args.requests for k in watched})
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


def start_twin_gateway(run_dir: Path, gateway_pid: int) -> tuple[subprocess.Popen[bytes], str]:
    """A second gateway of the same stack (same quota, broker and models), as the first was started but on
    its own port and spool, without the release before the end."""
    proc = psutil.Process(gateway_pid)
    port = free_port()
    env = {
        **proc.environ(),
        "LT_PORT": str(port),
        "LT_RELEASE_BEFORE_END": "false",
        "LT_USAGE_SPOOL_PATH": str(run_dir / "twin-gateway-spool.sqlite"),
    }
    log = (run_dir / "logs" / "gateway-twin.log").open("ab")
    twin = subprocess.Popen(proc.cmdline(), env=env, cwd=proc.cwd(), stdout=log, stderr=subprocess.STDOUT)
    wait_for_port(port, timeout=60, popen=twin)
    return twin, f"http://127.0.0.1:{port}"


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


def report(paths: list[BenchPath], args: argparse.Namespace, stack_pids: dict[str, int]) -> None:
    direct = paths[0]
    c = args.concurrency
    print(f"\nmedians of {args.runs} runs; {args.sequential} sequential requests, {args.requests} at c={c}")
    print(
        f"{'path':34} {'p50 c=1':>9} {'p99 c=1':>9} {'+p50':>8} {'+p99':>8} {'TTFT p50':>9} "
        f"{'req/s c=' + str(c):>11} {'CPU ms/req':>11} {'RSS MB':>8}"
    )
    for p in paths:
        added50 = f"{p.p50 - direct.p50:7.2f}" if p is not direct else f"{'-':>7}"
        added99 = f"{p.p99 - direct.p99:7.2f}" if p is not direct else f"{'-':>7}"
        cpu = f"{p.cpu_ms:11.2f}" if p.cpu_ms is not None else f"{'-':>11}"
        rss = f"{sum(rss_mb(pid) for pid in p.pids.values()):8.0f}" if p.pids else f"{'-':>8}"
        print(
            f"{p.name:34} {p.p50:7.2f}ms {p.p99:7.2f}ms {added50}ms {added99}ms {p.ttft50:7.2f}ms "
            f"{p.rps:11.0f} {cpu} {rss}"
        )
        if p.errors:
            print(f"  !! {p.errors} non-200 responses; the figures above are not valid")
            for status, sample in p.error_samples.items():
                print(f"     {status}: {sample}")
    for p in paths[1:]:
        if p.breakdown:
            print(
                f"{p.name} CPU ms/request by process: "
                + ", ".join(f"{k} {v:.2f}" for k, v in p.breakdown.items())
            )
    print(
        "RSS (MB) of the gateway stack: " + ", ".join(f"{k} {rss_mb(v):.0f}" for k, v in stack_pids.items())
    )
    gw = paths[1]
    print(
        f"\nvs TARGETS.md: added p50 {gw.p50 - direct.p50:.2f} ms (target <= 1.5), added p99 {gw.p99 - direct.p99:.2f} ms (target <= 5), "
        f"CPU {gw.cpu_ms or 0.0:.2f} ms/request (target <= 2)"
    )
    print(f"streamed TTFT added p50 {gw.ttft50 - direct.ttft50:.2f} ms (target <= 1.5)")
    litellm = next((p for p in paths if p.name.startswith("LiteLLM") and p.rps), None)
    if litellm is not None:
        print(f"throughput gateway / LiteLLM proxy: {gw.rps / litellm.rps:.1f}x (target >= 10x)")
    base = next((p for p in paths if p.name == NO_RELEASE), None)
    if base is not None:
        print(
            f"the release before the end costs p50 {gw.p50 - base.p50:+.2f} ms (target <= 0.2), "
            f"TTFT p50 {gw.ttft50 - base.ttft50:+.2f} ms, CPU {(gw.cpu_ms or 0.0) - (base.cpu_ms or 0.0):+.2f} ms/request"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--sequential", type=int, default=500)
    parser.add_argument("--runs", type=int, default=3, help="figures are medians over this many runs")
    parser.add_argument("--no-litellm", action="store_true", help="skip the LiteLLM proxy")
    parser.add_argument("--no-install", action="store_true", help="do not install LiteLLM if it is missing")
    parser.add_argument(
        "--trace",
        choices=("off", "on", "default", "no-client-spans"),
        default="off",
        help="export every trace to a fake OTLP collector, with or without the Redis/PostgreSQL/HTTP spans",
    )
    parser.add_argument("--no-twin", action="store_true", help="skip the gateway without the release")
    parser.add_argument("--json", type=Path, help="also write the governed gateway's figures here")
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
    litellm: subprocess.Popen[bytes] | None = None
    twin: subprocess.Popen[bytes] | None = None
    stack_pids: dict[str, int] = {}
    try:
        gateway, admin_key, stack_pids = start_stack(run_dir, upstream_url, extra_env)
        idle_rss = {k: rss_mb(v) for k, v in stack_pids.items()}
        user_key = asyncio.run(create_bench_user(gateway, admin_key))
        paths = [
            BenchPath("direct mock upstream", f"{upstream_url}/v1/chat/completions", {}),
            BenchPath(
                "gateway (governance on)",
                f"{gateway}/v1/chat/completions",
                {"Authorization": f"Bearer {user_key}"},
                pids={k: v for k, v in stack_pids.items() if k in ("gateway", "quota", "redis", "broker")},
                # Settlement and aggregation run off the request path; shown separately.
                off_path={k: v for k, v in stack_pids.items() if k in ("postgres", "analytics-worker")},
            ),
        ]
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
                    pids={
                        "gateway-twin": twin.pid,
                        **{k: v for k, v in stack_pids.items() if k in ("quota", "redis", "broker")},
                    },
                )
            )
        # Runs interleave the paths so machine noise falls on all of them alike.
        for i in range(args.runs):
            for path in paths:
                print(f"run {i + 1}/{args.runs}: measuring {path.name} ...", flush=True)
                run_path(path, args)
        for path in paths:
            path.summarise()
        report(paths, args, stack_pids)
        gw = paths[1]
        if collector is not None:
            print(f"spans received by the collector: {len(collector.spans)}")
        if args.json is not None:
            figures = {
                "trace": args.trace,
                "cpu_ms": gw.cpu_ms,
                "breakdown": gw.breakdown,
                "p50": gw.p50,
                "p99": gw.p99,
                "rps": gw.rps,
                "direct_p50": paths[0].p50,
                "spans": len(collector.spans) if collector is not None else 0,
                "load": os.getloadavg(),
            }
            args.json.write_text(json.dumps(figures))
        print(
            "idle RSS (MB) after start-up (target < 120 each): "
            + ", ".join(f"{k} {v:.0f}" for k, v in idle_rss.items())
        )
    finally:
        if twin is not None:
            stop_pid(twin.pid, popen=twin)
        if litellm is not None:
            for child in psutil.Process(litellm.pid).children(recursive=True):
                child.terminate()
            stop_pid(litellm.pid, popen=litellm)
        stop_pid(upstream.pid, popen=upstream)
        subprocess.run(
            [sys.executable, str(ROOT / "deploy/local/stack.py"), "down", "--run-dir", str(run_dir)],
            check=False,
        )


if __name__ == "__main__":
    main()
