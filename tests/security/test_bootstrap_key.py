"""Finding 9: changing the bootstrap admin key replaces the old one, on a whole local stack.

The stack is started, stopped, given a new admin key (the file `make up` keeps it in) and started again on the
same database: the old key gets 401 from the gateway, the new one works. Red on the old code: quota added the
new key and left the old one valid.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from leaky_devinfra.infra import pid_alive

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
STACK = ROOT / "deploy" / "local" / "stack.py"


def stack(command: str, run_dir: Path) -> None:
    args = [sys.executable, str(STACK), command, "--run-dir", str(run_dir)]
    if command == "up":
        args += ["--ports", "auto"]
    result = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=180, check=False)
    if result.returncode != 0:
        logs = "\n".join(
            f"--- {p.name}\n{p.read_text()[-2000:]}" for p in sorted((run_dir / "logs").glob("*.log"))
        )
        pytest.fail(f"stack.py {command} failed:\n{result.stdout}\n{result.stderr}\n{logs}")


@pytest.fixture
def run_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="lt-security-bootstrap-"))
    try:
        yield path
    finally:
        pids: dict[str, int] = {}
        if (path / "stack.json").exists():
            pids = json.loads((path / "stack.json").read_text())["pids"]
        subprocess.run(
            [sys.executable, str(STACK), "down", "--run-dir", str(path)], check=False, capture_output=True
        )
        left = {name: pid for name, pid in pids.items() if pid_alive(int(pid))}
        assert not left, f"`stack.py down` left processes running: {left}"


def status_with(gateway: str, key: str) -> int:
    reply = httpx.get(f"{gateway}/v1/users/me", headers={"Authorization": f"Bearer {key}"}, timeout=30)
    return reply.status_code


def gateway_url(run_dir: Path) -> str:
    env = dict(line.split("=", 1) for line in (run_dir / "stack.env").read_text().splitlines())
    return env["LT_GATEWAY_URL"]


@pytest.mark.timeout(480)  # two stack start-ups
def test_a_changed_bootstrap_admin_key_revokes_the_old_one(run_dir: Path) -> None:
    stack("up", run_dir)
    old = (run_dir / "admin_key").read_text().strip()
    assert status_with(gateway_url(run_dir), old) == 200
    stack("down", run_dir)

    new = "lt-admin-replaced-" + old[-12:][::-1]
    (run_dir / "admin_key").write_text(new)
    stack("up", run_dir)
    gateway = gateway_url(run_dir)
    assert status_with(gateway, new) == 200
    assert status_with(gateway, old) == 401
