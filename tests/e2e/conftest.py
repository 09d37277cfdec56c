"""End-to-end fixtures: a running stack (the one from `make up` if LT_GATEWAY_URL is set, else a fresh one
started here on free ports and stopped afterwards), an admin HTTP client and the port local fake receivers
listen on (the only loopback address and port the stack's notifier may send to: LT_OUTBOUND_ALLOW_NETWORKS;
against a `make up` stack, start it with that allow-list and set LT_E2E_FAKES_PORT to the same port)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from leaky_devinfra.infra import free_port, pid_alive

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Stack:
    gateway_url: str
    admin_key: str
    run_dir: Path | None


def _read_env(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        key, _, value = line.partition("=")
        out[key.strip()] = value.strip()
    return out


@pytest.fixture(scope="session")
def fakes_port() -> int:
    """Where fake chat platforms and webhook receivers of the e2e tests listen (on 127.0.0.1)."""
    return int(os.environ.get("LT_E2E_FAKES_PORT") or free_port())


@pytest.fixture(scope="session")
def stack(fakes_port: int) -> Iterator[Stack]:
    url, key = os.environ.get("LT_GATEWAY_URL"), os.environ.get("LT_ADMIN_KEY")
    if url and key:
        yield Stack(url.rstrip("/"), key, None)
        return
    run_dir = Path(tempfile.mkdtemp(prefix="lt-e2e-"))
    script = ROOT / "deploy" / "local" / "stack.py"
    result = subprocess.run(
        [sys.executable, str(script), "up", "--run-dir", str(run_dir), "--ports", "auto"],
        env={**os.environ, "LT_OUTBOUND_ALLOW_NETWORKS": json.dumps([f"127.0.0.1:{fakes_port}"])},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    if result.returncode != 0:
        logs = "\n".join(
            f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted((run_dir / "logs").glob("*.log"))
        )
        subprocess.run([sys.executable, str(script), "down", "--run-dir", str(run_dir)], check=False)
        pytest.fail(f"stack did not start:\n{result.stdout}\n{result.stderr}\n{logs}")
    env = _read_env(run_dir / "stack.env")
    pids = json.loads((run_dir / "stack.json").read_text())["pids"]
    try:
        yield Stack(env["LT_GATEWAY_URL"], env["LT_ADMIN_KEY"], run_dir)
    finally:
        subprocess.run(
            [sys.executable, str(script), "down", "--run-dir", str(run_dir)], check=False, capture_output=True
        )
        left = {name: pid for name, pid in pids.items() if pid_alive(int(pid))}
        assert not left, f"`stack.py down` left processes running: {left}"


@pytest.fixture
async def admin(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=stack.gateway_url, headers={"Authorization": f"Bearer {stack.admin_key}"}, timeout=30
    ) as client:
        yield client
