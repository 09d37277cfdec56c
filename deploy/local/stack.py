"""Run the whole Leaky Tokens stack on one machine without Docker.

    python deploy/local/stack.py up   [--run-dir .run] [--ports default|auto] [--replicas N]
    python deploy/local/stack.py down [--run-dir .run]
    python deploy/local/stack.py status [--run-dir .run]
    python deploy/local/stack.py unfreeze-admin [--run-dir .run]
    python deploy/local/stack.py observe [--run-dir .run] [--scrape-interval 15s]
    python deploy/local/stack.py kill|restart NAME [--run-dir .run] [--signal KILL|TERM]
    python deploy/local/stack.py outage broker --seconds N [--mode drop|hang|delay] [--delay-ms MS]

`up` starts the broker (tansu), PostgreSQL and Redis from pip-installed packages (or uses
LT_EXTERNAL_KAFKA_BOOTSTRAP / LT_EXTERNAL_POSTGRES_URL / LT_EXTERNAL_REDIS_URL), creates each service's
database, starts every service, waits until all are ready and the gateway's deep probe passes (gateway ->
quota -> provider, recording nothing: startup_check.py), then writes
`<run-dir>/stack.env` with LT_GATEWAY_URL and LT_ADMIN_KEY. Logs go to `<run-dir>/logs/`. `down` stops
exactly the processes `up` started, by PID. The services reach the broker through a proxy that `outage`
can make drop, hold or delay traffic; `kill` and `restart` are chaos for one process (see stack_chaos.py).
`unfreeze-admin` is the operator's break-glass: it lifts every freeze on the bootstrap admin, which the admin's
own frozen key may not do (`up` prints it when it finds one; startup_check.py). `observe` starts a Prometheus
scraping every process with the rules of deploy/prometheus/ (stack_observe.py); `down` stops it too.

`--replicas N` (default 1) runs N instances of every service process: gateway, quota, saga, analytics and
notifier share their service's port (SO_REUSEPORT, `LT_REUSE_PORT`: the kernel spreads connections across
the instances), analytics workers and every Kafka consumer join the same consumer groups (they share the
partitions), each outbox relay is elected among the instances. Instance 1 keeps the plain name (`gateway`),
the others are `gateway-2`, `gateway-3`...; each has its own log, and the gateway its own crash journal and
usage spool, the worker its own faust data directory and /metrics port. The console (sessions in memory) and
the fake payment provider stay single.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from stack_chaos import kill, outage, restart, start_proxied_broker
from stack_observe import observe
from stack_secrets import ensure_secrets, write_private
from startup_check import admin_freeze_notices, lift_admin_freezes, wait_for_probe

from leaky_common.auth import AssertionSigner, generate_signing_key, public_key_of
from leaky_common.db import create_database, database_url_for
from leaky_devinfra.infra import (
    free_port,
    pid_alive,
    start_broker,
    start_postgres,
    start_redis,
    stop_pid,
)

ROOT = Path(__file__).resolve().parents[2]
DATABASES = {"quota": "lt_quota", "saga": "lt_saga", "analytics": "lt_analytics", "notifier": "lt_notifier"}
# Run N times with `--replicas N`; the console keeps its sessions in memory and fakepay is a third party's fake.
REPLICATED = ("quota", "saga", "analytics", "analytics-worker", "notifier", "gateway")
DEFAULT_PORTS = {
    "gateway": 8080,
    "quota": 8082,
    "quota-link": 8092,  # quota's internal link (LT_LINK_PORT): the gateway's admissions and releases
    "analytics": 8083,
    "saga": 8084,
    "notifier": 8085,
    "fakepay": 8086,
    "analytics-worker": 8087,  # its /metrics (LT_WORKER_METRICS_PORT)
    "console": 8088,  # the web console, served on the gateway's address at /console/
}


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _choose_ports(mode: str) -> dict[str, int]:
    ports: dict[str, int] = {}
    for name, default in DEFAULT_PORTS.items():
        env = os.environ.get(f"LT_{name.upper().replace('-', '_')}_PORT")
        if env:
            ports[name] = int(env)
        elif mode == "default" and _port_free(default):
            ports[name] = default
        else:
            ports[name] = free_port()
    return ports


def _log(msg: str) -> None:
    sys.stdout.write(f"[stack] {msg}\n")
    sys.stdout.flush()


def _http_ok(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - local URL we built
            return 200 <= resp.status < 300
    except (urllib.error.URLError, OSError):
        return False


def _wait_http(url: str, deadline: float, procs: dict[str, subprocess.Popen[bytes]], name: str) -> None:
    while not _http_ok(url):
        for other, proc in procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{other} exited with {proc.returncode}; see its log")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{name} not ready at {url}")
        time.sleep(0.1)


def _channel_keys(run_dir: Path) -> str:
    """The key sealing the notifier's channel secrets: made at the first `up` (owner-only), kept after."""
    path = run_dir / "channel_secret_keys"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("local1:" + base64.b64encode(secrets.token_bytes(32)).decode())
    return path.read_text().strip()


def _read_state(run_dir: Path) -> dict[str, object] | None:
    path = run_dir / "stack.json"
    if not path.exists():
        return None
    state: dict[str, object] = json.loads(path.read_text())
    return state


def _alive_pids(state: dict[str, object]) -> list[int]:
    pids = state.get("pids", {})
    assert isinstance(pids, dict)
    return [int(p) for p in pids.values() if pid_alive(int(p))]


def _secret_file(path: Path, make: Callable[[], str]) -> str:
    """The secret in `path`, created 0600 (before anything is written to it) if missing."""
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(make())
    return path.read_text().strip()


def _internal_identity(run_dir: Path) -> dict[str, str]:
    """The gateway's Ed25519 signing key (kid `dev-1`), the public keys every service accepts, and the
    scraper's /metrics token; generated into `run_dir` (0600) at the first start and kept. (Alertmanager's
    token for the notifier, `alertmanager_token`, goes to the notifier only: see `up`.)"""
    private = _secret_file(run_dir / "internal_signing_key", lambda: generate_signing_key()[0])
    metrics = _secret_file(run_dir / "metrics_token", lambda: secrets.token_urlsafe(32))
    return {
        "LT_INTERNAL_SIGNING_KEY": private,
        "LT_INTERNAL_SIGNING_KID": "dev-1",
        "LT_INTERNAL_PUBLIC_KEYS": json.dumps({"dev-1": public_key_of(private)}),
        "LT_METRICS_TOKEN": metrics,
    }


def _sign_in_identity(run_dir: Path) -> dict[str, str]:
    """Quota's key for signing access tokens (only quota holds it), generated into `run_dir` (0600) at the
    first start and kept; its kid is derived from the public key, so a new key gets a new kid."""
    private = _secret_file(run_dir / "auth_signing_key", lambda: generate_signing_key()[0])
    kid = "a-" + hashlib.sha256(public_key_of(private).encode()).hexdigest()[:12]
    return {"LT_AUTH_SIGNING_KEY": private, "LT_AUTH_SIGNING_KID": kid}


def instance_name(name: str, index: int) -> str:
    """The name of instance `index` (1-based) of process `name`: the first keeps the plain name."""
    return name if index == 1 else f"{name}-{index}"


def _per_instance(name: str, index: int, env: dict[str, str], run_dir: Path) -> dict[str, str]:
    """`env` for instance `index` of `name`: its own crash journal, spool, faust data and metrics port."""
    me = instance_name(name, index)
    out = dict(env)
    if name == "gateway":
        out["LT_USAGE_SPOOL_PATH"] = str(run_dir / f"{me}-usage-spool.sqlite")
        out["LT_USAGE_JOURNAL_DIR"] = str(run_dir / f"{me}-journal")
    if name == "analytics-worker":
        out["LT_FAUST_DATADIR"] = str(run_dir / f"{me}-faust")
        if index > 1:
            out["LT_WORKER_METRICS_PORT"] = str(free_port())
    return out


def _listeners(port: int) -> int:
    """How many sockets listen on 127.0.0.1/0.0.0.0:`port` (/proc/net/tcp; Linux), or -1 where unknown."""
    try:
        lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return -1
    count = 0
    for line in lines:
        fields = line.split()
        local, state = fields[1], fields[3]
        if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
            count += 1
    return count


def _wait_listeners(
    port: int, n: int, deadline: float, procs: dict[str, subprocess.Popen[bytes]], name: str
) -> None:
    """Until `n` instances listen on `port` (each listens once its start-up is done)."""
    while 0 <= _listeners(port) < n:
        for other, proc in procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{other} exited with {proc.returncode}; see its log")
        if time.monotonic() > deadline:
            raise TimeoutError(f"fewer than {n} instances of {name} listen on port {port}")
        time.sleep(0.1)


def up(run_dir: Path, port_mode: str, timeout: float, replicas: int = 1) -> int:
    """Start everything; returns a process exit code."""
    started = time.monotonic()
    run_dir.mkdir(parents=True, exist_ok=True)
    logs = run_dir / "logs"
    logs.mkdir(exist_ok=True)
    state = _read_state(run_dir)
    if state is not None and _alive_pids(state):
        _log(f"the stack is already running (gateway {state.get('gateway_url')}); `make down` stops it")
        env_file = run_dir / "stack.env"
        if env_file.exists():
            sys.stdout.write(env_file.read_text())
        return 0

    pids: dict[str, int] = {}
    state: dict[str, object] = {"pids": pids, "replicas": replicas}

    def save() -> None:
        (run_dir / "stack.json").write_text(json.dumps(state, indent=2))

    try:
        kafka = os.environ.get("LT_EXTERNAL_KAFKA_BOOTSTRAP")
        flavour = os.environ.get("LT_KAFKA_FLAVOUR", "kafka" if kafka else "tansu")
        if not kafka and os.environ.get("LT_STACK_BROKER_PROXY", "true").lower() in ("0", "false", "no"):
            # No fault-injecting proxy (a deployment has none; `make bench` measures without it).
            plain = start_broker(log_path=logs / "broker.log")
            pids["broker"] = plain.pid
            kafka = plain.url
            save()
        elif not kafka:
            broker, proxy_pid = start_proxied_broker(run_dir, logs)
            pids["broker"] = broker.pid
            pids["broker-proxy"] = proxy_pid
            kafka = broker.url
            save()
        pg_server = os.environ.get("LT_EXTERNAL_POSTGRES_URL")
        if not pg_server:
            pg = start_postgres(run_dir / "pgdata", log_path=logs / "postgres.log", crash_safe=True)
            pids["postgres"] = pg.pid
            pg_server = pg.url
            save()
        redis_url = os.environ.get("LT_EXTERNAL_REDIS_URL")
        if not redis_url:
            redis = start_redis(log_path=logs / "redis.log")
            pids["redis"] = redis.pid
            redis_url = redis.url
            save()
        for db in DATABASES.values():
            asyncio.run(create_database(pg_server, db))
        _log(f"infrastructure up in {time.monotonic() - started:.1f}s (kafka {kafka}, postgres, redis)")

        secret_env = ensure_secrets(run_dir)
        admin_key = secret_env["LT_BOOTSTRAP_ADMIN_KEY"]
        identity = _internal_identity(run_dir)

        ports = _choose_ports(port_mode)
        # Quota's internal link carries the gateway's admissions and releases; LT_STACK_QUOTA_LINK=false keeps
        # them on HTTP (to compare the two: bench/ab_stacks.py).
        link = os.environ.get("LT_STACK_QUOTA_LINK", "true").lower() not in ("0", "false", "no")
        quota_link = {"LT_LINK_PORT": str(ports["quota-link"])} if link else {}
        gateway_link = {"LT_QUOTA_LINK_URL": f"tcp://127.0.0.1:{ports['quota-link']}"} if link else {}
        url = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
        common = {
            **os.environ,
            "LT_KAFKA_BOOTSTRAP": kafka,
            "LT_KAFKA_FLAVOUR": flavour,
            "LT_REDIS_URL": redis_url,
            **identity,
            "LT_ENVIRONMENT": os.environ.get("LT_ENVIRONMENT", "development"),
            "PYTHONUNBUFFERED": "1",
        }
        processes: list[tuple[str, list[str], dict[str, str]]] = [
            (
                "quota",
                ["-m", "lt_quota"],
                {
                    "LT_PORT": str(ports["quota"]),
                    **quota_link,
                    "LT_SERVICE_NAME": "quota",
                    "LT_DATABASE_URL": database_url_for(pg_server, DATABASES["quota"]),
                    "LT_BOOTSTRAP_ADMIN_KEY": admin_key,
                    **_sign_in_identity(run_dir),
                },
            ),
            (
                "fakepay",
                ["-m", "leaky_devinfra.fakes.payments"],
                {
                    "LT_PORT": str(ports["fakepay"]),
                    "LT_SERVICE_NAME": "fakepay",
                    "LT_FAKEPAY_STATE_PATH": str(run_dir / "fakepay-state.json"),
                },
            ),
            (
                "saga",
                ["-m", "lt_saga"],
                {
                    "LT_PORT": str(ports["saga"]),
                    "LT_SERVICE_NAME": "purchase-saga",
                    "LT_DATABASE_URL": database_url_for(pg_server, DATABASES["saga"]),
                    "LT_PAYMENT_PROVIDER_URL": url["fakepay"],
                },
            ),
            (
                "analytics",
                ["-m", "lt_analytics"],
                {
                    "LT_PORT": str(ports["analytics"]),
                    "LT_SERVICE_NAME": "analytics",
                    "LT_DATABASE_URL": database_url_for(pg_server, DATABASES["analytics"]),
                },
            ),
            (
                "analytics-worker",
                ["-m", "lt_analytics.worker"],
                {
                    "LT_SERVICE_NAME": "analytics-worker",
                    "LT_WORKER_METRICS_PORT": str(ports["analytics-worker"]),
                    "LT_DATABASE_URL": database_url_for(pg_server, DATABASES["analytics"]),
                },
            ),
            (
                "notifier",
                ["-m", "lt_notifier"],
                {
                    "LT_PORT": str(ports["notifier"]),
                    "LT_SERVICE_NAME": "notifier",
                    "LT_DATABASE_URL": database_url_for(pg_server, DATABASES["notifier"]),
                    "LT_CHANNEL_SECRET_KEYS": os.environ.get("LT_CHANNEL_SECRET_KEYS")
                    or _channel_keys(run_dir),
                    # What `make observe`'s Alertmanager posts alerts with (stack_observe.py).
                    "LT_ALERTMANAGER_TOKEN": _secret_file(
                        run_dir / "alertmanager_token", lambda: secrets.token_urlsafe(32)
                    ),
                },
            ),
            (
                "gateway",
                ["-m", "lt_gateway"],
                {
                    "LT_PORT": str(ports["gateway"]),
                    "LT_SERVICE_NAME": "gateway",
                    "LT_QUOTA_URL": url["quota"],
                    **gateway_link,
                    "LT_SAGA_URL": url["saga"],
                    "LT_ANALYTICS_URL": url["analytics"],
                    "LT_NOTIFIER_URL": url["notifier"],
                    "LT_CONSOLE_URL": url["console"],
                    "LT_USAGE_SPOOL_PATH": str(run_dir / "gateway-usage-spool.sqlite"),
                    "LT_USAGE_JOURNAL_DIR": str(run_dir / "gateway-journal"),
                    "LT_FINGERPRINT_SECRET": secret_env["LT_FINGERPRINT_SECRET"],
                    # Every local client shares 127.0.0.1: the per-address limits are raised for the dev stack
                    # (tests, fuzzing) unless set in the environment.
                    "LT_MANAGEMENT_RATE_PER_MIN": os.environ.get("LT_MANAGEMENT_RATE_PER_MIN", "20000"),
                    "LT_UNAUTHENTICATED_RATE_PER_MIN": os.environ.get(
                        "LT_UNAUTHENTICATED_RATE_PER_MIN", "2000"
                    ),
                },
            ),
            (
                "console",
                ["-m", "lt_console"],
                {
                    "LT_PORT": str(ports["console"]),
                    "LT_SERVICE_NAME": "console",
                    "LT_GATEWAY_URL": url["gateway"],
                },
            ),
        ]
        procs: dict[str, subprocess.Popen[bytes]] = {}
        # The analytics workers' /metrics ports (each has its own; the HTTP services share theirs).
        instance_ports: dict[str, int] = {}
        if replicas > 1:
            common["LT_REUSE_PORT"] = "true"
        for name, args, env in processes:
            for index in range(1, (replicas if name in REPLICATED else 1) + 1):
                me = instance_name(name, index)
                own = _per_instance(name, index, env, run_dir)
                if name == "analytics-worker":
                    instance_ports[me] = int(own["LT_WORKER_METRICS_PORT"])
                with (logs / f"{me}.log").open("ab") as log:
                    procs[me] = subprocess.Popen(
                        [sys.executable, *args],
                        env={**common, **own},
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL,
                        cwd=ROOT,
                        start_new_session=True,
                    )
                pids[me] = procs[me].pid
        state.update(
            {
                "ports": ports,
                "instance_ports": instance_ports,
                "gateway_url": url["gateway"],
                "kafka": kafka,
                "postgres": pg_server,
                "redis": redis_url,
            }
        )
        save()

        deadline = time.monotonic() + timeout
        for name in (
            "quota",
            "fakepay",
            "saga",
            "analytics",
            "analytics-worker",
            "notifier",
            "gateway",
            "console",
        ):
            probe = "/health" if name in ("fakepay", "analytics-worker", "console") else "/ready"
            _wait_http(f"{url[name]}{probe}", deadline, procs, name)
            if replicas > 1 and name in REPLICATED and name != "analytics-worker":
                _wait_listeners(ports[name], replicas, deadline, procs, name)
        for me, port in instance_ports.items():
            _wait_http(f"http://127.0.0.1:{port}/health", deadline, procs, me)
        prober = AssertionSigner(identity["LT_INTERNAL_SIGNING_KEY"], "dev-1", issuer="stack")
        wait_for_probe(url["gateway"], lambda: prober.headers("gateway"), deadline)
    except BaseException as exc:
        _log(f"start-up failed: {exc!r}; stopping what was started (logs in {logs})")
        down(run_dir)
        return 1

    for notice in admin_freeze_notices(url["gateway"], admin_key, run_dir):
        _log(notice)
    env_text = f"LT_GATEWAY_URL={url['gateway']}\nLT_ADMIN_KEY={admin_key}\n"
    write_private(run_dir / "stack.env", env_text)
    _log(f"stack ready in {time.monotonic() - started:.1f}s; logs in {logs}")
    sys.stdout.write(env_text)
    _log(
        f"metrics: {url['gateway']}/metrics with 'Authorization: Bearer' and the token in {run_dir / 'metrics_token'}"
        f" (each service serves /metrics); API docs: {url['gateway']}/docs; web console: {url['gateway']}/console/"
    )
    return 0


def down(run_dir: Path) -> int:
    """Stop every process `up` started, services first, infrastructure last."""
    state = _read_state(run_dir)
    if state is None:
        _log("nothing to stop")
        return 0
    pids = state.get("pids", {})
    assert isinstance(pids, dict)
    infra = ("redis", "broker-proxy", "broker", "postgres")
    order = [n for n in pids if n not in infra] + [n for n in infra if n in pids]
    for name in order:
        pid = int(pids[name])
        if not pid_alive(pid):
            continue
        if name == "postgres":
            # SIGINT is PostgreSQL's fast shutdown; SIGTERM would wait for clients.
            try:
                os.kill(pid, signal.SIGINT)
            except ProcessLookupError:
                continue
        stop_pid(pid, timeout=15)
        _log(f"stopped {name} (pid {pid})")
    (run_dir / "stack.json").unlink(missing_ok=True)
    (run_dir / "stack.env").unlink(missing_ok=True)
    return 0


def status(run_dir: Path) -> int:
    """Print which processes are alive."""
    state = _read_state(run_dir)
    if state is None:
        _log("not running")
        return 1
    pids = state.get("pids", {})
    assert isinstance(pids, dict)
    for name, pid in pids.items():
        _log(f"{name:18} pid {pid:>7}  {'running' if pid_alive(int(pid)) else 'DEAD'}")
    return 0 if _alive_pids(state) else 1


def unfreeze_admin(run_dir: Path) -> int:
    """Lift every freeze on the bootstrap admin (break-glass; startup_check.lift_admin_freezes)."""
    if _read_state(run_dir) is None:
        _log(f"not running (no stack in {run_dir})")
        return 1
    try:
        lifted = lift_admin_freezes(run_dir)
    except (OSError, ValueError, KeyError) as exc:
        _log(f"could not lift the bootstrap admin's freezes: {exc!r}")
        return 1
    for line in lifted or ["nothing of the bootstrap admin is frozen"]:
        _log(line)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "command", choices=["up", "down", "status", "unfreeze-admin", "observe", "kill", "restart", "outage"]
    )
    parser.add_argument(
        "name", nargs="?", help="kill/restart/outage: the process (gateway, quota, redis, ...)"
    )
    parser.add_argument("--signal", choices=["KILL", "TERM", "INT"], default="KILL", help="kill: the signal")
    parser.add_argument("--seconds", type=float, default=10.0, help="outage: how long")
    parser.add_argument("--mode", choices=["drop", "hang", "delay"], default="drop", help="outage: what")
    parser.add_argument("--delay-ms", type=float, default=500.0, help="outage --mode delay: per chunk")
    parser.add_argument("--run-dir", type=Path, default=ROOT / ".run")
    parser.add_argument("--scrape-interval", default="15s", help="observe: Prometheus' scrape interval")
    parser.add_argument(
        "--ports",
        choices=["default", "auto"],
        default="default",
        help="default: 8080.. when free; auto: free ports",
    )
    parser.add_argument("--timeout", type=float, default=90.0)
    parser.add_argument(
        "--replicas", type=int, default=1, help="up: instances of each service (one address each)"
    )
    args = parser.parse_args()
    run_dir = args.run_dir.resolve()
    if args.command == "up":
        if not 1 <= args.replicas <= 16:
            parser.error("--replicas must be between 1 and 16")
        return up(run_dir, args.ports, args.timeout, args.replicas)
    if args.command == "down":
        return down(run_dir)
    if args.command == "unfreeze-admin":
        return unfreeze_admin(run_dir)
    if args.command == "observe":
        try:
            urls = observe(run_dir, args.scrape_interval)
        except RuntimeError as exc:
            _log(str(exc))
            return 1
        _log(
            f"prometheus: {urls['LT_PROMETHEUS_URL']} (rules: deploy/prometheus/rules.yml; `make down` stops it)"
        )
        if "LT_ALERTMANAGER_URL" not in urls:
            _log(
                "no `alertmanager` on PATH: alerts stay in Prometheus (apt-get install prometheus-alertmanager)"
            )
        sys.stdout.write("".join(f"{key}={value}\n" for key, value in urls.items()))
        return 0
    if args.command in ("kill", "restart", "outage"):
        if not args.name:
            parser.error(f"{args.command} needs the name of a process")
        if args.command == "kill":
            _log(f"killed {args.name} (pid {kill(run_dir, args.name, args.signal)}) with SIG{args.signal}")
        elif args.command == "restart":
            _log(f"restarted {args.name} (pid {restart(run_dir, args.name)})")
        else:
            _log(f"broker proxy: {outage(run_dir, args.name, args.seconds, args.mode, args.delay_ms)}")
        return 0
    return status(run_dir)


if __name__ == "__main__":
    sys.exit(main())
