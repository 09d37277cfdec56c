"""Chaos for the local stack: kill and restart any of its processes, and broker outages through a proxy.

    python deploy/local/stack.py kill NAME [--signal KILL|TERM]
    python deploy/local/stack.py restart NAME
    python deploy/local/stack.py outage broker --seconds N [--mode drop|hang|delay] [--delay-ms MS]

NAME is any process `up` started: gateway, quota, saga, analytics, analytics-worker, notifier, fakepay,
redis, postgres (and broker, broker-proxy). `kill` sends the signal to the process's whole process group
(each was started in its own session) and records how it was started (command, environment, working
directory, read from /proc; the record is mode 0600 in `<run-dir>/chaos/`, as it holds the internal signing key);
`restart` starts it again the same way on the same port, killing it first if it still runs, and updates
`stack.json` so `down` stops the new PID.

What survives a restart: PostgreSQL keeps its data directory (`<run-dir>/pgdata`) and, as the stack runs it
with `synchronous_commit=on`, every commit it acknowledged. Redis runs memory-only
(`--save ""`, no AOF), so a restarted Redis is EMPTY: every counter, reservation and bucket is gone, which is
itself a chaos case. The tansu broker is memory-only too, and a restarted broker has no topics or offsets;
that is why broker outages are made by the proxy in front of it instead: the broker advertises the proxy's
port, so every client connects through it, and `outage` resets or holds those connections for N seconds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from leaky_devinfra.infra import (
    Server,
    free_port,
    pid_alive,
    start_broker,
    start_postgres,
    start_redis,
    wait_for_port,
)
from leaky_devinfra.proxy import send_fault

__all__ = ["kill", "outage", "restart", "start_proxied_broker"]

# Restarted by their launchers on the same port (Redis rewrites its command line, PostgreSQL runs as its own
# user when the stack runs as root), not from the record of how they were started.
_LAUNCHED = ("postgres", "redis")
SIGNALS = {"KILL": signal.SIGKILL, "TERM": signal.SIGTERM, "INT": signal.SIGINT}


def start_proxied_broker(run_dir: Path, logs: Path) -> tuple[Server, int]:
    """The tansu broker behind a fault-injecting proxy; the Server's url is the proxy's (what clients use).
    Returns the broker and the proxy's PID."""
    proxy_port = free_port()
    broker = start_broker(log_path=logs / "broker.log", advertised_port=proxy_port)
    control = run_dir / "broker-proxy.sock"
    with (logs / "broker-proxy.log").open("ab") as log:
        proxy = subprocess.Popen(
            [os.environ.get("LT_PYTHON", _python()), "-m", "leaky_devinfra.proxy", "--listen-port",
             str(proxy_port), "--target", f"127.0.0.1:{broker.port}", "--control", str(control)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
    wait_for_port(proxy_port, popen=proxy)
    return broker, proxy.pid


def _python() -> str:
    import sys

    return sys.executable


def _state(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "stack.json"
    if not path.exists():
        raise SystemExit(f"no stack runs from {run_dir} (stack.json missing)")
    state: dict[str, Any] = json.loads(path.read_text())
    return state


def _save_pid(run_dir: Path, name: str, pid: int) -> None:
    state = _state(run_dir)
    state["pids"][name] = pid
    (run_dir / "stack.json").write_text(json.dumps(state, indent=2))


def _pid_of(state: dict[str, Any], name: str) -> int:
    pids: dict[str, int] = state["pids"]
    if name not in pids:
        raise SystemExit(f"{name!r} is not a process of this stack; it has: {', '.join(pids)}")
    return int(pids[name])


def _record(run_dir: Path, name: str, pid: int) -> dict[str, Any]:
    """How `pid` was started, kept to start it again the same way."""
    proc = Path(f"/proc/{pid}")
    argv = [a.decode() for a in (proc / "cmdline").read_bytes().split(b"\0") if a]
    env = dict(
        line.decode().split("=", 1) for line in (proc / "environ").read_bytes().split(b"\0") if b"=" in line
    )
    spec = {"argv": argv, "env": env, "cwd": os.readlink(proc / "cwd")}
    folder = run_dir / "chaos"
    folder.mkdir(mode=0o700, exist_ok=True)
    path = folder / f"{name}.json"
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_text(json.dumps(spec))
    return spec


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        # Every stack process leads its own session: signalling the group reaches its children too
        # (PostgreSQL's backends), and nothing else.
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass


def kill(run_dir: Path, name: str, sig_name: str = "KILL", timeout: float = 15.0) -> int:
    """Kill one process of the stack (and its process group); returns its PID."""
    state = _state(run_dir)
    pid = _pid_of(state, name)
    if not pid_alive(pid):
        return pid
    if name not in _LAUNCHED:
        _record(run_dir, name, pid)
    _signal_group(pid, SIGNALS[sig_name])
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() > deadline:
            _signal_group(pid, signal.SIGKILL)
        time.sleep(0.02)
    if name == "postgres":  # its backends leave the group with it; wait until the port is free again
        _wait_port_free(_port_of(str(state["postgres"])), timeout)
    return pid


def _port_of(url: str) -> int:
    port = urlsplit(url).port
    if port is None:
        raise SystemExit(f"no port in {url}")
    return port


def _wait_port_free(port: int, timeout: float) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) != 0:
                return
        time.sleep(0.05)


def restart(run_dir: Path, name: str) -> int:
    """Start one process of the stack again as it was started (killing it first if it runs); its new PID."""
    state = _state(run_dir)
    pid = _pid_of(state, name)
    if pid_alive(pid):
        kill(run_dir, name)
    logs = run_dir / "logs"
    if name == "postgres":
        server = start_postgres(
            run_dir / "pgdata",
            port=_port_of(str(state["postgres"])),
            log_path=logs / "postgres.log",
            crash_safe=True,
        )
        new_pid = server.pid
    elif name == "redis":
        new_pid = start_redis(port=_port_of(str(state["redis"])), log_path=logs / "redis.log").pid
    else:
        path = run_dir / "chaos" / f"{name}.json"
        if not path.exists():
            raise SystemExit(f"{name} was not killed through `stack.py kill`: no record of how to start it")
        spec = json.loads(path.read_text())
        with (logs / f"{name}.log").open("ab") as log:
            proc = subprocess.Popen(
                spec["argv"], env=spec["env"], cwd=spec["cwd"], stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        new_pid = proc.pid
    _save_pid(run_dir, name, new_pid)
    return new_pid


def outage(
    run_dir: Path, name: str, seconds: float, mode: str = "drop", delay_ms: float = 0
) -> dict[str, Any]:
    """Make the broker unreachable (drop/hang) or slow (delay) for `seconds`, through its proxy."""
    if name != "broker":
        raise SystemExit("outages through a proxy exist for the broker only; kill and restart the others")
    control = run_dir / "broker-proxy.sock"
    if not control.exists():
        raise SystemExit("this stack's broker has no proxy (external broker?)")
    return send_fault(control, mode, seconds, delay_ms / 1000)
